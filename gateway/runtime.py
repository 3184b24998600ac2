"""Putting the parts together in one process, and taking them apart again on a signal.

`serve` runs the store, the gRPC server and the REST front end with the in-process
backend; `grpc` runs the store and the gRPC server; `http` runs the REST front end in
front of remote gRPC servers. SIGTERM or SIGINT stops taking new work, lets calls in
flight finish within the grace period, and closes the database.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.domain.errors import Unavailable
from gateway.observability.logs import AccessLog
from gateway.observability.metrics import InstrumentedStore, Metrics
from gateway.protos import SERVICE_DESCRIPTOR
from gateway.rest.app import RestGateway, RestSettings
from gateway.rest.backend import Backend, ClientTls, InProcessBackend, RemoteBackend
from gateway.rest.context import DeadlinePolicy
from gateway.rest.openapi import openapi_document
from gateway.rest.ops import ReadinessCheck, ops_routes
from gateway.rest.rules import rest_calls
from gateway.rest.server import RestServer
from gateway.rpc.server import GrpcServer, ServerTls
from gateway.rpc.servicer import Admission, OrdersServicer
from gateway.calls.auth import Authenticator
from gateway.calls.limits import AccountRateLimit, AuthFailureLimit
from gateway.calls.orders import OrderCalls
from gateway.store.base import OrderStore

log = logging.getLogger(__name__)


async def open_store(url: str) -> OrderStore:
    """The store a database URL names: `sqlite:///PATH` or `postgresql://...`."""
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SqliteStore

        return await SqliteStore.open(url.removeprefix("sqlite:///"))
    from gateway.store.postgres import PostgresStore

    return await PostgresStore.open(url)


async def check_store(store: OrderStore) -> bool:
    try:
        await store.ping()
    except Unavailable:
        return False
    return True


def admission(args: argparse.Namespace) -> Admission:
    """The call limits the settings ask for."""
    rate = None
    if args.rate_limit > 0:
        rate = AccountRateLimit(args.rate_limit, args.rate_burst or max(1, math.ceil(2 * args.rate_limit)))
    failures = None
    if args.auth_failure_limit > 0:
        failures = AuthFailureLimit(args.auth_failure_limit, args.auth_failure_window)
    return Admission(rate, failures, args.trusted_proxies)


def server_tls(args: argparse.Namespace) -> ServerTls | None:
    if args.tls_cert is None:
        return None
    client_ca = args.tls_client_ca.read_bytes() if args.tls_client_ca is not None else None
    return ServerTls(args.tls_cert.read_bytes(), args.tls_key.read_bytes(), client_ca)


def rest_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    if args.backend_ca is None:
        return None
    return ClientTls(
        args.backend_ca.read_bytes(),
        args.backend_cert.read_bytes() if args.backend_cert else None,
        args.backend_key.read_bytes() if args.backend_key else None,
    )


@dataclass
class Running:
    """What one process started, in the order it must stop."""

    rest: RestServer | None = None
    grpc: GrpcServer | None = None
    backend: Backend | None = None
    store: OrderStore | None = None
    access_log: AccessLog | None = None

    async def stop(self, grace_s: float) -> None:
        # Both listeners stop taking work at once and share the grace period.
        stopping = []
        if self.rest is not None:
            stopping.append(self.rest.stop())
        if self.grpc is not None:
            stopping.append(self.grpc.stop(grace_s))
        await asyncio.gather(*stopping)
        if self.backend is not None:
            await self.backend.close()
        if self.store is not None:
            await self.store.close()
        if self.access_log is not None:
            self.access_log.flush()


async def start(mode: str, args: argparse.Namespace, *, reuse_port: bool) -> Running:
    """Start the parts of `mode` ("serve", "grpc" or "http") with the parsed settings."""
    metrics = Metrics()
    running = Running()
    try:
        readiness: dict[str, ReadinessCheck] = {}
        if mode in ("serve", "grpc"):
            store = running.store = InstrumentedStore(await open_store(args.database), metrics)
            servicer = OrdersServicer(
                OrderCalls(store),
                Authenticator(store),
                admission=admission(args),
                observe=metrics.observe_call,
            )
            running.grpc = await GrpcServer.start(
                servicer,
                store,
                host=args.host,
                port=args.grpc_port,
                reuse_port=reuse_port,
                tls=server_tls(args),
            )
            if mode == "serve":
                health = running.grpc.health
                running.backend = InProcessBackend(servicer, health)
                readiness["database"] = health.check
                readiness["grpc_backend"] = running.backend.ready
        if mode in ("serve", "http"):
            if running.backend is None:
                calls_backend = RemoteBackend(
                    args.backend, SERVICE_DESCRIPTOR, rest_calls(SERVICE_DESCRIPTOR), tls=client_tls(args)
                )
                running.backend = calls_backend
                readiness["grpc_backend"] = calls_backend.ready
            access_log = running.access_log = AccessLog()

            def observe(**fields: Any) -> None:
                metrics.observe_request(**fields)
                access_log(**fields)

            settings = RestSettings(
                max_body_bytes=args.max_body_bytes,
                body_timeout_s=args.body_timeout,
                deadlines=DeadlinePolicy(args.default_timeout, args.max_timeout),
            )
            gateway = RestGateway(
                running.backend,
                settings,
                extra_routes=ops_routes(metrics, readiness, openapi_document()),
                observer=observe,
            )
            running.rest = await RestServer.start(
                gateway,
                host=args.host,
                port=args.http_port,
                grace_s=args.grace,
                reuse_port=reuse_port,
                ssl_context=rest_ssl_context(args),
            )
    except BaseException:
        await running.stop(0)
        raise
    return running


async def run_until_signalled(
    mode: str,
    args: argparse.Namespace,
    *,
    reuse_port: bool,
    announce: Callable[[Running], None] | None = None,
) -> int:
    """Run `mode` until SIGTERM or SIGINT, then stop gracefully; the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = await start(mode, args, reuse_port=reuse_port)
    # Everything built so far (modules, compiled routes and encoders) lives as long as the process:
    # moved out of the collector's sight, it is not scanned again by every full collection, which
    # would otherwise pause all requests in flight.
    gc.collect()
    gc.freeze()
    if announce is not None:
        announce(running)
    await stop.wait()
    log.info("stopping", extra={"grace_s": args.grace})
    await running.stop(args.grace)
    log.info("stopped")
    return 0
