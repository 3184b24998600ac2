"""Prometheus metrics of one process: REST requests, servicer calls, store operations."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from gateway.domain.targets import OrderQuery
from gateway.protos import order_pb2
from gateway.store.base import BuildOrders, OrderChange, OrderStore

T = TypeVar("T")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The metrics, in a registry of their own (so tests and processes never share one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "hypertrack_gateway_http_requests_total",
            "REST requests answered, by route template, method and HTTP status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "hypertrack_gateway_http_request_duration_seconds",
            "Time to answer a REST request, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rpc_calls = Counter(
            "hypertrack_gateway_grpc_calls_total",
            "OrdersService calls handled (over gRPC or in-process from REST), by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_latency = Histogram(
            "hypertrack_gateway_grpc_call_duration_seconds",
            "Time to handle an OrdersService call, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_latency = Histogram(
            "hypertrack_gateway_store_operation_duration_seconds",
            "Time of a store operation (one transaction), by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Counter | Histogram, labels: tuple[str, ...]) -> Any:
        # labels() costs a lock and a dict build per call; the children are cached instead.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(
        self, *, route: str, method: str, status: int, seconds: float, request_id: str, remote: str | None
    ) -> None:
        self._child(self.http_requests, (route, method, str(status))).inc()
        self._child(self.http_latency, (route, method)).observe(seconds)

    def observe_call(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self._child(self.rpc_calls, (method, code.name)).inc()
        self._child(self.rpc_latency, (method,)).observe(seconds)

    def observe_store(self, operation: str, seconds: float) -> None:
        self._child(self.store_latency, (operation,)).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class InstrumentedStore:
    """An OrderStore that times each operation of the store it wraps."""

    def __init__(self, store: OrderStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def _timed(self, operation: str, work: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await work()
        finally:
            self._metrics.observe_store(operation, time.perf_counter() - started)

    async def get_order(self, account_id: str, query: OrderQuery, *, deadline: float) -> order_pb2.Order:
        return await self._timed(
            "get_order", lambda: self._store.get_order(account_id, query, deadline=deadline)
        )

    async def change_order(
        self, account_id: str, query: OrderQuery, change: OrderChange, *, deadline: float
    ) -> order_pb2.Order:
        return await self._timed(
            "change_order", lambda: self._store.change_order(account_id, query, change, deadline=deadline)
        )

    async def track_orders(
        self, account_id: str, handles: Sequence[str], build: BuildOrders, *, deadline: float
    ) -> list[order_pb2.Order]:
        return await self._timed(
            "track_orders", lambda: self._store.track_orders(account_id, handles, build, deadline=deadline)
        )

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        return await self._timed("account_secret_hash", lambda: self._store.account_secret_hash(account_id))

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        return await self._store.create_account(account_id, secret_hash)

    async def ping(self) -> None:
        await self._timed("ping", self._store.ping)

    async def close(self) -> None:
        await self._store.close()
