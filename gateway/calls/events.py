"""The `order` event of a change: what the outbox keeps, the webhook sends and the watch streams.

Built inside the change's transaction from the order as it is after the change, so the event says
exactly what was committed (its metadata as stored, its status).
"""

from __future__ import annotations

import time

from gateway.protos import events_pb2, order_pb2
from gateway.store.events import EventWrite

EVENT_TYPE = "order"
EVENT_VERSION = "3.0.0"


def _now_us() -> int:
    return time.time_ns() // 1_000


def order_event(
    account_id: str, order: order_pb2.Order, recorded_at_us: int, created_at_us: int
) -> events_pb2.OrderEvent:
    """The event telling that `order` (as it is after the change) reached its status."""
    event = events_pb2.OrderEvent(account_id=account_id, type=EVENT_TYPE, version=EVENT_VERSION)
    event.created_at.FromMicroseconds(created_at_us)
    event.recorded_at.FromMicroseconds(recorded_at_us)
    if order.HasField("device_id"):
        event.device_id = order.device_id
    if order.HasField("worker_handle"):
        event.worker_handle = order.worker_handle
    data = event.data
    data.order_handle = order.order_handle
    if order.HasField("route_handle"):
        data.route_handle = order.route_handle
    data.value = order.status
    data.status = order.status
    if order.HasField("share_url"):
        data.share_url = order.share_url
    data.metadata.CopyFrom(order.metadata)
    if order.HasField("distance"):
        data.distance = order.distance
    data.duration = order.duration
    data.fulfillment_attempt = order.fulfillment_attempt
    data.type = order.type
    data.type_index = order.type_index
    return event


def event_write(account_id: str, order: order_pb2.Order, recorded_at_ms: int) -> EventWrite:
    """The outbox row of the change that brought `order` to its status at `recorded_at_ms`."""
    recorded_at_us = recorded_at_ms * 1_000
    event = order_event(account_id, order, recorded_at_us, _now_us())
    return EventWrite(order.fulfillment_attempt, order.status, recorded_at_us, event.SerializeToString())
