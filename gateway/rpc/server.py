"""The grpc.aio server: OrdersService, the standard health service, and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.domain.errors import Unavailable
from gateway.protos import SERVICE_NAME, orders_service_grpc
from gateway.rpc.reflection import add_reflection
from gateway.rpc.servicer import OrdersServicer
from gateway.store.base import OrderStore

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM certificate chain and key; with `client_ca`, clients must present a certificate it signed."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None


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
    ) -> GrpcServer:
        # SO_REUSEPORT only when several workers share the port on purpose; otherwise a
        # second server on the same port must fail to start rather than share it silently.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if reuse_port else 0)])
        orders_service_grpc.add_OrdersServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
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
