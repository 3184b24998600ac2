"""Track Orders: validate the request and build the new order records of a route."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway.domain.errors import AlreadyExists, FieldViolation, invalid
from gateway.domain.lifecycle import DEFAULT_RADIUS_M, is_open
from gateway.domain.text import status_name
from gateway.domain.validation import (
    MAX_ORDERS_PER_ROUTE,
    check_handle,
    check_metadata,
    check_non_negative,
    check_order_type,
    check_point,
    check_text,
    check_timestamp,
    check_track_mode,
)
from gateway.protos import order_pb2, orders_service_pb2

Status = order_pb2.OrderStatus
OrderType = order_pb2.OrderType


@dataclass(frozen=True, slots=True)
class HandleHistory:
    """What is known of a handle's records: its latest attempt and an open record's status, if any."""

    latest_attempt: int | None
    open_status: int | None = None


def handle_histories(rows: Iterable[tuple[str, int, int]]) -> dict[str, HandleHistory]:
    """What is known of each handle from the (handle, attempt, status) of its existing records."""
    latest: dict[str, int] = {}
    open_status: dict[str, int] = {}
    for handle, attempt, status in rows:
        latest[handle] = max(attempt, latest.get(handle, attempt))
        if is_open(status):
            open_status.setdefault(handle, status)
    return {h: HandleHistory(latest[h], open_status.get(h)) for h in latest}


def validate_track_request(request: orders_service_pb2.TrackOrdersRequest) -> None:
    """Raise InvalidArgument naming every bad field of a TrackOrders request."""
    violations: list[FieldViolation] = []
    check_handle("worker_handle", request.worker_handle, violations)
    if request.HasField("device_id"):
        check_text("device_id", request.device_id, violations)
    if request.HasField("ops_group_handle"):
        check_text("ops_group_handle", request.ops_group_handle, violations)
    check_track_mode("track_mode", request.track_mode, violations)
    if not 1 <= len(request.orders) <= MAX_ORDERS_PER_ROUTE:
        violations.append(FieldViolation("orders", f"must hold 1 to {MAX_ORDERS_PER_ROUTE} orders"))
    legs: set[tuple[str, int, int]] = set()
    for i, new in enumerate(request.orders):
        field = f"orders[{i}]"
        check_handle(f"{field}.order_handle", new.order_handle, violations)
        check_order_type(f"{field}.type", new.type, violations)
        if not new.HasField("destination") or not new.destination.HasField("geometry"):
            violations.append(FieldViolation(f"{field}.destination.geometry", "is required"))
        else:
            check_point(f"{field}.destination.geometry", new.destination.geometry, violations)
        if new.destination.HasField("radius") and new.destination.radius <= 0:
            violations.append(FieldViolation(f"{field}.destination.radius", "must be an integer > 0"))
        if new.destination.HasField("address"):
            check_text(f"{field}.destination.address", new.destination.address, violations)
        for name in ("scheduled_at", "scheduled_after"):
            if new.HasField(name):
                check_timestamp(f"{field}.{name}", getattr(new, name), violations)
        for name in ("type_index", "expected_service_time", "capacity_used"):
            if new.HasField(name):
                check_non_negative(f"{field}.{name}", getattr(new, name), violations)
        if new.HasField("product_type"):
            check_text(f"{field}.product_type", new.product_type, violations)
        if new.HasField("metadata"):
            check_metadata(f"{field}.metadata", new.metadata, violations)
        if new.HasField("type_index"):
            leg = (new.order_handle, new.type or OrderType.ORDER_TYPE_DROP, new.type_index)
            if leg in legs:
                violations.append(FieldViolation(f"{field}.type_index", "names a leg given twice"))
            legs.add(leg)
    if violations:
        raise invalid("INVALID_ARGUMENT", violations)


def _assign_type_indexes(request: orders_service_pb2.TrackOrdersRequest) -> list[int]:
    """Legs of one handle and type get 0, 1, ... in the order given, skipping given indexes."""
    taken: dict[tuple[str, int], set[int]] = {}
    for new in request.orders:
        if new.HasField("type_index"):
            key = (new.order_handle, new.type or OrderType.ORDER_TYPE_DROP)
            taken.setdefault(key, set()).add(new.type_index)
    indexes = []
    for new in request.orders:
        key = (new.order_handle, new.type or OrderType.ORDER_TYPE_DROP)
        if new.HasField("type_index"):
            indexes.append(new.type_index)
            continue
        used = taken.setdefault(key, set())
        index = 0
        while index in used:
            index += 1
        used.add(index)
        indexes.append(index)
    return indexes


def build_orders(
    request: orders_service_pb2.TrackOrdersRequest,
    history: Mapping[str, HandleHistory],
    *,
    now_ms: int,
    route_handle: str,
    new_share_url: Callable[[], str],
) -> list[order_pb2.Order]:
    """The new records of a route, each `ongoing` with its created/assigned/started events.

    A handle with an open record is refused (ALREADY_EXISTS); a handle whose latest
    record is terminal starts its next fulfillment attempt.
    """
    for handle in dict.fromkeys(new.order_handle for new in request.orders):
        past = history.get(handle, HandleHistory(None))
        if past.open_status is not None:
            status = status_name(past.open_status)
            raise AlreadyExists(
                "ORDER_ALREADY_TRACKED",
                f"order {handle!r} has an open record (status {status}); "
                "cancel or complete it before tracking it again",
                {"order_handle": handle, "status": status},
            )
    orders = []
    for new, type_index in zip(request.orders, _assign_type_indexes(request), strict=True):
        past = history.get(new.order_handle, HandleHistory(None))
        attempt = 0 if past.latest_attempt is None else past.latest_attempt + 1
        order_type = new.type or OrderType.ORDER_TYPE_DROP
        order = order_pb2.Order(
            order_handle=new.order_handle,
            fulfillment_attempt=attempt,
            status=Status.ORDER_STATUS_ONGOING,
            destination=new.destination,
            track_mode=request.track_mode,
            type=order_type,
            type_index=type_index,
            share_url=new_share_url(),
            worker_handle=request.worker_handle,
            route_handle=route_handle,
            visited_destination=False,
        )
        if not order.destination.HasField("radius"):
            order.destination.radius = DEFAULT_RADIUS_M
        for name in ("scheduled_at", "scheduled_after", "metadata"):
            if new.HasField(name):
                getattr(order, name).CopyFrom(getattr(new, name))
        for name in ("expected_service_time", "capacity_used", "product_type"):
            if new.HasField(name):
                setattr(order, name, getattr(new, name))
        for name in ("ops_group_handle", "device_id"):
            if request.HasField(name):
                setattr(order, name, getattr(request, name))
        for stamp in (order.created_at, order.assigned_at, order.started_at):
            stamp.FromMilliseconds(now_ms)
        created = order.timeline.add()
        created.recorded_at.FromMilliseconds(now_ms)
        created.order_created.order_handle = new.order_handle
        if new.HasField("metadata"):
            created.order_created.metadata.CopyFrom(new.metadata)
        assigned = order.timeline.add()
        assigned.recorded_at.FromMilliseconds(now_ms)
        assigned.order_assigned.order_handle = new.order_handle
        assigned.order_assigned.driver_handle = request.worker_handle
        assigned.order_assigned.fulfillment_attempt = attempt
        started = order.timeline.add()
        started.recorded_at.FromMilliseconds(now_ms)
        started.order_started.order_handle = new.order_handle
        started.order_started.route_handle = route_handle
        started.order_started.order_type = order_type
        started.order_started.fulfillment_attempt = attempt
        orders.append(order)
    return orders
