"""The generated protobuf message modules and descriptors, under short names.

Messages only: the gRPC service stubs (which load `grpc`) are imported by the transports that
need them, from `gateway.rpc.stubs`, so that the domain and the JSON mapping run without grpc.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from gateway.gen.hypertrack.orders.v1 import (
    annotations_pb2,
    events_pb2,
    json_pb2,
    order_pb2,
    orders_service_pb2,
)

SERVICE_DESCRIPTOR = orders_service_pb2.DESCRIPTOR.services_by_name["OrdersService"]
SERVICE_NAME = SERVICE_DESCRIPTOR.full_name


def protoset_path() -> Path:
    """The descriptor set of the service with all its imports (for `ghz --protoset`)."""
    return Path(str(resources.files("gateway.gen").joinpath("orders.protoset")))


__all__ = [
    "SERVICE_DESCRIPTOR",
    "SERVICE_NAME",
    "annotations_pb2",
    "events_pb2",
    "json_pb2",
    "order_pb2",
    "orders_service_pb2",
    "protoset_path",
]
