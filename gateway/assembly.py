"""The one place the gateway is put together: settings in, running servers out.

`serve`, `grpc`, `http`, the tests' `GatewayStack` and the benchmark all call `assemble`, so
what the tests run is the wiring production runs; they differ only by the settings (and the
clock or store) they hand in. The parts, from the inside out:

    store -> OrderCalls -> OrdersServicer -> gRPC server          (serve, grpc)
    store's outbox -> DeliveryWorker -> each account's webhook     (serve, grpc)
    store's outbox -> EventHub -> WatchOrderEvents streams; WebhookReplay -> ListOrderWebhooks
    backend (the servicer in-process, or gRPC servers) -> RestGateway -> REST server   (serve, http)
    /healthz, /readyz, /metrics -> the admin listener (--admin-port; else on the REST server)
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from gateway.calls.admission import Admission
from gateway.calls.auth import Authenticator
from gateway.calls.limits import AccountRateLimit, AuthFailureLimit
from gateway.calls.orders import OrderCalls
from gateway.calls.replay import WebhookReplay
from gateway.demo import install_demo
from gateway.descriptors import connection_caps, grpc_limits
from gateway.domain.errors import OrderError, Unavailable
from gateway.events.delivery import DeliveryWorker
from gateway.events.hub import EventHub
from gateway.observability.grpc_access import ServedCalls
from gateway.observability.logs import AccessLog
from gateway.observability.metrics import Metrics
from gateway.openapi import openapi_document
from gateway.protos import SERVICE_DESCRIPTOR, SERVICE_NAME
from gateway.rest.app import Handler, RequestObserver, RestGateway
from gateway.rest.backend import Backend, ClientTls, InProcessBackend, RemoteBackend
from gateway.rest.ops import AdminApp, ReadinessCheck, admin_routes, docs_routes
from gateway.rest.rules import rest_calls
from gateway.rest.server import RestServer
from gateway.rpc.server import GrpcServer, ServerTls
from gateway.rpc.servicer import OrdersServicer
from gateway.settings import (
    AdmissionSettings,
    BackendSettings,
    GatewaySettings,
    ServerTlsFiles,
    Synchronous,
    redacted,
)
from gateway.store.base import Store
from gateway.store.instrumented import InstrumentedStore

if TYPE_CHECKING:  # OpenTelemetry is loaded only when tracing is on
    from gateway.observability.tracing import Tracing

Clock = Callable[[], int]
"""Epoch milliseconds."""
T = TypeVar("T")


class StartupError(Exception):
    """A part that could not start, in one line that names its setting and the cause: what an
    operator reads instead of a traceback (a port in use, a database out of reach, a bad TLS file)."""


async def open_store(url: str, *, sqlite_synchronous: Synchronous = "full") -> Store:
    """The store a database URL names: `sqlite:///PATH` or `postgresql://...`. `sqlite_synchronous`
    applies to SQLite only (PostgreSQL's durability is its server's own configuration).
    Raises StartupError when it cannot be opened."""
    try:
        if url.startswith("sqlite:///"):
            from gateway.store.sqlite import SqliteStore

            return await SqliteStore.open(url.removeprefix("sqlite:///"), synchronous=sqlite_synchronous)
        from gateway.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    except (Unavailable, OSError, sqlite3.Error) as error:
        raise StartupError(f"--database {redacted(url)}: {_cause(error)}") from error


def _cause(error: BaseException) -> str:
    """An error's own words, on one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, OrderError) else f"{type(error).__name__}: {text}"


async def _listening(setting: str, host: str, port: int, start: Awaitable[T]) -> T:
    """`start`, with a listener that cannot bind said as one line naming its setting."""
    try:
        return await start
    except (OSError, RuntimeError) as error:
        reason = "address in use or not available"
        if isinstance(error, OSError) and error.strerror:
            reason = error.strerror
        raise StartupError(f"{setting} {port}: cannot listen on {host}:{port}: {reason}") from error


def admission(settings: AdmissionSettings) -> Admission:
    """The call limits the settings ask for."""
    rate = None
    if settings.rate_limit > 0:
        burst = settings.rate_burst or max(1, math.ceil(2 * settings.rate_limit))
        rate = AccountRateLimit(settings.rate_limit, burst)
    failures = None
    if settings.auth_failure_limit > 0:
        failures = AuthFailureLimit(settings.auth_failure_limit, settings.auth_failure_window_s)
    return Admission(rate, failures, settings.trusted_proxies)


def server_tls(files: ServerTlsFiles | None) -> ServerTls | None:
    if files is None:
        return None
    try:
        client_ca = files.client_ca.read_bytes() if files.client_ca is not None else None
        return ServerTls(files.cert.read_bytes(), files.key.read_bytes(), client_ca)
    except OSError as error:
        raise StartupError(f"--tls-cert/--tls-key/--tls-client-ca: {_cause(error)}") from error


def rest_ssl_context(files: ServerTlsFiles | None) -> ssl.SSLContext | None:
    """The TLS context of the REST listeners; built first, it also checks the certificate and key
    before anything listens (grpc would only say that it cannot bind)."""
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as error:
        raise StartupError(f"--tls-cert {files.cert} / --tls-key {files.key}: {_cause(error)}") from error
    return context


def remote_backend(settings: BackendSettings, tracing: Tracing | None = None) -> RemoteBackend:
    tls = None
    if settings.tls is not None:
        try:
            tls = ClientTls(
                settings.tls.ca.read_bytes(),
                settings.tls.cert.read_bytes() if settings.tls.cert else None,
                settings.tls.key.read_bytes() if settings.tls.key else None,
            )
        except OSError as error:
            raise StartupError(f"--backend-ca/--backend-cert/--backend-key: {_cause(error)}") from error
    return RemoteBackend(
        settings.target, SERVICE_DESCRIPTOR, rest_calls(SERVICE_DESCRIPTOR), tls=tls, tracing=tracing
    )


@dataclass
class Gateway:
    """The running parts of one process, in the order they stop."""

    settings: GatewaySettings
    metrics: Metrics
    rest: RestServer | None = None
    grpc: GrpcServer | None = None
    admin: RestServer | None = None
    backend: Backend | None = None
    store: Store | None = None
    delivery: DeliveryWorker | None = None
    hub: EventHub | None = None
    authenticator: Authenticator | None = None
    access_log: AccessLog | None = None
    tracing: Tracing | None = None
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)

    @property
    def rest_port(self) -> int | None:
        return self.rest.port if self.rest is not None else None

    @property
    def grpc_port(self) -> int | None:
        return self.grpc.port if self.grpc is not None else None

    @property
    def admin_port(self) -> int | None:
        return self.admin.port if self.admin is not None else None

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking work, let calls in flight and webhook POSTs finish within the grace period,
        close the store."""
        grace = self.settings.grace_s if grace_s is None else grace_s
        # Watch streams never end on their own: they are ended first (UNAVAILABLE, resume from the
        # last cursor), so that they do not hold the gRPC server's grace period.
        if self.hub is not None:
            await self.hub.stop()
        # The listeners and the delivery worker stop taking work at once and share the grace
        # period; the worker gives back what it has not sent before the store closes.
        stopping = []
        if self.delivery is not None:
            stopping.append(self.delivery.stop(grace))
        if self.rest is not None:
            stopping.append(self.rest.stop())
        if self.grpc is not None:
            stopping.append(self.grpc.stop(grace))
        if self.admin is not None:
            stopping.append(self.admin.stop())
        await asyncio.gather(*stopping)
        await self.metrics.stop()
        if self.backend is not None:
            await self.backend.close()
        if self.store is not None:
            await self.store.close()
        if self.access_log is not None:
            self.access_log.flush()
        if self.tracing is not None:
            await self.tracing.shutdown()


async def assemble(
    settings: GatewaySettings, *, store: Store | None = None, clock: Clock | None = None
) -> Gateway:
    """Start the parts `settings.mode` asks for. `store`, when given, is used instead of opening
    `settings.store.database` (a test's faulty store, say), and is closed with the gateway."""
    gateway = Gateway(settings, Metrics(shared_directory=settings.metrics.shared_directory))
    try:
        if settings.tracing.enabled:
            from gateway.observability.tracing import Tracing

            gateway.tracing = Tracing.start(settings.tracing)
        # Access lines are written at `info`: below that level no line is made, nor any call watched.
        if settings.logging.access_log and settings.logging.level in ("debug", "info"):
            gateway.access_log = AccessLog()
        rest_ssl_context(settings.listen.tls)  # a bad certificate or key: said before anything starts
        if settings.serves_grpc:
            await _start_grpc(gateway, store, clock)
        if settings.serves_rest:
            await _start_rest(gateway)
        if settings.listen.admin_port is not None:
            await _start_admin(gateway)
        gateway.metrics.start()
    except BaseException:
        await gateway.stop(0)
        raise
    return gateway


async def _start_grpc(gateway: Gateway, store: Store | None, clock: Clock | None) -> None:
    settings, metrics = gateway.settings, gateway.metrics
    opened = store
    if opened is None:
        opened = await open_store(
            settings.store.database, sqlite_synchronous=settings.store.sqlite_synchronous
        )
    tracing = gateway.tracing
    spans = None
    if tracing is not None:
        db_system = "sqlite" if settings.store.database.startswith("sqlite:") else "postgresql"
        spans = tracing.store_spans(db_system)
    instrumented = gateway.store = InstrumentedStore(opened, metrics.observe_store, span=spans)
    if settings.store.demo:
        await install_demo(instrumented)
    calls = OrderCalls(instrumented) if clock is None else OrderCalls(instrumented, clock=clock)
    hub = gateway.hub = EventHub(instrumented, settings.watch)
    await hub.start()
    metrics.watch_watchers(lambda: hub.watchers)
    # Told of the accounts this process changes (see Authenticator.account_changed).
    gateway.authenticator = Authenticator(instrumented)
    servicer = OrdersServicer(
        calls,
        gateway.authenticator,
        admission=admission(settings.admission),
        observe=metrics,
        max_timeout_s=settings.grpc.max_timeout_s,
        watch=_served_calls(gateway),
        replay=WebhookReplay(instrumented, gateway.authenticator.stored_hash),
        hub=hub,
    )
    gateway.grpc = await _listening(
        "--grpc-port",
        settings.listen.host,
        settings.listen.grpc_port,
        GrpcServer.start(
            servicer,
            instrumented,
            host=settings.listen.host,
            port=settings.listen.grpc_port,
            reuse_port=settings.listen.reuse_port,
            tls=server_tls(settings.listen.tls),
            health_interval_s=settings.grpc.health_interval_s,
            limits=grpc_limits(settings),
        ),
    )
    health = gateway.grpc.health
    gateway.readiness["database"] = health.check
    if settings.serves_rest:
        gateway.backend = InProcessBackend(servicer, health, tracing=tracing)
    _start_delivery(gateway, instrumented)


def _start_delivery(gateway: Gateway, store: InstrumentedStore) -> None:
    """The worker that sends the outbox to the webhooks, in every process that owns a store (timed,
    as every store operation is). Not a readiness check: a partner's failing URL is the partner's,
    not this process's."""
    gateway.metrics.watch_outbox(store.outbox_stats)
    gateway.delivery = DeliveryWorker(store, gateway.settings.webhooks, observer=gateway.metrics)
    gateway.delivery.start()


def _served_calls(gateway: Gateway) -> ServedCalls | None:
    """What watches the calls that arrive through the gRPC server: their spans and access log
    lines, if either is on."""
    if gateway.tracing is None and gateway.access_log is None:
        return None
    return ServedCalls(SERVICE_NAME, tracing=gateway.tracing, access_log=gateway.access_log)


def _no_trace() -> None:
    return None


async def _start_rest(gateway: Gateway) -> None:
    settings, metrics = gateway.settings, gateway.metrics
    if gateway.backend is None:
        assert settings.backend is not None  # GatewaySettings requires one for http
        gateway.backend = remote_backend(settings.backend, gateway.tracing)
    gateway.readiness["grpc_backend"] = gateway.backend.ready
    observer: RequestObserver = metrics.observe_request
    access_log = gateway.access_log
    if access_log is not None:
        trace_id = gateway.tracing.current_trace_id if gateway.tracing is not None else _no_trace

        def observe(**fields: Any) -> None:
            metrics.observe_request(**fields)
            access_log(**fields, trace_id=trace_id())

        observer = observe
    rest_gateway = RestGateway(
        gateway.backend,
        settings.rest,
        extra_routes=_public_ops_routes(gateway),
        observer=observer,
        trusted_proxies=settings.admission.trusted_proxies,
        tracing=gateway.tracing,
    )
    gateway.rest = await _listening(
        "--http-port",
        settings.listen.host,
        settings.listen.http_port,
        RestServer.start(
            rest_gateway,
            host=settings.listen.host,
            port=settings.listen.http_port,
            grace_s=settings.grace_s,
            reuse_port=settings.listen.reuse_port,
            ssl_context=rest_ssl_context(settings.listen.tls),
            max_connections=connection_caps(settings).rest,
            header_timeout_s=settings.connections.header_timeout_s,
            keepalive_timeout_s=settings.connections.keepalive_timeout_s,
        ),
    )


ADMIN_MAX_CONNECTIONS = 64
"""Open connections to the admin listener at most: its callers are a few probes and scrapers."""


def _public_ops_routes(gateway: Gateway) -> list[tuple[str, str, Handler]]:
    """The operational routes of the REST port: the docs, and the admin routes unless they have a
    port of their own (then they answer 404 here, like any unknown path)."""
    separate = gateway.settings.listen.admin_port is not None
    routes = docs_routes(openapi_document(admin_routes=not separate))
    if not separate:
        routes = admin_routes(gateway.metrics, gateway.readiness) + routes
    return routes


async def _start_admin(gateway: Gateway) -> None:
    settings = gateway.settings
    assert settings.listen.admin_port is not None
    app = AdminApp(admin_routes(gateway.metrics, gateway.readiness))
    gateway.admin = await _listening(
        "--admin-port",
        settings.listen.host,
        settings.listen.admin_port,
        RestServer.start(
            # The REST server only asks its gateway for `handle`, which the admin app has.
            cast(RestGateway, app),
            host=settings.listen.host,
            port=settings.listen.admin_port,
            grace_s=settings.grace_s,
            reuse_port=settings.listen.reuse_port,
            ssl_context=rest_ssl_context(settings.listen.tls),
            max_connections=ADMIN_MAX_CONNECTIONS,
            header_timeout_s=settings.connections.header_timeout_s,
            keepalive_timeout_s=settings.connections.keepalive_timeout_s,
        ),
    )
