"""Run the whole gateway inside a test's event loop: a real SQLite file, a gRPC server and a
REST server on free loopback ports, with either backend. Shipped with the product so that
anyone extending it can test against the real thing in a few lines:

    async with GatewayStack.start(tmp_path, backend="remote") as stack:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{stack.rest_url}/orders/order-1/cancel", headers=stack.rest_auth())
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from gateway.assembly import Clock, Gateway, assemble
from gateway.calls.credentials import hash_secret, new_secret
from gateway.demo import DEMO_ACCOUNT, DEMO_SECRET
from gateway.events.delivery import DeliveryWorker, WebhookSettings
from gateway.events.hub import WatchSettings
from gateway.observability.metrics import Metrics
from gateway.rest.app import RestSettings
from gateway.rest.backend import Backend
from gateway.rest.server import RestServer
from gateway.rpc.server import GrpcServer
from gateway.rpc.stubs import orders_service_grpc
from gateway.settings import (
    AdmissionSettings,
    BackendSettings,
    GatewaySettings,
    ListenSettings,
    LogSettings,
    ServerTlsFiles,
    StoreSettings,
)
from gateway.store.base import Store

BackendKind = Literal["in-process", "remote"]

STACK_GRACE_S = 2.0
NO_LIMITS = AdmissionSettings(auth_failure_limit=0)
"""The stack's default admission: tests that try many bad credentials must not lock each other out."""
LOOPBACK_FRONT_END = ipaddress.ip_network("127.0.0.1/32")
"""Where the remote stack's `http` calls its `grpc` from: the `grpc` part trusts it, as a `grpc`
with an `http` on the same host is told to (`--trusted-proxies 127.0.0.1/32`)."""


def basic(account_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{account_id}:{secret}".encode()).decode()


def stack_settings(
    directory: Path,
    *,
    rest: RestSettings | None = None,
    admission: AdmissionSettings = NO_LIMITS,
    tls: ServerTlsFiles | None = None,
    access_log: bool = False,
    webhooks: WebhookSettings | None = None,
    watch: WatchSettings | None = None,
) -> GatewaySettings:
    """The settings of a test's `serve`: free loopback ports, a database in `directory`, the demo
    data, and otherwise production's settings unless a test names its own (short webhook retry
    intervals, a small watch queue, say)."""
    return GatewaySettings(
        mode="serve",
        listen=ListenSettings(host="127.0.0.1", http_port=0, grpc_port=0, tls=tls),
        store=StoreSettings(f"sqlite:///{directory / 'gateway.db'}", demo=True),
        rest=rest or RestSettings(),
        admission=admission,
        logging=LogSettings(access_log=access_log),
        webhooks=webhooks or WebhookSettings(),
        watch=watch or WatchSettings(),
        grace_s=STACK_GRACE_S,
    )


@dataclass
class GatewayStack:
    """A running gateway: `rest_url`, `grpc_target`, the store, and the demo credentials.

    With the in-process backend it is one `serve`; with the remote backend, a `grpc` and an `http`
    in front of it, as separate gateways of the same assembly (in this process).
    """

    settings: GatewaySettings
    server: Gateway
    """The part that owns the store and serves gRPC."""
    front: Gateway
    """The part that serves REST (the same as `server` with the in-process backend)."""
    account_id: str = DEMO_ACCOUNT
    secret: str = DEMO_SECRET
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def store(self) -> Store:
        assert self.server.store is not None
        return self.server.store

    @property
    def delivery(self) -> DeliveryWorker:
        """The webhook delivery worker of the part that owns the store."""
        assert self.server.delivery is not None
        return self.server.delivery

    @property
    def grpc_server(self) -> GrpcServer:
        assert self.server.grpc is not None
        return self.server.grpc

    @property
    def rest_server(self) -> RestServer:
        assert self.front.rest is not None
        return self.front.rest

    @property
    def backend(self) -> Backend:
        assert self.front.backend is not None
        return self.front.backend

    @property
    def metrics(self) -> Metrics:
        """The REST front end's metrics."""
        return self.front.metrics

    @property
    def database_path(self) -> Path:
        return Path(self.settings.store.database.removeprefix("sqlite:///"))

    @property
    def rest_url(self) -> str:
        scheme = "https" if self.settings.listen.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.rest_server.port}"

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
        if self.server.authenticator is not None:  # not left thinking the account does not exist
            self.server.authenticator.account_changed(account_id)
        return account_id, secret

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        directory: Path,
        *,
        backend: BackendKind = "in-process",
        rest: RestSettings | None = None,
        admission: AdmissionSettings = NO_LIMITS,
        tls: ServerTlsFiles | None = None,
        access_log: bool = False,
        clock: Clock | None = None,
        store: Store | None = None,
        webhooks: WebhookSettings | None = None,
        watch: WatchSettings | None = None,
    ) -> AsyncIterator[GatewayStack]:
        """Start the stack; `store` replaces the SQLite file (a test's wrapper around one, say)."""
        settings = stack_settings(
            directory,
            rest=rest,
            admission=admission,
            tls=tls,
            access_log=access_log,
            webhooks=webhooks,
            watch=watch,
        )
        async with AsyncExitStack() as parts:
            if backend == "in-process":
                server = front = await assemble(settings, store=store, clock=clock)
                parts.push_async_callback(server.stop)
            else:
                if tls is not None:
                    raise ValueError("the remote stack's front end has no client TLS settings")
                trusted = (*admission.trusted_proxies, LOOPBACK_FRONT_END)
                behind = dataclasses.replace(admission, trusted_proxies=trusted)
                server = await assemble(
                    dataclasses.replace(settings, mode="grpc", admission=behind), store=store, clock=clock
                )
                parts.push_async_callback(server.stop)
                target = BackendSettings(f"127.0.0.1:{server.grpc_port}")
                front = await assemble(dataclasses.replace(settings, mode="http", backend=target))
                parts.push_async_callback(front.stop)
            stack = cls(settings, server, front)
            try:
                yield stack
            finally:
                for channel in stack._channels:
                    await channel.close()
