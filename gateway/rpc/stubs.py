"""The generated gRPC service stubs and servicer base of OrdersService (these load `grpc`)."""

from gateway.gen.hypertrack.orders.v1 import orders_service_pb2_grpc as orders_service_grpc

__all__ = ["orders_service_grpc"]
