"""Track Orders rules: request validation, what is known of each handle, the new records of a route."""

from __future__ import annotations

import itertools
import math

import pytest

from gateway.domain.errors import AlreadyExists, InvalidArgument
from gateway.domain.tracking import HandleHistory, build_orders, handle_histories, validate_track_request
from gateway.protos import json_pb2, order_pb2, orders_service_pb2

NOW_MS = 1_698_284_223_650
PICK = order_pb2.ORDER_TYPE_PICK
DROP = order_pb2.ORDER_TYPE_DROP
Status = order_pb2.OrderStatus
DEST = order_pb2.Destination(geometry=order_pb2.Point(longitude=-121.86, latitude=37.32))


def request(*orders: orders_service_pb2.NewOrder, **fields: object) -> orders_service_pb2.TrackOrdersRequest:
    values: dict[str, object] = {"worker_handle": "James", "track_mode": order_pb2.TRACK_MODE_ON_TIME}
    values.update(fields)
    return orders_service_pb2.TrackOrdersRequest(orders=list(orders), **values)  # type: ignore[arg-type]


def new(handle: str = "h", **fields: object) -> orders_service_pb2.NewOrder:
    values: dict[str, object] = {"destination": DEST}
    values.update(fields)
    return orders_service_pb2.NewOrder(order_handle=handle, **values)  # type: ignore[arg-type]


def build(
    req: orders_service_pb2.TrackOrdersRequest, history: dict[str, HandleHistory] | None = None
) -> list[order_pb2.Order]:
    urls = (f"https://trck.at/{i}" for i in itertools.count())
    return build_orders(
        req, history or {}, now_ms=NOW_MS, route_handle="route-1", new_share_url=lambda: next(urls)
    )


def violations_of(req: orders_service_pb2.TrackOrdersRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_track_request(req)
    assert caught.value.reason == "INVALID_ARGUMENT"
    return {v.field: v.description for v in caught.value.violations}


# validate_track_request


def test_a_valid_request_passes() -> None:
    validate_track_request(
        request(
            new("a", type=PICK, metadata=json_pb2.JsonObject()),
            new("a", type=DROP, type_index=0),
            new("😀" * 255),
            device_id="dev",
            ops_group_handle="ops",
        )
    )


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (request(new(), worker_handle=""), "worker_handle"),
        (request(new(), worker_handle="w\x00"), "worker_handle"),
        (request(new(), track_mode=order_pb2.TRACK_MODE_UNSPECIFIED), "track_mode"),
        (request(new(), track_mode=99), "track_mode"),
        (request(), "orders"),
        (request(*[new(f"h{i}") for i in range(101)]), "orders"),
        (request(new("")), "orders[0].order_handle"),
        (request(new("x" * 256)), "orders[0].order_handle"),
        (request(new("a\nb")), "orders[0].order_handle"),
        (request(new("a\x7f")), "orders[0].order_handle"),
        (request(new("ok"), new("h", type=7)), "orders[1].type"),
        (request(new("h", destination=order_pb2.Destination())), "orders[0].destination.geometry"),
        (
            request(new("ok"), orders_service_pb2.NewOrder(order_handle="h")),
            "orders[1].destination.geometry",
        ),
        (
            request(new("h", destination=order_pb2.Destination(geometry=order_pb2.Point(longitude=181)))),
            "orders[0].destination.geometry.longitude",
        ),
        (
            request(new("h", destination=order_pb2.Destination(geometry=order_pb2.Point(latitude=math.nan)))),
            "orders[0].destination.geometry.latitude",
        ),
        (
            request(new("h", destination=order_pb2.Destination(geometry=DEST.geometry, radius=0))),
            "orders[0].destination.radius",
        ),
        (
            request(new("h", destination=order_pb2.Destination(geometry=DEST.geometry, address="a\x01"))),
            "orders[0].destination.address",
        ),
        (request(new("h", type_index=-1)), "orders[0].type_index"),
        (request(new("h", expected_service_time=-5)), "orders[0].expected_service_time"),
        (request(new("h", capacity_used=-1)), "orders[0].capacity_used"),
        (request(new("h", product_type="x" * 1025)), "orders[0].product_type"),
        (request(new(), device_id="d\x1b"), "device_id"),
        (request(new(), ops_group_handle="o" * 1025), "ops_group_handle"),
        (request(new("h", type_index=0), new("h", type_index=0)), "orders[1].type_index"),
    ],
)
def test_each_bad_field_is_named(req: orders_service_pb2.TrackOrdersRequest, field: str) -> None:
    assert field in violations_of(req)


def test_metadata_violations_name_the_member() -> None:
    metadata = json_pb2.JsonObject(
        members=[
            json_pb2.JsonMember(key="k", value=json_pb2.JsonValue(integer_value=1)),
            json_pb2.JsonMember(key="k", value=json_pb2.JsonValue(integer_value=2)),
            json_pb2.JsonMember(key="n", value=json_pb2.JsonValue(number_value=math.inf)),
            json_pb2.JsonMember(key="e", value=json_pb2.JsonValue()),
        ]
    )
    found = violations_of(request(new("h", metadata=metadata)))
    assert "given more than once" in found["orders[0].metadata"]
    assert found["orders[0].metadata.n"] == "must be a finite number"
    assert found["orders[0].metadata.e"] == "must be a JSON value"


def test_every_violation_is_reported_at_once() -> None:
    found = violations_of(request(new(""), new("h", type_index=-1), worker_handle=""))
    assert set(found) == {"worker_handle", "orders[0].order_handle", "orders[1].type_index"}


def test_same_index_on_different_types_is_allowed() -> None:
    validate_track_request(request(new("h", type=PICK, type_index=0), new("h", type=DROP, type_index=0)))


# build_orders


def test_type_indexes_number_legs_per_handle_and_type() -> None:
    orders = build(request(new("a"), new("a"), new("a", type=PICK), new("b"), new("a")))
    assert [(o.order_handle, o.type, o.type_index) for o in orders] == [
        ("a", DROP, 0),
        ("a", DROP, 1),
        ("a", PICK, 0),
        ("b", DROP, 0),
        ("a", DROP, 2),
    ]


def test_given_indexes_are_kept_and_skipped_by_the_numbering() -> None:
    orders = build(request(new("a"), new("a", type_index=0), new("a"), new("a", type_index=5)))
    assert [o.type_index for o in orders] == [1, 0, 2, 5]


def test_handle_histories_know_the_latest_attempt_and_an_open_record() -> None:
    rows = [
        ("done", 0, Status.ORDER_STATUS_CANCELLED),
        ("open", 0, Status.ORDER_STATUS_ONGOING),
        ("done", 2, Status.ORDER_STATUS_COMPLETED),
        ("done", 1, Status.ORDER_STATUS_CANCELLED),
        ("legs", 0, Status.ORDER_STATUS_COMPLETED),
        ("legs", 1, Status.ORDER_STATUS_DISABLED),
        ("legs", 1, Status.ORDER_STATUS_ONGOING),
    ]
    assert handle_histories(rows) == {
        "done": HandleHistory(2, None),
        "open": HandleHistory(0, Status.ORDER_STATUS_ONGOING),
        "legs": HandleHistory(1, Status.ORDER_STATUS_DISABLED),  # the first open record seen
    }
    assert handle_histories([]) == {}


def test_first_attempt_is_zero_and_after_terminal_the_next() -> None:
    history = {"old": HandleHistory(latest_attempt=2)}
    orders = build(request(new("fresh"), new("old"), new("old", type=PICK)), history)
    assert [o.fulfillment_attempt for o in orders] == [0, 3, 3]
    assert orders[1].timeline[1].order_assigned.fulfillment_attempt == 3
    assert orders[1].timeline[2].order_started.fulfillment_attempt == 3


def test_a_handle_with_an_open_record_already_exists() -> None:
    history = {"busy": HandleHistory(latest_attempt=0, open_status=Status.ORDER_STATUS_DISABLED)}
    with pytest.raises(AlreadyExists) as caught:
        build(request(new("fine"), new("busy")), history)
    assert caught.value.reason == "ORDER_ALREADY_TRACKED"
    assert caught.value.metadata == {"order_handle": "busy", "status": "disabled"}
    assert "'busy'" in caught.value.message


def test_radius_defaults_to_100_and_a_given_radius_is_kept() -> None:
    given = order_pb2.Destination(geometry=DEST.geometry, radius=250, address="Here")
    orders = build(request(new("a"), new("b", destination=given)))
    assert orders[0].destination.radius == 100
    assert orders[0].destination.HasField("radius")
    assert orders[1].destination == given


def test_new_order_fields_and_three_events() -> None:
    metadata = json_pb2.JsonObject(
        members=[json_pb2.JsonMember(key="customerID", value=json_pb2.JsonValue(string_value="12654"))]
    )
    scheduled = order_pb2.Order().scheduled_at
    scheduled.FromMilliseconds(NOW_MS + 3_600_000)
    req = request(
        new("a", metadata=metadata, scheduled_at=scheduled, expected_service_time=30, capacity_used=2),
        new("b", type=PICK, product_type="pizza"),
        device_id="dev-1",
        ops_group_handle="store-sf",
        track_mode=order_pb2.TRACK_MODE_FLEX,
    )
    a, b = build(req)
    assert a.status == Status.ORDER_STATUS_ONGOING
    assert a.route_handle == "route-1"
    assert (a.share_url, b.share_url) == ("https://trck.at/0", "https://trck.at/1")
    assert a.worker_handle == "James"
    assert a.device_id == "dev-1"
    assert a.ops_group_handle == "store-sf"
    assert a.track_mode == order_pb2.TRACK_MODE_FLEX
    assert a.metadata == metadata
    assert a.scheduled_at == scheduled
    assert not a.HasField("scheduled_after")
    assert (a.expected_service_time, a.capacity_used) == (30, 2)
    assert not a.HasField("product_type")
    assert b.product_type == "pizza"
    assert not b.HasField("metadata")
    assert a.visited_destination is False
    for stamp in (a.created_at, a.assigned_at, a.started_at):
        assert stamp.ToMilliseconds() == NOW_MS
    for absent in ("cancelled_at", "completed_at", "disabled_at", "end_location", "polyline"):
        assert not a.HasField(absent)
    assert [e.WhichOneof("event") for e in a.timeline] == ["order_created", "order_assigned", "order_started"]
    assert all(e.recorded_at.ToMilliseconds() == NOW_MS for e in a.timeline)
    created, assigned, started = a.timeline
    assert created.order_created == order_pb2.OrderCreatedEvent(order_handle="a", metadata=metadata)
    assert assigned.order_assigned == order_pb2.OrderAssignedEvent(
        order_handle="a", driver_handle="James", fulfillment_attempt=0
    )
    assert started.order_started == order_pb2.OrderStartedEvent(
        order_handle="a", route_handle="route-1", order_type=DROP, fulfillment_attempt=0
    )
    assert b.timeline[2].order_started.order_type == PICK
    assert not b.timeline[0].order_created.HasField("metadata")


def test_unset_request_fields_stay_unset() -> None:
    (order,) = build(request(new("a")))
    assert not order.HasField("device_id")
    assert not order.HasField("ops_group_handle")
    assert order.type == DROP


@pytest.mark.parametrize("name", ["scheduled_at", "scheduled_after"])
@pytest.mark.parametrize(
    ("seconds", "nanos"), [(253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (0, 1_000_000_000)]
)
def test_times_outside_what_iso_8601_spells_are_refused(name: str, seconds: int, nanos: int) -> None:
    order = new("h")
    getattr(order, name).seconds = seconds
    getattr(order, name).nanos = nanos
    assert violations_of(request(order)) == {f"orders[0].{name}": "must be a time from year 1 to year 9999"}


def test_times_at_the_edges_of_iso_8601_pass() -> None:
    order = new("h")
    order.scheduled_at.seconds = 253_402_300_799
    order.scheduled_after.seconds = -62_135_596_800
    validate_track_request(request(order))
