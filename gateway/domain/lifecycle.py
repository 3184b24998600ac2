"""Status changes of an order: cancel, complete, disable, and the metadata they merge.

Each rule changes the order in place and returns whether it changed anything, so the
store writes only real changes; a rule that refuses raises before touching the order.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from gateway.domain.errors import FailedPrecondition
from gateway.domain.geo import haversine_m
from gateway.domain.text import status_name
from gateway.protos import json_pb2, order_pb2

# The module's constants, not order_pb2.OrderStatus.X: each of those is a Python-level lookup in
# protobuf's enum wrapper, a few of them on every cancel.
ONGOING = order_pb2.ORDER_STATUS_ONGOING
DISABLED = order_pb2.ORDER_STATUS_DISABLED
COMPLETED = order_pb2.ORDER_STATUS_COMPLETED
CANCELLED = order_pb2.ORDER_STATUS_CANCELLED
DEFAULT_RADIUS_M = 100
TERMINAL_STATUSES = frozenset({COMPLETED, CANCELLED})


def is_open(status: int) -> bool:
    return status not in TERMINAL_STATUSES


def merge_metadata(order: order_pb2.Order, update: json_pb2.JsonObject) -> None:
    """Merge `update`'s members into the order's metadata; a given key replaces the same key."""
    if not update.members:
        return
    members = order.metadata.members
    position = {member.key: i for i, member in enumerate(members)}
    for member in update.members:
        if member.key in position:
            members[position[member.key]].value.CopyFrom(member.value)
        else:
            position[member.key] = len(members)
            members.add().CopyFrom(member)


def _refuse(order: order_pb2.Order, reason: str, action: str) -> FailedPrecondition:
    status = status_name(order.status)
    return FailedPrecondition(
        reason,
        f"order {order.order_handle!r} is {status} and cannot be {action}",
        {"order_handle": order.order_handle, "status": status},
    )


def _set_millis(stamp: timestamp_pb2.Timestamp, epoch_ms: int) -> None:
    """`stamp.FromMilliseconds(epoch_ms)` without its range checks, which run in Python: the
    times set here come from the clock."""
    seconds, millis = divmod(epoch_ms, 1000)
    stamp.seconds = seconds
    stamp.nanos = millis * 1_000_000


def _append_event(order: order_pb2.Order, now_ms: int) -> order_pb2.TimelineEvent:
    event = order.timeline.add()
    _set_millis(event.recorded_at, now_ms)
    return event


def _fill_order_event(
    event: order_pb2.OrderCancelledEvent | order_pb2.OrderCompletedEvent | order_pb2.OrderDisabledEvent,
    order: order_pb2.Order,
) -> None:
    event.order_handle = order.order_handle
    if order.HasField("route_handle"):
        event.route_handle = order.route_handle
    event.fulfillment_attempt = order.fulfillment_attempt


def last_tracked_location(order: order_pb2.Order) -> order_pb2.Point | None:
    """The last position of the order's polyline, if it was tracked at all."""
    if not order.polyline.points:
        return None
    last = order.polyline.points[-1]
    return order_pb2.Point(longitude=last.longitude, latitude=last.latitude)


def within_destination(order: order_pb2.Order, point: order_pb2.Point) -> bool:
    """Whether `point` lies within the destination's radius, by great-circle distance."""
    if not order.destination.HasField("geometry"):
        return False
    target = order.destination.geometry
    distance = haversine_m(point.longitude, point.latitude, target.longitude, target.latitude)
    radius = order.destination.radius if order.destination.HasField("radius") else DEFAULT_RADIUS_M
    return distance <= radius


def cancel(order: order_pb2.Order, update: json_pb2.JsonObject, now_ms: int) -> bool:
    """Cancel the order: idempotent on a cancelled order, refused on a completed one."""
    if order.status == CANCELLED:
        return False
    if order.status == COMPLETED:
        raise _refuse(order, "ORDER_COMPLETED", "cancelled")
    merge_metadata(order, update)
    order.status = CANCELLED
    _set_millis(order.cancelled_at, now_ms)
    location = last_tracked_location(order)
    if location is not None:
        order.end_location.CopyFrom(location)
    order.cancelled_at_destination = location is not None and within_destination(order, location)
    _fill_order_event(_append_event(order, now_ms).order_cancelled, order)
    return True


def complete(order: order_pb2.Order, update: json_pb2.JsonObject, now_ms: int) -> bool:
    """Complete the order: idempotent on a completed order, refused on a cancelled one."""
    if order.status == COMPLETED:
        return False
    if order.status == CANCELLED:
        raise _refuse(order, "ORDER_CANCELLED", "completed")
    merge_metadata(order, update)
    order.status = COMPLETED
    _set_millis(order.completed_at, now_ms)
    _fill_order_event(_append_event(order, now_ms).order_completed, order)
    return True


def disable(order: order_pb2.Order, update: json_pb2.JsonObject, now_ms: int) -> bool:
    """Take an ongoing order out of the route: idempotent on a disabled order, refused otherwise."""
    if order.status == DISABLED:
        return False
    if order.status != ONGOING:
        reason = {
            CANCELLED: "ORDER_CANCELLED",
            COMPLETED: "ORDER_COMPLETED",
        }.get(order.status, "ORDER_NOT_ONGOING")
        raise _refuse(order, reason, "disabled")
    merge_metadata(order, update)
    order.status = DISABLED
    _set_millis(order.disabled_at, now_ms)
    _fill_order_event(_append_event(order, now_ms).order_disabled, order)
    return True
