"""Server reflection (v1alpha, and v1 on the same messages) that also answers for method names.

grpcio's stock servicer answers NOT_FOUND when asked for the file containing a method
symbol such as `hypertrack.orders.v1.OrdersService.CancelOrder` (grpc/grpc#34743),
which is what ghz asks for `--call`. Here a method name resolves to its service's file.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"


class MethodAwareReflectionServicer(reflection_aio.ReflectionServicer):  # type: ignore[misc]
    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response"):
            service_name, _, method_name = fully_qualified_name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                return response
            if method_name in service.methods_by_name:
                return super()._file_containing_symbol(request, service_name)
        return response


def add_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection for `service_names` under both the v1alpha and the v1 service names."""
    servicer = MethodAwareReflectionServicer([*service_names, V1ALPHA_SERVICE])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    # v1 is v1alpha renamed: the same messages on the wire, so one servicer serves both.
    v1_handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1_handler}),)
    )
