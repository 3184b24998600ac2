"""Properties of the JSON <-> protobuf mapping: documents of the contract's shape round-trip unchanged,
and any JSON value either decodes or is refused with InvalidArgument, never another error."""

from __future__ import annotations

import datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.errors import InvalidArgument
from gateway.jsonmap import decode, encode
from gateway.jsonmap.timestamps import MAX_SECONDS, MIN_SECONDS, format_timestamp, parse_timestamp
from gateway.protos import json_pb2, order_pb2, orders_service_pb2

SETTINGS = settings(max_examples=200, deadline=None)

Json = Any
Fields = list[tuple[str, st.SearchStrategy[Json], str]]

# --- pieces of the contract's documents ----------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)
NON_NEGATIVE = st.integers(0, 2**31 - 1)
HANDLES = st.text(min_size=1, max_size=12)
TEXT = st.text(max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
# Millisecond precision, as the contract writes them.
TIMESTAMPS = st.builds(
    lambda seconds, millis: format_timestamp(seconds, millis * 1_000_000),
    st.integers(MIN_SECONDS, MAX_SECONDS),
    st.integers(0, 999),
)
POINTS = st.builds(lambda lon, lat: {"type": "Point", "coordinates": [lon, lat]}, FINITE, FINITE)
POSITIONS = st.tuples(FINITE, FINITE, FINITE, TIMESTAMPS | st.none()).map(list)
POLYLINES = st.lists(POSITIONS, max_size=3).map(lambda c: {"type": "LineString", "coordinates": c})


def enum_values(*names: str) -> st.SearchStrategy[str]:
    return st.sampled_from(names)


RISK = enum_values("green", "yellow", "red")

# JSON values as json.loads returns them, integers within 64 bits (what JsonValue keeps exactly).
JSON_VALUES: st.SearchStrategy[Json] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | FINITE | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
METADATA = st.dictionaries(TEXT, JSON_VALUES, max_size=4)

# A field is "always" written (no presence), "optional" (written only when set), "nullable" (written
# as null when unset), or "enum" (written only when not unspecified, which the strategy never draws).
ALWAYS, OPTIONAL, NULLABLE = "always", "optional", "nullable"


@st.composite
def objects(draw: st.DrawFn, fields: Fields) -> dict[str, Json]:
    """An object with the fields in the given (declaration) order, following the presence rules."""
    out: dict[str, Json] = {}
    for name, values, presence in fields:
        if presence == ALWAYS or draw(st.booleans()):
            out[name] = draw(values)
        elif presence == NULLABLE:
            out[name] = None
    return out


def event(type_name: str, fields: Fields) -> st.SearchStrategy[dict[str, Json]]:
    head: Fields = [("type", st.just(type_name), ALWAYS), ("recorded_at", TIMESTAMPS, OPTIONAL)]
    return objects(head + fields)


LOCATIONS = objects([("geometry", POINTS, OPTIONAL), ("recorded_at", TIMESTAMPS, OPTIONAL)])
ROUTE_EVENT: Fields = [
    ("order_handle", HANDLES, ALWAYS),
    ("route_handle", HANDLES, OPTIONAL),
    ("fulfillment_attempt", NON_NEGATIVE, ALWAYS),
]
EVENTS = st.one_of(
    event("order_created", [("order_handle", HANDLES, ALWAYS), ("metadata", METADATA, OPTIONAL)]),
    event(
        "order_assigned",
        [
            ("order_handle", HANDLES, ALWAYS),
            ("driver_handle", HANDLES, OPTIONAL),
            ("fulfillment_attempt", NON_NEGATIVE, ALWAYS),
        ],
    ),
    event(
        "order_started",
        [
            ("order_handle", HANDLES, ALWAYS),
            ("route_handle", HANDLES, OPTIONAL),
            ("order_type", enum_values("pick", "drop"), OPTIONAL),
            ("fulfillment_attempt", NON_NEGATIVE, ALWAYS),
        ],
    ),
    event(
        "driver_activity_started",
        [
            ("driver_handle", HANDLES, NULLABLE),
            ("activity", enum_values("stop", "walk", "drive"), ALWAYS),
            ("location", LOCATIONS, OPTIONAL),
            ("address", TEXT, OPTIONAL),
        ],
    ),
    event("order_disabled", ROUTE_EVENT),
    event(
        "driver_activity_ended",
        [
            ("driver_handle", HANDLES, NULLABLE),
            ("activity", TEXT, ALWAYS),
            ("location", LOCATIONS, OPTIONAL),
            ("distance", NON_NEGATIVE, NULLABLE),
            ("duration", NON_NEGATIVE, OPTIONAL),
            ("steps", NON_NEGATIVE, OPTIONAL),
        ],
    ),
    event("order_cancelled", ROUTE_EVENT),
    event("order_completed", ROUTE_EVENT),
)

ORDERS = objects(
    [
        ("order_handle", HANDLES, ALWAYS),
        ("fulfillment_attempt", NON_NEGATIVE, ALWAYS),
        (
            "status",
            enum_values(
                "unplanned",
                "planned",
                "assigned",
                "dispatched",
                "ongoing",
                "disabled",
                "completed",
                "cancelled",
            ),
            OPTIONAL,
        ),
        (
            "destination",
            objects(
                [("geometry", POINTS, OPTIONAL), ("address", TEXT, OPTIONAL), ("radius", INT32, OPTIONAL)]
            ),
            OPTIONAL,
        ),
        ("ops_group_handle", HANDLES, OPTIONAL),
        ("track_mode", enum_values("on_time", "flex"), OPTIONAL),
        ("plan_mode", enum_values("manual", "scheduled", "on_demand"), OPTIONAL),
        (
            "risks",
            objects(
                [
                    (name, RISK, OPTIONAL)
                    for name in (
                        "moving_away_from_destination",
                        "is_offline",
                        "delayed_from_scheduled_at",
                        "deviating_from_expected_route",
                        "moving_too_slow",
                        "in_outage",
                        "delayed_from_initial_eta",
                        "in_low_battery",
                    )
                ]
            ),
            OPTIONAL,
        ),
        ("scheduled_at", TIMESTAMPS, OPTIONAL),
        ("scheduled_after", TIMESTAMPS, OPTIONAL),
        ("started_at", TIMESTAMPS, OPTIONAL),
        ("type", enum_values("pick", "drop"), OPTIONAL),
        ("type_index", NON_NEGATIVE, ALWAYS),
        ("expected_service_time", INT32, OPTIONAL),
        ("actual_service_time", INT32, OPTIONAL),
        ("tracked_service_time", INT32, OPTIONAL),
        ("capacity_used", INT32, OPTIONAL),
        ("product_type", TEXT, OPTIONAL),
        ("metadata", METADATA, OPTIONAL),
        (
            "region",
            objects([("country", TEXT, OPTIONAL), ("city", TEXT, OPTIONAL), ("state", TEXT, OPTIONAL)]),
            OPTIONAL,
        ),
        ("share_url", TEXT, OPTIONAL),
        ("cancelled_at", TIMESTAMPS, OPTIONAL),
        ("completed_at", TIMESTAMPS, OPTIONAL),
        ("disabled_at", TIMESTAMPS, OPTIONAL),
        ("device_id", TEXT, OPTIONAL),
        ("worker_handle", HANDLES, OPTIONAL),
        ("created_at", TIMESTAMPS, OPTIONAL),
        ("assigned_at", TIMESTAMPS, OPTIONAL),
        ("route_handle", HANDLES, OPTIONAL),
        ("plan_id", TEXT, OPTIONAL),
        ("distance", INT32, OPTIONAL),
        ("duration", INT32, OPTIONAL),
        ("polyline", POLYLINES, OPTIONAL),
        ("start_location", POINTS, OPTIONAL),
        ("end_location", POINTS, OPTIONAL),
        ("visited_destination", st.booleans(), OPTIONAL),
        ("cancelled_at_destination", st.booleans(), OPTIONAL),
        ("timeline", st.lists(EVENTS, max_size=3), ALWAYS),
    ]
)

# Anything json.loads can return, including what the contract refuses: NaN and infinities, integers
# beyond 64 bits, unpaired surrogates, and deep nesting.
ANY_JSON: st.SearchStrategy[Json] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "pick", "drop", "2023-10-26T02:30:00Z", "Point", "order_created"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=6)
            | st.sampled_from(
                ["type", "metadata", "orders", "coordinates", "recorded_at", "type_index", "update", "\udfff"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def same_json(left: Json, right: Json) -> None:
    # orjson's output tells key order and integer from float apart, which `==` does not.
    assert orjson.dumps(left) == orjson.dumps(right)


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Json]) -> Json:
    """A valid document with one value somewhere inside replaced by arbitrary JSON."""
    document = draw(documents)
    replacement = draw(ANY_JSON)
    if not isinstance(document, dict | list) or not document:
        return replacement
    container: Any = document
    while True:
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        key = draw(st.sampled_from(keys))
        child = container[key]
        if isinstance(child, dict | list) and child and draw(st.booleans()):
            container = child
            continue
        container[key] = replacement
        return document


# --- properties ----------------------------------------------------------------------------------


@SETTINGS
@given(METADATA)
def test_metadata_round_trips_exactly(metadata: dict[str, Json]) -> None:
    same_json(encode(decode(json_pb2.JsonObject, metadata)), metadata)


@SETTINGS
@given(ORDERS)
def test_orders_round_trip_unchanged(document: dict[str, Json]) -> None:
    order = decode(order_pb2.Order, document)
    same_json(encode(order), document)
    # And through the wire format, as the store and gRPC carry it.
    same_json(encode(order_pb2.Order.FromString(order.SerializeToString())), document)


@SETTINGS
@given(st.integers(MIN_SECONDS, MAX_SECONDS), st.integers(0, 999_999_999))
def test_timestamps_match_the_calendar_and_read_back(seconds: int, nanos: int) -> None:
    text = format_timestamp(seconds, nanos)
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    expected = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{nanos // 1_000_000:03d}Z"
    )
    assert text == expected
    assert parse_timestamp(text) == (seconds, nanos // 1_000_000 * 1_000_000)


def decodes_or_is_refused(message_type: Any, data: Json) -> None:
    """Decoding returns a message or raises InvalidArgument naming fields below the path; any other
    exception fails the test."""
    violations = []
    try:
        decode(message_type, data, path="body")
    except InvalidArgument as error:
        violations = error.violations
        assert violations, "an InvalidArgument names at least one field"
    assert all(v.field.startswith("body") and v.description for v in violations)


@SETTINGS
@given(ANY_JSON)
def test_any_json_decodes_or_is_refused(data: Json) -> None:
    for message_type in (
        order_pb2.Order,
        orders_service_pb2.CancelOrderRequest,
        orders_service_pb2.OrderUpdate,
        orders_service_pb2.TrackOrdersRequest,
        json_pb2.JsonObject,
        json_pb2.JsonValue,
    ):
        decodes_or_is_refused(message_type, data)


@SETTINGS
@given(mutated(ORDERS))
def test_damaged_orders_decode_or_are_refused(data: Json) -> None:
    decodes_or_is_refused(order_pb2.Order, data)


@SETTINGS
@given(
    mutated(
        objects(
            [
                ("worker_handle", HANDLES, ALWAYS),
                ("track_mode", enum_values("on_time", "flex"), ALWAYS),
                (
                    "orders",
                    st.lists(
                        objects(
                            [
                                ("order_handle", HANDLES, ALWAYS),
                                ("type", enum_values("pick", "drop"), OPTIONAL),
                                ("scheduled_at", TIMESTAMPS, OPTIONAL),
                                ("destination", objects([("geometry", POINTS, ALWAYS)]), ALWAYS),
                                ("metadata", METADATA, OPTIONAL),
                            ]
                        ),
                        max_size=3,
                    ),
                    ALWAYS,
                ),
            ]
        )
    )
)
def test_damaged_track_requests_decode_or_are_refused(data: Json) -> None:
    decodes_or_is_refused(orders_service_pb2.TrackOrdersRequest, data)
