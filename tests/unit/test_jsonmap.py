"""The JSON <-> protobuf mapping: the reference round trip, each rule and special case, each violation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import Message

from gateway.domain.errors import FieldViolation, InvalidArgument
from gateway.jsonmap import JsonDecoder, JsonEncoder, decode, encode, encode_json, prepare
from gateway.jsonmap.contracts import MessageShape
from gateway.jsonmap.enums import enum_names, enum_prefix
from gateway.jsonmap.jsonvalue import MAX_DEPTH
from gateway.jsonmap.shapes import MESSAGE_SHAPES, field_shape
from gateway.jsonmap.timestamps import format_timestamp, format_timestamp_micros, parse_timestamp
from gateway.protos import events_pb2, json_pb2, order_pb2, orders_service_pb2

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "cancel-order-example.json"
TIMESTAMP_HINT = "must be a timestamp such as 2023-10-26T02:30:00.000Z (RFC 3339, with Z or an offset)"
EVENT_TYPES = (
    "must be one of: order_created, order_assigned, order_started, driver_activity_started, "
    "order_disabled, driver_activity_ended, order_cancelled, order_completed"
)


def reference() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(REFERENCE.read_text())
    return document


def same_json(left: object, right: object) -> None:
    """Equal as JSON documents: the same keys in the same order, the same values of the same types
    (`==` alone would take 1 for 1.0 and ignore key order)."""
    assert orjson.dumps(left) == orjson.dumps(right)
    if isinstance(left, dict):
        assert isinstance(right, dict)
        assert list(left) == list(right)
        for key in left:
            same_json(left[key], right[key])
    elif isinstance(left, list):
        assert isinstance(right, list)
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            same_json(a, b)
    else:
        assert type(left) is type(right)
        assert left == right


def encoded(message: Message) -> dict[str, Any]:
    """The encoding of a message that is written as a JSON object."""
    value = encode(message)
    assert isinstance(value, dict)
    return value


def violations_of(message_type: Any, data: object, *, path: str = "") -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        decode(message_type, data, path=path)
    assert caught.value.reason == "INVALID_ARGUMENT"
    return [(v.field, v.description) for v in caught.value.violations]


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def track_request(**order: object) -> dict[str, object]:
    """A TrackOrders body whose one order is given; the rest is valid."""
    return {"worker_handle": "w", "track_mode": "flex", "orders": [order]}


# --- the reference document ---------------------------------------------------------------------


def test_reference_round_trips_exactly() -> None:
    document = reference()
    order = decode(order_pb2.Order, document)
    same_json(encode(order), document)
    assert encode_json(order) == orjson.dumps(document)


def test_reference_survives_the_wire() -> None:
    order = decode(order_pb2.Order, reference())
    again = order_pb2.Order.FromString(order.SerializeToString())
    assert encode_json(again) == orjson.dumps(reference())


def test_reference_values_land_in_the_right_fields() -> None:
    order = decode(order_pb2.Order, reference())
    assert order.status == order_pb2.ORDER_STATUS_CANCELLED
    assert order.track_mode == order_pb2.TRACK_MODE_ON_TIME
    assert order.destination.geometry.longitude == -121.8610066
    assert order.destination.geometry.latitude == 37.3263062
    assert order.HasField("expected_service_time")
    assert order.expected_service_time == 0
    assert order.HasField("visited_destination")
    assert not order.visited_destination
    assert not order.HasField("completed_at")
    assert order.cancelled_at.ToJsonString() == "2023-10-26T01:37:03.650Z"
    assert [e.WhichOneof("event") for e in order.timeline][:2] == ["order_created", "order_assigned"]
    # The reference page's slip, kept as it is.
    assert order.timeline[0].order_created.order_handle == "order-2"
    started = order.timeline[3].driver_activity_started
    assert not started.HasField("driver_handle")
    assert order.polyline.points[4].recorded_at.ToJsonString() == "2023-10-26T01:34:24.103Z"


# --- presence and order ------------------------------------------------------------------------


def test_empty_order_writes_only_fields_without_presence() -> None:
    same_json(
        encode(order_pb2.Order()),
        {"order_handle": "", "fulfillment_attempt": 0, "type_index": 0, "timeline": []},
    )


def test_keys_follow_declaration_order_not_field_numbers() -> None:
    order = order_pb2.Order(
        scheduled_at=ts(0), scheduled_after=ts(1), started_at=ts(2), cancelled_at=ts(3), completed_at=ts(4)
    )
    order.product_type = "box"  # number 37, declared after capacity_used (16)
    order.capacity_used = 2
    keys = [key for key in encoded(order) if key not in ("order_handle", "fulfillment_attempt")]
    assert keys == [
        "scheduled_at",
        "scheduled_after",
        "started_at",
        "type_index",
        "capacity_used",
        "product_type",
        "cancelled_at",
        "completed_at",
        "timeline",
    ]


def test_optional_scalars_are_written_when_set_even_to_zero() -> None:
    assert encode(order_pb2.Destination()) == {}
    same_json(encode(order_pb2.Destination(radius=0, address="")), {"address": "", "radius": 0})
    same_json(encode(order_pb2.Region(city="")), {"city": ""})


def test_message_fields_are_written_when_set_even_empty() -> None:
    order = order_pb2.Order()
    order.risks.SetInParent()
    order.metadata.SetInParent()
    written = encoded(order)
    assert written["risks"] == {}
    assert written["metadata"] == {}
    assert "destination" not in written


def test_implicit_enums_are_left_out_when_unspecified() -> None:
    risks = order_pb2.Risks(is_offline=order_pb2.RISK_LEVEL_RED)
    same_json(encode(risks), {"is_offline": "red"})


def test_json_null_when_unset_fields_are_always_written() -> None:
    unknown = order_pb2.DriverActivityEndedEvent(activity="walk", duration=0)
    same_json(encode(unknown), {"driver_handle": None, "activity": "walk", "distance": None, "duration": 0})
    known = order_pb2.DriverActivityEndedEvent(driver_handle="d", distance=0)
    same_json(encode(known), {"driver_handle": "d", "activity": "", "distance": 0})


def test_json_null_decodes_as_absent() -> None:
    event = decode(
        order_pb2.DriverActivityEndedEvent, {"driver_handle": None, "distance": None, "location": None}
    )
    assert not event.HasField("driver_handle")
    assert not event.HasField("distance")
    assert not event.HasField("location")
    request = decode(orders_service_pb2.TrackOrdersRequest, {"orders": None, "device_id": None})
    assert len(request.orders) == 0
    assert not request.HasField("device_id")


# --- enums -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum", "number", "name"),
    [
        (order_pb2.OrderStatus, order_pb2.ORDER_STATUS_CANCELLED, "cancelled"),
        (order_pb2.OrderStatus, order_pb2.ORDER_STATUS_UNPLANNED, "unplanned"),
        (order_pb2.TrackMode, order_pb2.TRACK_MODE_ON_TIME, "on_time"),
        (order_pb2.PlanMode, order_pb2.PLAN_MODE_ON_DEMAND, "on_demand"),
        (order_pb2.RiskLevel, order_pb2.RISK_LEVEL_GREEN, "green"),
        (order_pb2.OrderType, order_pb2.ORDER_TYPE_PICK, "pick"),
        (orders_service_pb2.RouteStatus, orders_service_pb2.ROUTE_STATUS_TRACKING, "tracking"),
    ],
)
def test_enum_names_drop_the_prefix_and_lower_case(enum: Any, number: int, name: str) -> None:
    names = enum_names(enum.DESCRIPTOR)
    assert names.by_number[number] == name
    assert names.by_name[name] == number


def test_enum_prefix_is_the_enum_name_in_upper_snake_case() -> None:
    assert enum_prefix(order_pb2.OrderStatus.DESCRIPTOR) == "ORDER_STATUS_"
    assert enum_prefix(orders_service_pb2.RouteStatus.DESCRIPTOR) == "ROUTE_STATUS_"


def test_every_status_is_written_by_its_contract_name() -> None:
    names = order_pb2.OrderStatus.keys()[1:]  # every status but ORDER_STATUS_UNSPECIFIED
    written = {encoded(order_pb2.Order(status=name))["status"] for name in names}
    assert written == {
        "unplanned",
        "planned",
        "assigned",
        "dispatched",
        "ongoing",
        "disabled",
        "completed",
        "cancelled",
    }


def test_an_enum_number_without_a_name_is_written_as_the_number() -> None:
    order = order_pb2.Order()
    order.status = 42  # type: ignore[assignment]
    assert encoded(order)["status"] == 42


# --- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 0, "1970-01-01T00:00:00.000Z"),
        (1698287400, 0, "2023-10-26T02:30:00.000Z"),
        (1698287400, 999_999_999, "2023-10-26T02:30:00.999Z"),  # truncated, not rounded up
        (1698287400, 1_999_999, "2023-10-26T02:30:00.001Z"),
        (-1, 500_000_000, "1969-12-31T23:59:59.500Z"),
        (951782400, 0, "2000-02-29T00:00:00.000Z"),
        (-62135596800, 0, "0001-01-01T00:00:00.000Z"),
        (253402300799, 999_000_000, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_timestamps_have_three_fractional_digits_in_utc(seconds: int, nanos: int, text: str) -> None:
    assert format_timestamp(seconds, nanos) == text
    assert encode(ts(seconds, nanos)) == text


@pytest.mark.parametrize(("seconds", "nanos"), [(253402300800, 0), (-62135596801, 0), (0, -1), (0, 10**9)])
def test_timestamps_out_of_range_are_not_written(seconds: int, nanos: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        format_timestamp(seconds, nanos)


def test_a_message_with_a_timestamp_out_of_range_is_not_written() -> None:
    # Generated encoders write timestamps inline; they check the range like encode_timestamp.
    with pytest.raises(ValueError, match="out of range"):
        encode(order_pb2.Order(created_at=ts(253402300800)))
    with pytest.raises(ValueError, match="out of range"):
        encode(order_pb2.Location(recorded_at=ts(0, -1)))


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 0, "1970-01-01T00:00:00.000000Z"),
        (1698287400, 123_456_789, "2023-10-26T02:30:00.123456Z"),  # truncated, not rounded up
        (1698287400, 999_999_999, "2023-10-26T02:30:00.999999Z"),
        (1698287400, 1_000, "2023-10-26T02:30:00.000001Z"),
        (-1, 500_000_000, "1969-12-31T23:59:59.500000Z"),
        (-62135596800, 0, "0001-01-01T00:00:00.000000Z"),
        (253402300799, 999_999_000, "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_event_timestamps_have_six_fractional_digits(seconds: int, nanos: int, text: str) -> None:
    assert format_timestamp_micros(seconds, nanos) == text
    event = events_pb2.OrderEvent(created_at=ts(seconds, nanos), recorded_at=ts(seconds, nanos))
    written = encoded(event)
    assert (written["created_at"], written["recorded_at"]) == (text, text)
    # An OrderWebhook is an OrderEvent's bytes with delivery fields: its times are the same text.
    webhook = events_pb2.OrderWebhook.FromString(event.SerializeToString())
    assert encoded(webhook)["created_at"] == text
    # The option is the field's, not the type's: an order's timestamps keep three digits.
    assert encoded(order_pb2.Order(created_at=ts(seconds, nanos)))["created_at"] == format_timestamp(
        seconds, nanos
    )


def test_only_fields_with_the_option_have_six_digits() -> None:
    fields = events_pb2.OrderEvent.DESCRIPTOR.fields_by_name
    assert field_shape(fields["created_at"]) is not None
    assert field_shape(fields["recorded_at"]) is not None
    assert field_shape(fields["data"]) is None
    assert field_shape(order_pb2.Order.DESCRIPTOR.fields_by_name["created_at"]) is None
    source = JsonEncoder().source(events_pb2.OrderEvent)
    assert source.count("_ts_micros(n)") == 2  # written inline, like the three-digit ones


def test_event_timestamps_out_of_range_are_not_written() -> None:
    with pytest.raises(ValueError, match="out of range"):
        format_timestamp_micros(253402300800, 0)
    with pytest.raises(ValueError, match="out of range"):
        encode(events_pb2.OrderEvent(recorded_at=ts(0, -1)))


def test_events_read_back_from_their_json() -> None:
    event = events_pb2.OrderEvent(
        account_id="a", type="order", version="3.0.0", created_at=ts(1698287400, 123_456_000)
    )
    event.recorded_at.CopyFrom(ts(1698287399, 1_000))
    event.data.order_handle = "h"
    event.data.value = order_pb2.ORDER_STATUS_CANCELLED
    event.data.metadata.CopyFrom(decode(json_pb2.JsonObject, {"n": 1}))
    written = encoded(event)
    assert written["device_id"] is None  # json_null_when_unset
    assert decode(events_pb2.OrderEvent, written) == event
    # Any RFC 3339 precision is read, as for every timestamp.
    assert decode(events_pb2.OrderEvent, {"created_at": "2023-10-26T02:30:00Z"}).created_at == ts(1698287400)


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("2023-10-26T02:30:00.000Z", 1698287400, 0),
        ("2023-10-26T02:30:00Z", 1698287400, 0),
        ("2023-10-26t02:30:00.5z", 1698287400, 500_000_000),
        ("2023-10-26T04:30:00.123456789+02:00", 1698287400, 123_456_789),
        ("2023-10-25T21:00:00-05:30", 1698287400, 0),
        ("2023-10-26T02:30:00-00:00", 1698287400, 0),
        ("0001-01-01T00:00:00Z", -62135596800, 0),
    ],
)
def test_timestamps_are_read_with_z_or_an_offset(text: str, seconds: int, nanos: int) -> None:
    assert parse_timestamp(text) == (seconds, nanos)


@pytest.mark.parametrize(
    "text",
    [
        "2023-10-26T02:30:00",  # no zone
        "2023-10-26 02:30:00Z",  # space
        "2023-10-26",
        "2023-02-30T00:00:00Z",  # no such day
        "2023-10-26T24:00:00Z",
        "2023-10-26T23:59:60Z",  # leap second
        "2023-10-26T02:30:00.Z",
        "2023-10-26T02:30:00.1234567890Z",
        "2023-10-26T02:30:00+0200",
        "2023-10-26T02:30:00+24:00",
        "0000-12-31T00:00:00Z",
        "0001-01-01T00:00:00+00:01",  # before year 1 in UTC
        "२०२३-10-26T02:30:00Z",  # non-ASCII digits
        "2023-10-26T02:30:00Z\n",
        "",
    ],
)
def test_malformed_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not an RFC 3339 date-time"):
        parse_timestamp(text)
    assert violations_of(order_pb2.Order, {"created_at": text}) == [("created_at", TIMESTAMP_HINT)]


def test_a_timestamp_must_be_a_string() -> None:
    assert violations_of(order_pb2.Order, {"created_at": 1698287400}) == [("created_at", TIMESTAMP_HINT)]


# --- GeoJSON -----------------------------------------------------------------------------------


def test_points_are_geojson_longitude_first() -> None:
    point = order_pb2.Point(longitude=-121.5, latitude=37.25)
    same_json(encode(point), {"type": "Point", "coordinates": [-121.5, 37.25]})
    assert decode(order_pb2.Point, {"type": "Point", "coordinates": [-121.5, 37.25]}) == point


def test_integer_coordinates_are_numbers() -> None:
    point = decode(order_pb2.Point, {"type": "Point", "coordinates": [10, -5]})
    assert (point.longitude, point.latitude) == (10.0, -5.0)


def test_polylines_are_linestrings_of_positions_with_times() -> None:
    line = order_pb2.LineString()
    line.points.add(longitude=1.5, latitude=2.5, altitude=3.5, recorded_at=ts(0, 1_000_000))
    line.points.add(longitude=-1.0, latitude=0.0, altitude=0.0)  # no time
    expected = {
        "type": "LineString",
        "coordinates": [[1.5, 2.5, 3.5, "1970-01-01T00:00:00.001Z"], [-1.0, 0.0, 0.0, None]],
    }
    same_json(encode(line), expected)
    assert decode(order_pb2.LineString, expected) == line
    same_json(encode(order_pb2.LineString()), {"type": "LineString", "coordinates": []})


@pytest.mark.parametrize(
    ("geometry", "violations"),
    [
        ("here", [("", 'must be a GeoJSON Point: {"type": "Point", "coordinates": [longitude, latitude]}')]),
        ({"type": "Polygon", "coordinates": [1, 2]}, [("", 'must have "type": "Point"')]),
        ({"coordinates": [1, 2]}, [("", 'must have "type": "Point"')]),
        ({"type": "Point"}, [("", "coordinates must be [longitude, latitude], two finite numbers")]),
        (
            {"type": "Point", "coordinates": [1]},
            [("", "coordinates must be [longitude, latitude], two finite numbers")],
        ),
        (
            {"type": "Point", "coordinates": [1, 2, 3]},
            [("", "coordinates must be [longitude, latitude], two finite numbers")],
        ),
        (
            {"type": "Point", "coordinates": ["1", 2]},
            [("", "coordinates must be [longitude, latitude], two finite numbers")],
        ),
        (
            {"type": "Point", "coordinates": [True, 2]},
            [("", "coordinates must be [longitude, latitude], two finite numbers")],
        ),
        (
            {"type": "Point", "coordinates": [float("nan"), 2]},
            [("", "coordinates must be [longitude, latitude], two finite numbers")],
        ),
        (
            {"type": "Point", "coordinates": [10**400, 2]},
            [("", "coordinates must be [longitude, latitude], two finite numbers")],
        ),
        ({"type": "Point", "coordinates": [1, 2], "bbox": []}, [(".bbox", "unknown field")]),
    ],
)
def test_malformed_points_are_named_by_their_field(
    geometry: object, violations: list[tuple[str, str]]
) -> None:
    body = track_request(order_handle="o", destination={"geometry": geometry})
    expected = [(f"orders[0].destination.geometry{field}", text) for field, text in violations]
    assert violations_of(orders_service_pb2.TrackOrdersRequest, body) == expected


def test_malformed_polylines_are_named_by_position() -> None:
    polyline = {
        "type": "LineString",
        "coordinates": [
            [1, 2, 3, "yesterday"],
            [1, 2, 3],
            [1, 2, "3", "2023-10-26T02:30:00Z"],
            "x",
            [1, 2, 3, None],
        ],
    }
    assert violations_of(order_pb2.Order, {"polyline": polyline}) == [
        ("polyline.points[0].recorded_at", TIMESTAMP_HINT),
        (
            "polyline.points[1]",
            'must be [longitude, latitude, altitude, "<timestamp>"], three finite numbers and a timestamp',
        ),
        (
            "polyline.points[2]",
            'must be [longitude, latitude, altitude, "<timestamp>"], three finite numbers and a timestamp',
        ),
        (
            "polyline.points[3]",
            'must be [longitude, latitude, altitude, "<timestamp>"], three finite numbers and a timestamp',
        ),
    ]
    assert violations_of(order_pb2.Order, {"polyline": {"type": "Point", "coordinates": []}}) == [
        ("polyline", 'must have "type": "LineString"')
    ]
    assert violations_of(order_pb2.Order, {"polyline": {"type": "LineString", "coordinates": {}}}) == [
        ("polyline", 'coordinates must be an array of [longitude, latitude, altitude, "<timestamp>"]')
    ]


# --- metadata ----------------------------------------------------------------------------------


def test_metadata_comes_back_exactly() -> None:
    metadata = {
        "z": 1,
        "a": 1.0,
        "big": 2**62,
        "min": -(2**63),
        "max": 2**63 - 1,
        "tiny": 5e-324,
        "neg_zero": -0.0,
        "text": "héllo \u2028 \U0001f600",
        "flags": [True, False, None],
        "nested": {"deeper": [[1, [2.5, {"k": None}]], {}, []]},
        "null": None,
        "": "empty key",
    }
    order = decode(order_pb2.Order, {"metadata": metadata})
    same_json(encode(order.metadata), metadata)
    assert order.metadata.members[0].value.integer_value == 1
    assert order.metadata.members[1].value.number_value == 1.0
    assert order.metadata.members[1].value.WhichOneof("kind") == "number_value"


def test_json_values_of_every_kind() -> None:
    values: tuple[object, ...] = (None, True, 0, -7, 0.5, "s", [], {}, [None, {"a": [1]}])
    for value in values:
        same_json(encode(decode(json_pb2.JsonValue, value)), value)
    assert decode(json_pb2.JsonValue, None).WhichOneof("kind") == "null_value"
    assert encode(json_pb2.JsonValue()) is None  # unset reads as null
    same_json(encode(decode(json_pb2.JsonArray, [1, "a", None])), [1, "a", None])


def nested(levels: int) -> dict[str, object]:
    """A metadata object `levels` containers deep, alternating objects and arrays."""
    value: object = 0
    for level in range(levels - 1):
        value = {"k": value} if level % 2 else [value]
    return {"k": value}


def test_metadata_may_nest_32_levels_and_no_more() -> None:
    assert MAX_DEPTH == 32
    order = decode(order_pb2.Order, {"metadata": nested(32)})
    same_json(encoded(order)["metadata"], nested(32))
    assert violations_of(order_pb2.Order, {"metadata": nested(33)}) == [
        ("metadata", "nested too deeply (at most 32 levels of objects and arrays)")
    ]
    # Far deeper input is refused the same way, without exhausting the stack.
    assert violations_of(order_pb2.Order, {"metadata": nested(5000)}) == [
        ("metadata", "nested too deeply (at most 32 levels of objects and arrays)")
    ]


def test_metadata_violations_are_named_by_their_key_path() -> None:
    metadata = {
        "nan": float("nan"),
        "list": [1, float("inf")],
        "big": 2**63,
        "small": -(2**63) - 1,
        "obj": {"bad": "\ud800"},
    }
    assert violations_of(order_pb2.Order, {"metadata": metadata}) == [
        ("metadata.nan", "must be a finite number"),
        ("metadata.list[1]", "must be a finite number"),
        ("metadata.big", "must be an integer that fits in 64 bits"),
        ("metadata.small", "must be an integer that fits in 64 bits"),
        ("metadata.obj.bad", "must be valid Unicode text (no unpaired surrogates)"),
    ]
    assert violations_of(order_pb2.Order, {"metadata": [1]}) == [("metadata", "must be an object")]
    assert violations_of(order_pb2.Order, {"metadata": {"x": {1, 2}}}) == [
        ("metadata.x", "must be a JSON value")
    ]


# --- timeline events ---------------------------------------------------------------------------


def test_timeline_events_are_flat_with_type_first() -> None:
    event = order_pb2.TimelineEvent(recorded_at=ts(0))
    event.order_started.order_handle = "h"
    event.order_started.order_type = order_pb2.ORDER_TYPE_PICK
    expected = {
        "type": "order_started",
        "recorded_at": "1970-01-01T00:00:00.000Z",
        "order_handle": "h",
        "order_type": "pick",
        "fulfillment_attempt": 0,
    }
    same_json(encode(event), expected)
    assert decode(order_pb2.TimelineEvent, expected) == event


def test_every_event_type_round_trips() -> None:
    for field in order_pb2.TimelineEvent.DESCRIPTOR.oneofs_by_name["event"].fields:
        event = order_pb2.TimelineEvent()
        getattr(event, field.name).SetInParent()
        written = encoded(event)
        assert next(iter(written)) == "type"
        assert written["type"] == field.name
        assert decode(order_pb2.TimelineEvent, written) == event


def test_an_event_without_recorded_at_leaves_it_out() -> None:
    event = order_pb2.TimelineEvent(order_cancelled=order_pb2.OrderCancelledEvent(order_handle="h"))
    same_json(encode(event), {"type": "order_cancelled", "order_handle": "h", "fulfillment_attempt": 0})


def test_timeline_violations_are_named_in_proto_terms() -> None:
    timeline = [
        {"type": "order_exploded", "recorded_at": "2023-10-26T02:30:00Z"},
        {"recorded_at": "2023-10-26T02:30:00Z"},
        {"type": 5},
        {"type": "order_assigned", "order_handle": "h", "foo": 1, "fulfillment_attempt": "0"},
        {"type": "order_cancelled", "recorded_at": "later"},
        {"type": "order_created", "metadata": {"n": float("inf")}},
        None,
        {"type": None},
    ]
    assert violations_of(order_pb2.Order, {"timeline": timeline}) == [
        ("timeline[0].type", EVENT_TYPES),
        ("timeline[1].type", EVENT_TYPES),
        ("timeline[2].type", EVENT_TYPES),
        ("timeline[3].order_assigned.foo", "unknown field"),
        ("timeline[3].order_assigned.fulfillment_attempt", "must be an integer"),
        ("timeline[4].recorded_at", TIMESTAMP_HINT),
        ("timeline[5].order_created.metadata.n", "must be a finite number"),
        ("timeline[6]", "must be an object"),
        ("timeline[7].type", EVENT_TYPES),
    ]


# --- scalar violations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "description"),
    [
        ({"worker_handle": 5}, "worker_handle", "must be a string"),
        ({"worker_handle": ["w"]}, "worker_handle", "must be a string"),
        ({"worker_handle": "\udc00"}, "worker_handle", "must be valid Unicode text (no unpaired surrogates)"),
        ({"track_mode": "ON_TIME"}, "track_mode", "must be one of: on_time, flex"),
        ({"track_mode": "unspecified"}, "track_mode", "must be one of: on_time, flex"),
        ({"track_mode": 1}, "track_mode", "must be one of: on_time, flex"),
        ({"orders": {}}, "orders", "must be an array"),
        ({"orders": [5]}, "orders[0]", "must be an object"),
        ({"orders": [{"type_index": True}]}, "orders[0].type_index", "must be an integer"),
        ({"orders": [{"type_index": 1.5}]}, "orders[0].type_index", "must be an integer"),
        ({"orders": [{"type_index": float("inf")}]}, "orders[0].type_index", "must be an integer"),
        (
            {"orders": [{"type_index": 1e300}]},
            "orders[0].type_index",
            "must be an integer from -2147483648 to 2147483647",
        ),
        ({"orders": [{"type_index": "1"}]}, "orders[0].type_index", "must be an integer"),
        (
            {"orders": [{"type_index": 2**31}]},
            "orders[0].type_index",
            "must be an integer from -2147483648 to 2147483647",
        ),
        (
            {"orders": [{"capacity_used": -(2**31) - 1}]},
            "orders[0].capacity_used",
            "must be an integer from -2147483648 to 2147483647",
        ),
        ({"orders": [{"type": "both"}]}, "orders[0].type", "must be one of: pick, drop"),
        ({"orders": [{"destination": []}]}, "orders[0].destination", "must be an object"),
        (
            {"orders": [{"destination": {"radius": 10, "bogus": 1}}]},
            "orders[0].destination.bogus",
            "unknown field",
        ),
        ({"bogus": None}, "bogus", "unknown field"),
    ],
)
def test_each_wrong_value_is_a_violation_at_its_path(
    body: dict[str, object], field: str, description: str
) -> None:
    assert violations_of(orders_service_pb2.TrackOrdersRequest, body) == [(field, description)]


def test_booleans_must_be_booleans() -> None:
    assert violations_of(order_pb2.Order, {"visited_destination": 1}) == [
        ("visited_destination", "must be true or false")
    ]


def test_doubles_take_integers_but_not_booleans_or_non_finite_numbers() -> None:
    point = decode(order_pb2.PolylinePoint, {"longitude": 1, "latitude": -2, "altitude": 0.5})
    assert (point.longitude, point.latitude, point.altitude) == (1.0, -2.0, 0.5)
    bad = {"longitude": True, "latitude": float("inf"), "altitude": 10**400}
    assert violations_of(order_pb2.PolylinePoint, bad) == [
        ("longitude", "must be a number"),
        ("latitude", "must be a finite number"),
        ("altitude", "must be a finite number"),
    ]


def test_all_violations_are_raised_together_in_document_order() -> None:
    body = {
        "worker_handle": 1,
        "orders": [
            {"order_handle": "a", "type_index": -1.5},
            {"order_handle": "b", "type_index": "x", "destination": {"geometry": {"type": "Point"}}},
        ],
        "extra": True,
    }
    with pytest.raises(InvalidArgument) as caught:
        decode(orders_service_pb2.TrackOrdersRequest, body)
    assert caught.value.violations == [
        FieldViolation("worker_handle", "must be a string"),
        FieldViolation("orders[0].type_index", "must be an integer"),
        FieldViolation("orders[1].type_index", "must be an integer"),
        FieldViolation(
            "orders[1].destination.geometry", "coordinates must be [longitude, latitude], two finite numbers"
        ),
        FieldViolation("extra", "unknown field"),
    ]
    assert "orders[1].type_index: must be an integer" in caught.value.message


def test_the_whole_value_must_be_an_object() -> None:
    assert violations_of(order_pb2.Order, [1]) == [("", "must be an object")]
    assert violations_of(order_pb2.Order, None) == [("", "must be an object")]


def test_a_path_prefix_names_violations_below_a_parent() -> None:
    update = orders_service_pb2.CancelOrderRequest.DESCRIPTOR.fields_by_name["update"].message_type
    assert update is not None
    assert violations_of(update, {"metadata": 5, "x": 1}, path="update") == [
        ("update.metadata", "must be an object"),
        ("update.x", "unknown field"),
    ]
    decoded = decode(update, {"metadata": {"k": "v"}}, path="update")
    assert isinstance(decoded, orders_service_pb2.OrderUpdate)
    assert encode(decoded) == {"metadata": {"k": "v"}}


def test_an_empty_object_sets_a_message_field() -> None:
    request = decode(orders_service_pb2.CancelOrderRequest, {"update": {}})
    assert request.HasField("update")
    assert not request.update.HasField("metadata")


def test_a_cancel_body_decodes() -> None:
    request = decode(
        orders_service_pb2.CancelOrderRequest,
        {"order_handle": "order-1", "type": "drop", "type_index": 0, "update": {"metadata": {"a": [1, 2.0]}}},
    )
    assert request.type == order_pb2.ORDER_TYPE_DROP
    assert request.HasField("type_index")
    assert request.type_index == 0
    assert not request.HasField("fulfillment_attempt")
    same_json(encode(request.update.metadata), {"a": [1, 2.0]})


# --- the generic machinery, on message shapes the service protos do not have ---------------------


def _sample_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="jsonmap_test.proto", package="jsonmap.test", syntax="proto3"
    )
    file.enum_type.add(name="HTTPStatus").value.add(name="HTTP_STATUS_UNSPECIFIED", number=0)
    file.enum_type[0].value.add(name="HTTP_STATUS_NOT_FOUND", number=404)
    file.enum_type[0].value.add(name="GONE", number=410)  # outside the naming convention
    sample = file.message_type.add(name="Sample")
    sample.oneof_decl.add(name="choice")
    sample.oneof_decl.add(name="_shade")
    sample.field.add(name="name", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    sample.field.add(name="a", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL, oneof_index=0)
    sample.field.add(name="b", number=3, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL, oneof_index=0)
    sample.field.add(
        name="statuses",
        number=4,
        type=f.TYPE_ENUM,
        type_name=".jsonmap.test.HTTPStatus",
        label=f.LABEL_REPEATED,
    )
    sample.field.add(name="numbers", number=5, type=f.TYPE_UINT32, label=f.LABEL_REPEATED)
    sample.field.add(
        name="child", number=6, type=f.TYPE_MESSAGE, type_name=".jsonmap.test.Sample", label=f.LABEL_OPTIONAL
    )
    sample.field.add(name="from", number=7, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    sample.field.add(
        name="shade",
        number=8,
        type=f.TYPE_ENUM,
        type_name=".jsonmap.test.HTTPStatus",
        label=f.LABEL_OPTIONAL,
        oneof_index=1,
        proto3_optional=True,
    )
    sample.field.add(name="ratio", number=9, type=f.TYPE_FLOAT, label=f.LABEL_OPTIONAL)
    with_bytes = file.message_type.add(name="WithBytes")
    with_bytes.field.add(name="data", number=1, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    return file


@pytest.fixture(scope="module")
def sample_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_sample_file())
    return pool


def sample_class(pool: descriptor_pool.DescriptorPool, name: str = "Sample") -> type[Message]:
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"jsonmap.test.{name}"))


def test_acronyms_and_unconventional_enum_names(sample_pool: descriptor_pool.DescriptorPool) -> None:
    enum = sample_pool.FindEnumTypeByName("jsonmap.test.HTTPStatus")
    assert enum_prefix(enum) == "HTTP_STATUS_"
    names = enum_names(enum)
    assert names.by_number == {0: "unspecified", 404: "not_found", 410: "gone"}
    assert names.choices(with_zero=False) == ["not_found", "gone"]


def test_generic_shapes_round_trip(sample_pool: descriptor_pool.DescriptorPool) -> None:
    document = {
        "name": "n",
        "b": 2**40,
        "statuses": ["unspecified", "not_found", "gone"],  # a repeated enum writes its zero value
        "numbers": [0, 2**32 - 1],
        "child": {"name": "c", "statuses": [], "numbers": [], "from": "kw", "ratio": 0.5},
        "from": "",
        "shade": "unspecified",  # an optional enum is written when set, even to zero
        "ratio": 0.0,
    }
    message = JsonDecoder().decode(sample_class(sample_pool), document)
    same_json(JsonEncoder().encode(message), document)


def test_one_member_of_a_oneof_at_most(sample_pool: descriptor_pool.DescriptorPool) -> None:
    with pytest.raises(InvalidArgument) as caught:
        JsonDecoder().decode(sample_class(sample_pool), {"a": "x", "b": 1, "numbers": [-1, 1.5]})
    assert caught.value.violations == [
        FieldViolation("b", "must not be given together with a"),
        FieldViolation("numbers[0]", "must be an integer from 0 to 4294967295"),
        FieldViolation("numbers[1]", "must be an integer"),
    ]
    # null is absent, so it does not count as the second member.
    message = JsonDecoder().decode(sample_class(sample_pool), {"a": None, "b": 1})
    assert message.WhichOneof("choice") == "b"


def test_floats_must_fit_32_bits(sample_pool: descriptor_pool.DescriptorPool) -> None:
    with pytest.raises(InvalidArgument) as caught:
        JsonDecoder().decode(sample_class(sample_pool), {"ratio": 1e39})
    assert caught.value.violations == [FieldViolation("ratio", "must be a finite number")]


def test_fields_without_a_json_mapping_fail_when_compiled(
    sample_pool: descriptor_pool.DescriptorPool,
) -> None:
    with_bytes = sample_class(sample_pool, "WithBytes")
    with pytest.raises(TypeError, match="bytes"):
        JsonEncoder().encode(with_bytes())
    with pytest.raises(TypeError, match="no JSON mapping"):
        JsonDecoder().decode(with_bytes, {})


# --- the encoder as a component ----------------------------------------------------------------


def test_encoders_are_generated_source() -> None:
    encoder = JsonEncoder()
    source = encoder.source(order_pb2.Order.DESCRIPTOR)
    assert source.startswith("def _m")
    assert "json_format" not in source
    assert "'type': k" in encoder.source(order_pb2.TimelineEvent.DESCRIPTOR)
    assert "encode_timestamp" in encoder.source(timestamp_pb2.Timestamp.DESCRIPTOR)


def test_the_package_prepares_encoders_and_decoders() -> None:
    prepare(orders_service_pb2.CancelOrderRequest, orders_service_pb2.CancelOrderResponse)
    request = decode(orders_service_pb2.CancelOrderRequest, {"order_handle": "h"})
    assert encoded(request) == {"order_handle": "h"}


def test_prepare_compiles_ahead_and_instances_agree() -> None:
    encoder = JsonEncoder()
    encoder.prepare(order_pb2.Order, orders_service_pb2.TrackOrdersResponse)
    order = decode(order_pb2.Order, reference())
    assert encoder.encode_json(order) == encode_json(order)
    response = orders_service_pb2.TrackOrdersResponse(
        route_handle="r", status=orders_service_pb2.ROUTE_STATUS_TRACKING, orders=[order]
    )
    same_json(encoder.encode(response), {"route_handle": "r", "status": "tracking", "orders": [reference()]})


def test_an_integral_float_is_an_integer_as_json_schema_says() -> None:
    request = decode(
        orders_service_pb2.TrackOrdersRequest, {"orders": [{"type_index": 2.0, "capacity_used": 1e2}]}
    )
    assert request.orders[0].type_index == 2
    assert request.orders[0].capacity_used == 100


def test_the_encoder_and_decoder_take_their_special_shapes_from_the_records() -> None:
    point = MESSAGE_SHAPES[order_pb2.Point.DESCRIPTOR.full_name]

    def decode_pair(message: Any, data: object, path: str, violations: list[FieldViolation]) -> None:
        message.longitude, message.latitude = data  # type: ignore[misc]

    pair = MessageShape(point.full_name, lambda p: [p.longitude, p.latitude], decode_pair, point.schema)
    shapes = {**MESSAGE_SHAPES, point.full_name: pair}
    destination = JsonDecoder(shapes).decode(order_pb2.Destination, {"geometry": [1.5, 2.5]})
    assert JsonEncoder(shapes).encode(destination) == {"geometry": [1.5, 2.5]}
    default = encode(destination)  # the shared encoder keeps the contract's GeoJSON
    assert isinstance(default, dict)
    assert default["geometry"] == {"type": "Point", "coordinates": [1.5, 2.5]}
