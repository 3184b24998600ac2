"""The status rules: cancel, complete, disable, the metadata they merge, and where an order ended."""

from __future__ import annotations

import pytest

from gateway.domain import lifecycle
from gateway.domain.errors import FailedPrecondition
from gateway.protos import json_pb2, order_pb2

NOW_MS = 1_698_284_223_650  # 2023-10-26T01:37:03.650Z
Status = order_pb2.OrderStatus
DEST = order_pb2.Point(longitude=-121.8610066, latitude=37.3263062)
METRES_PER_DEGREE_LAT = 111_195.0


def jobj(**members: json_pb2.JsonValue) -> json_pb2.JsonObject:
    return json_pb2.JsonObject(members=[json_pb2.JsonMember(key=k, value=v) for k, v in members.items()])


def integer(n: int) -> json_pb2.JsonValue:
    return json_pb2.JsonValue(integer_value=n)


def text(s: str) -> json_pb2.JsonValue:
    return json_pb2.JsonValue(string_value=s)


def north_of_dest(metres: float) -> tuple[float, float]:
    return DEST.longitude, DEST.latitude + metres / METRES_PER_DEGREE_LAT


def make_order(
    status: order_pb2.OrderStatus = Status.ORDER_STATUS_ONGOING,
    *,
    track: list[tuple[float, float]] | None = None,
    radius: int | None = 100,
) -> order_pb2.Order:
    order = order_pb2.Order(
        order_handle="h-1",
        fulfillment_attempt=2,
        status=status,
        destination=order_pb2.Destination(geometry=DEST),
        route_handle="route-9",
        metadata=jobj(a=integer(1), b=text("x")),
    )
    if radius is not None:
        order.destination.radius = radius
    for lon, lat in track or []:
        order.polyline.points.add(longitude=lon, latitude=lat, altitude=10.0)
    return order


def event_types(order: order_pb2.Order) -> list[str | None]:
    return [e.WhichOneof("event") for e in order.timeline]


# merge_metadata


def test_merge_replaces_in_place_and_appends_new_keys() -> None:
    order = make_order()
    lifecycle.merge_metadata(order, jobj(c=integer(3), a=text("one"), d=integer(4)))
    assert [m.key for m in order.metadata.members] == ["a", "b", "c", "d"]
    assert order.metadata.members[0].value == text("one")
    assert order.metadata.members[1].value == text("x")
    assert order.metadata.members[2].value.WhichOneof("kind") == "integer_value"
    assert order.metadata.members[3].value.integer_value == 4


def test_merge_of_nothing_changes_nothing() -> None:
    order = make_order()
    before = order_pb2.Order()
    before.CopyFrom(order)
    lifecycle.merge_metadata(order, json_pb2.JsonObject())
    assert order == before


def test_merge_into_empty_metadata() -> None:
    order = order_pb2.Order(order_handle="h")
    lifecycle.merge_metadata(order, jobj(k=json_pb2.JsonValue(null_value="NULL_VALUE")))
    assert order.HasField("metadata")
    assert order.metadata.members[0].value.WhichOneof("kind") == "null_value"


def test_merge_replaces_a_nested_object_whole() -> None:
    order = order_pb2.Order(
        metadata=jobj(n=json_pb2.JsonValue(object_value=jobj(x=integer(1), y=integer(2))))
    )
    lifecycle.merge_metadata(order, jobj(n=json_pb2.JsonValue(object_value=jobj(z=integer(3)))))
    assert [m.key for m in order.metadata.members[0].value.object_value.members] == ["z"]


# last_tracked_location / within_destination


def test_last_tracked_location_is_the_last_polyline_point() -> None:
    order = make_order(track=[(1.0, 2.0), (3.0, 4.0), (5.5, 6.5)])
    assert lifecycle.last_tracked_location(order) == order_pb2.Point(longitude=5.5, latitude=6.5)


def test_last_tracked_location_of_an_untracked_order_is_none() -> None:
    assert lifecycle.last_tracked_location(make_order()) is None


@pytest.mark.parametrize(
    ("metres", "radius", "inside"),
    [
        (0, 100, True),
        (50, 100, True),
        (99, 100, True),
        (101, 100, False),
        (150, 200, True),
        (5000, 100, False),
    ],
)
def test_within_destination_by_radius(metres: float, radius: int, inside: bool) -> None:
    order = make_order(radius=radius)
    lon, lat = north_of_dest(metres)
    assert lifecycle.within_destination(order, order_pb2.Point(longitude=lon, latitude=lat)) is inside


def test_within_destination_defaults_to_100_metres() -> None:
    order = make_order(radius=None)
    assert lifecycle.within_destination(
        order, order_pb2.Point(longitude=DEST.longitude, latitude=north_of_dest(90)[1])
    )
    assert not lifecycle.within_destination(
        order, order_pb2.Point(longitude=DEST.longitude, latitude=north_of_dest(110)[1])
    )


def test_within_destination_without_a_destination_is_false() -> None:
    order = order_pb2.Order(order_handle="h")
    assert not lifecycle.within_destination(order, order_pb2.Point(longitude=0.0, latitude=0.0))


# cancel


def test_cancel_an_ongoing_tracked_order() -> None:
    order = make_order(track=[north_of_dest(10), north_of_dest(5000)])
    assert lifecycle.cancel(order, jobj(b=integer(2)), NOW_MS) is True
    assert order.status == Status.ORDER_STATUS_CANCELLED
    assert order.cancelled_at.ToMilliseconds() == NOW_MS
    lon, lat = north_of_dest(5000)
    assert order.end_location == order_pb2.Point(longitude=lon, latitude=lat)
    assert order.HasField("cancelled_at_destination")
    assert order.cancelled_at_destination is False  # the last point counts, not an earlier one
    assert event_types(order) == ["order_cancelled"]
    event = order.timeline[0]
    assert event.recorded_at.ToMilliseconds() == NOW_MS
    assert event.order_cancelled == order_pb2.OrderCancelledEvent(
        order_handle="h-1", route_handle="route-9", fulfillment_attempt=2
    )
    assert order.metadata.members[1].value.integer_value == 2


def test_cancel_within_the_radius_is_at_destination() -> None:
    order = make_order(track=[north_of_dest(5000), north_of_dest(40)])
    lifecycle.cancel(order, json_pb2.JsonObject(), NOW_MS)
    assert order.cancelled_at_destination is True


def test_cancel_of_an_untracked_order_has_no_end_location() -> None:
    order = make_order()
    lifecycle.cancel(order, json_pb2.JsonObject(), NOW_MS)
    assert not order.HasField("end_location")
    assert order.cancelled_at_destination is False


def test_cancel_without_route_handle_leaves_it_out_of_the_event() -> None:
    order = make_order()
    order.ClearField("route_handle")
    lifecycle.cancel(order, json_pb2.JsonObject(), NOW_MS)
    assert not order.timeline[0].order_cancelled.HasField("route_handle")


@pytest.mark.parametrize(
    "status",
    [
        Status.ORDER_STATUS_UNPLANNED,
        Status.ORDER_STATUS_PLANNED,
        Status.ORDER_STATUS_ASSIGNED,
        Status.ORDER_STATUS_DISPATCHED,
        Status.ORDER_STATUS_ONGOING,
        Status.ORDER_STATUS_DISABLED,
    ],
)
def test_cancel_any_open_status(status: order_pb2.OrderStatus) -> None:
    order = make_order(status)
    assert lifecycle.cancel(order, json_pb2.JsonObject(), NOW_MS)
    assert order.status == Status.ORDER_STATUS_CANCELLED


def test_cancel_again_changes_nothing() -> None:
    order = make_order(track=[north_of_dest(10)])
    lifecycle.cancel(order, json_pb2.JsonObject(), NOW_MS)
    after_first = order_pb2.Order()
    after_first.CopyFrom(order)
    assert lifecycle.cancel(order, jobj(z=integer(9)), NOW_MS + 60_000) is False
    assert order == after_first


def test_cancel_of_a_completed_order_is_refused_untouched() -> None:
    order = make_order(Status.ORDER_STATUS_COMPLETED)
    before = order_pb2.Order()
    before.CopyFrom(order)
    with pytest.raises(FailedPrecondition) as caught:
        lifecycle.cancel(order, jobj(z=integer(9)), NOW_MS)
    assert caught.value.reason == "ORDER_COMPLETED"
    assert caught.value.metadata == {"order_handle": "h-1", "status": "completed"}
    assert caught.value.message == "order 'h-1' is completed and cannot be cancelled"
    assert order == before


# complete


def test_complete_an_open_order() -> None:
    order = make_order(Status.ORDER_STATUS_DISABLED)
    assert lifecycle.complete(order, jobj(c=integer(3)), NOW_MS) is True
    assert order.status == Status.ORDER_STATUS_COMPLETED
    assert order.completed_at.ToMilliseconds() == NOW_MS
    assert not order.HasField("cancelled_at")
    assert event_types(order) == ["order_completed"]
    assert order.timeline[0].order_completed == order_pb2.OrderCompletedEvent(
        order_handle="h-1", route_handle="route-9", fulfillment_attempt=2
    )
    assert [m.key for m in order.metadata.members] == ["a", "b", "c"]


def test_complete_again_changes_nothing() -> None:
    order = make_order()
    lifecycle.complete(order, json_pb2.JsonObject(), NOW_MS)
    after_first = order_pb2.Order()
    after_first.CopyFrom(order)
    assert lifecycle.complete(order, json_pb2.JsonObject(), NOW_MS + 1) is False
    assert order == after_first


def test_complete_of_a_cancelled_order_is_refused() -> None:
    order = make_order(Status.ORDER_STATUS_CANCELLED)
    before = order_pb2.Order()
    before.CopyFrom(order)
    with pytest.raises(FailedPrecondition) as caught:
        lifecycle.complete(order, jobj(z=integer(1)), NOW_MS)
    assert caught.value.reason == "ORDER_CANCELLED"
    assert caught.value.metadata == {"order_handle": "h-1", "status": "cancelled"}
    assert order == before


# disable


def test_disable_an_ongoing_order() -> None:
    order = make_order()
    assert lifecycle.disable(order, json_pb2.JsonObject(), NOW_MS) is True
    assert order.status == Status.ORDER_STATUS_DISABLED
    assert order.disabled_at.ToMilliseconds() == NOW_MS
    assert event_types(order) == ["order_disabled"]
    assert order.timeline[0].order_disabled.fulfillment_attempt == 2


def test_disable_again_changes_nothing() -> None:
    order = make_order()
    lifecycle.disable(order, json_pb2.JsonObject(), NOW_MS)
    after_first = order_pb2.Order()
    after_first.CopyFrom(order)
    assert lifecycle.disable(order, json_pb2.JsonObject(), NOW_MS + 1) is False
    assert order == after_first


@pytest.mark.parametrize(
    ("status", "reason", "name"),
    [
        (Status.ORDER_STATUS_CANCELLED, "ORDER_CANCELLED", "cancelled"),
        (Status.ORDER_STATUS_COMPLETED, "ORDER_COMPLETED", "completed"),
        (Status.ORDER_STATUS_ASSIGNED, "ORDER_NOT_ONGOING", "assigned"),
        (Status.ORDER_STATUS_UNPLANNED, "ORDER_NOT_ONGOING", "unplanned"),
        (Status.ORDER_STATUS_PLANNED, "ORDER_NOT_ONGOING", "planned"),
        (Status.ORDER_STATUS_DISPATCHED, "ORDER_NOT_ONGOING", "dispatched"),
    ],
)
def test_disable_refuses_all_but_ongoing(status: order_pb2.OrderStatus, reason: str, name: str) -> None:
    order = make_order(status)
    before = order_pb2.Order()
    before.CopyFrom(order)
    with pytest.raises(FailedPrecondition) as caught:
        lifecycle.disable(order, jobj(z=integer(1)), NOW_MS)
    assert caught.value.reason == reason
    assert caught.value.metadata == {"order_handle": "h-1", "status": name}
    assert order == before


def test_is_open() -> None:
    assert lifecycle.is_open(Status.ORDER_STATUS_DISABLED)
    assert not lifecycle.is_open(Status.ORDER_STATUS_CANCELLED)
    assert not lifecycle.is_open(Status.ORDER_STATUS_COMPLETED)
