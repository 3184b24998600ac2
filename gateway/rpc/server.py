"""The grpc.aio server: OrdersService, the standard health service, and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.domain.errors import Unavailable
from gateway.protos import SERVICE_DESCRIPTOR, SERVICE_NAME
from gateway.rpc.reflection import add_reflection
from gateway.rpc.servicer import MalformedRequest, OrdersServicer
from gateway.store.base import OrderStore

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM certificate chain and key; with `client_ca`, clients must present a certificate it signed."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one gRPC connection, and all of them together, may hold of the server.

    Turned into grpc core's channel arguments by `options`; what each does on grpcio 1.85
    (tests/reliability/test_floods.py holds the measured ones):
    - `max_connections` (grpc.max_allowed_incoming_connections; 0: none): a connection past it
      is closed as soon as it is accepted, so a flood of them cannot exhaust the descriptors;
    - `handshake_timeout_s` (grpc.server_handshake_timeout_ms): a connection that has not
      completed its handshake (for plaintext: sent nothing) is closed after it;
    - `max_connection_idle_s`, `max_connection_age_s`, `max_connection_age_grace_s`: GOAWAY to a
      connection without calls for that long, or open for that long; its calls then get the grace
      to finish before it is closed. Clients reconnect on their own;
    - `max_concurrent_streams` (grpc.max_concurrent_streams, with overload protection): streams
      past it are refused, and streams count until they are freed, not until the client resets
      them, which bounds the memory a flood of HEADERS + RST_STREAM (rapid reset) can hold;
      by grpc core's sources it also takes at most `grpc.http2.max_requests_per_read` new
      streams per read, and stops reading from a peer that does not take the frames it provokes.
      Core sends no GOAWAY for resets themselves: the connection's maximum age ends such a one;
    - keep-alive enforcement: a client pinging without calls, or more often than every
      `min_ping_interval_s`, is sent GOAWAY (too_many_pings) after two strikes; while calls are
      in flight the server pings a silent peer every `keepalive_s` and closes the connection when
      the ping goes unanswered for `keepalive_timeout_s`, so half-open connections do not stay.
    """

    max_connections: int = 0
    handshake_timeout_s: float = 5.0
    max_connection_idle_s: float = 300.0
    max_connection_age_s: float = 3600.0
    max_connection_age_grace_s: float = 30.0
    max_concurrent_streams: int = 100
    min_ping_interval_s: float = 300.0
    keepalive_s: float = 600.0
    keepalive_timeout_s: float = 20.0

    def options(self) -> list[tuple[str, int]]:
        def ms(seconds: float) -> int:
            return max(1, round(seconds * 1000))

        options = [
            ("grpc.server_handshake_timeout_ms", ms(self.handshake_timeout_s)),
            ("grpc.max_connection_idle_ms", ms(self.max_connection_idle_s)),
            ("grpc.max_connection_age_ms", ms(self.max_connection_age_s)),
            ("grpc.max_connection_age_grace_ms", ms(self.max_connection_age_grace_s)),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.http.overload_protection", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", ms(self.min_ping_interval_s)),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.keepalive_time_ms", ms(self.keepalive_s)),
            ("grpc.keepalive_timeout_ms", ms(self.keepalive_timeout_s)),
        ]
        if self.max_connections > 0:
            options.append(("grpc.max_allowed_incoming_connections", self.max_connections))
        return options


class DatabaseHealth:
    """The gRPC health status of the service, following whether the store answers."""

    def __init__(self, store: OrderStore, servicer: health.aio.HealthServicer, interval_s: float) -> None:
        self._store = store
        self._servicer = servicer
        self._interval_s = interval_s
        self.serving = False

    async def check(self) -> bool:
        try:
            await self._store.ping()
            serving = True
        except Unavailable as error:
            serving = False
            if self.serving:
                log.warning("store unavailable, health NOT_SERVING: %s", error)
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self._servicer.set(name, status)
        self.serving = serving
        return serving

    async def watch(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)


def _lenient_parser(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    def parse(data: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return MalformedRequest(str(error))

    return parse


def add_orders_service(servicer: OrdersServicer, server: grpc.aio.Server) -> None:
    """Register OrdersService as the generated code would, but with request parsers that hand
    undecodable bytes to the servicer as a MalformedRequest (INVALID_ARGUMENT with details)."""
    handlers = {
        # WatchOrderEvents streams its responses; every other method answers once.
        method.name: (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )(
            getattr(servicer, method.name),
            request_deserializer=_lenient_parser(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
        for method in SERVICE_DESCRIPTOR.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    # Registered methods skip the generic lookup per call (grpcio >= 1.62 generated code does both).
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class GrpcServer:
    """A started grpc.aio server. `port` is the bound port (useful with port 0)."""

    def __init__(self, server: grpc.aio.Server, port: int, health_check: DatabaseHealth) -> None:
        self.server = server
        self.port = port
        self.health = health_check
        self._watcher = asyncio.get_running_loop().create_task(health_check.watch())

    @classmethod
    async def start(
        cls,
        servicer: OrdersServicer,
        store: OrderStore,
        *,
        host: str,
        port: int,
        reuse_port: bool = False,
        tls: ServerTls | None = None,
        health_interval_s: float = 2.0,
        limits: ConnectionLimits | None = None,
    ) -> GrpcServer:
        # SO_REUSEPORT only when several workers share the port on purpose; otherwise a
        # second server on the same port must fail to start rather than share it silently.
        options = [("grpc.so_reuseport", 1 if reuse_port else 0), *(limits or ConnectionLimits()).options()]
        server = grpc.aio.server(options=options)
        add_orders_service(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        add_reflection(server, [SERVICE_NAME, HEALTH_SERVICE])
        address = f"{host}:{port}"
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.private_key, tls.certificate_chain)],
                root_certificates=tls.client_ca,
                require_client_auth=tls.client_ca is not None,
            )
            bound = server.add_secure_port(address, credentials)
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        health_check = DatabaseHealth(store, health_servicer, health_interval_s)
        await health_check.check()
        await server.start()
        return cls(server, bound, health_check)

    async def stop(self, grace_s: float) -> None:
        """Stop taking calls, let calls in flight finish within `grace_s`, then stop."""
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        await self.server.stop(grace_s)
