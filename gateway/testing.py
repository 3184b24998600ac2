"""Run the whole gateway inside a test's event loop: a real SQLite file, a gRPC server and a
REST server on free loopback ports, with either backend. Shipped with the product so that
anyone extending it can test against the real thing in a few lines:

    async with GatewayStack.start(tmp_path, backend="remote") as stack:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{stack.rest_url}/orders/order-1/cancel", headers=stack.rest_auth())
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from gateway.demo import DEMO_ACCOUNT, DEMO_SECRET, install_demo
from gateway.observability.metrics import InstrumentedStore, Metrics
from gateway.protos import SERVICE_DESCRIPTOR
from gateway.rpc.stubs import orders_service_grpc
from gateway.rest.app import RestGateway, RestSettings
from gateway.rest.backend import Backend, InProcessBackend, RemoteBackend
from gateway.rest.openapi import openapi_document
from gateway.rest.ops import ops_routes
from gateway.rest.rules import rest_calls
from gateway.rest.server import RestServer
from gateway.rpc.server import GrpcServer
from gateway.rpc.servicer import Admission, OrdersServicer
from gateway.calls.auth import Authenticator
from gateway.calls.credentials import hash_secret, new_secret
from gateway.calls.orders import OrderCalls
from gateway.store.base import OrderStore
from gateway.store.sqlite import SqliteStore

BackendKind = Literal["in-process", "remote"]


def basic(account_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{account_id}:{secret}".encode()).decode()


@dataclass
class GatewayStack:
    """A running gateway: `rest_url`, `grpc_target`, the store, and the demo credentials."""

    store: OrderStore
    grpc_server: GrpcServer
    rest_server: RestServer
    backend: Backend
    metrics: Metrics
    database_path: Path
    account_id: str = DEMO_ACCOUNT
    secret: str = DEMO_SECRET
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_server.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_server.port}"

    def rest_auth(self, account_id: str | None = None, secret: str | None = None) -> dict[str, str]:
        return {"Authorization": basic(account_id or self.account_id, secret or self.secret)}

    def grpc_auth(
        self, account_id: str | None = None, secret: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        return (("authorization", basic(account_id or self.account_id, secret or self.secret)),)

    def stub(self) -> orders_service_grpc.OrdersServiceStub:
        """A client of the gRPC server over a real socket (closed with the stack)."""
        channel = grpc.aio.insecure_channel(self.grpc_target)
        self._channels.append(channel)
        return orders_service_grpc.OrdersServiceStub(channel)  # type: ignore[no-untyped-call]

    async def create_account(self, account_id: str) -> tuple[str, str]:
        secret = new_secret()
        await self.store.create_account(account_id, hash_secret(secret))
        return account_id, secret

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        directory: Path,
        *,
        backend: BackendKind = "in-process",
        settings: RestSettings | None = None,
        clock: Callable[[], int] | None = None,
        store: OrderStore | None = None,
        admission: Admission | None = None,
    ) -> AsyncIterator[GatewayStack]:
        database_path = directory / "gateway.db"
        metrics = Metrics()
        store = InstrumentedStore(store or await SqliteStore.open(database_path), metrics)
        await install_demo(store)
        calls = OrderCalls(store) if clock is None else OrderCalls(store, clock=clock)
        servicer = OrdersServicer(
            calls, Authenticator(store), admission=admission, observe=metrics.observe_call
        )
        grpc_server = await GrpcServer.start(servicer, store, host="127.0.0.1", port=0)
        chosen: Backend
        if backend == "in-process":
            chosen = InProcessBackend(servicer, grpc_server.health)
        else:
            chosen = RemoteBackend(
                f"127.0.0.1:{grpc_server.port}", SERVICE_DESCRIPTOR, rest_calls(SERVICE_DESCRIPTOR)
            )
        gateway = RestGateway(
            chosen,
            settings,
            extra_routes=ops_routes(
                metrics,
                {"database": grpc_server.health.check, "grpc_backend": chosen.ready},
                openapi_document(),
            ),
            observer=metrics.observe_request,
        )
        rest_server = await RestServer.start(gateway, host="127.0.0.1", port=0, grace_s=2.0)
        stack = cls(store, grpc_server, rest_server, chosen, metrics, database_path)
        try:
            yield stack
        finally:
            await rest_server.stop()
            await grpc_server.stop(1.0)
            for channel in stack._channels:
                await channel.close()
            await chosen.close()
            await store.close()
