"""Names of enum values as the contract writes them (`ORDER_STATUS_CANCELLED` is `cancelled`)."""

from __future__ import annotations

from gateway.protos import order_pb2

_STATUS_PREFIX = "ORDER_STATUS_"
_TYPE_PREFIX = "ORDER_TYPE_"


def status_name(status: int) -> str:
    return order_pb2.OrderStatus.Name(status).removeprefix(_STATUS_PREFIX).lower()


def type_name(order_type: int) -> str:
    return order_pb2.OrderType.Name(order_type).removeprefix(_TYPE_PREFIX).lower()
