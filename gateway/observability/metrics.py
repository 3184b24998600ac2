"""Prometheus metrics of one process: REST requests, servicer calls, store operations.

Every call is counted and timed two or three times, so the metrics are plain dicts and lists
updated on the event loop's thread (a dict lookup, a bisect and two additions), and turned into
Prometheus families only when /metrics is read. prometheus_client's own Counter and Histogram
take a lock per update and walk the buckets in Python, a visible share of an in-process cancel.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import cast

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# How prometheus_client writes an `le` bound (it is untyped).
_le = cast(Callable[[float], str], floatToGoString)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LabelledCounter:
    """A counter per tuple of label values. Updated from one thread (the event loop's)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self._values.items()):
            family.add_metric(list(labels), value)
        return family


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets  # per bucket, not cumulative; the last one is +Inf
        self.total = 0.0


class LabelledHistogram:
    """A histogram per tuple of label values (buckets `le` each bound, as Prometheus has them).
    Updated from one thread (the event loop's)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._bounds = tuple(buckets)
        self._series: dict[tuple[str, ...], _Series] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series(len(self._bounds) + 1)
        series.counts[bisect_left(self._bounds, value)] += 1  # the first bound >= value
        series.total += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [_le(bound) for bound in self._bounds] + ["+Inf"]
        for labels, series in list(self._series.items()):
            cumulative = itertools.accumulate(series.counts)
            family.add_metric(list(labels), list(zip(les, cumulative, strict=True)), series.total)
        return family


class _Families(Collector):
    def __init__(self, metrics: Sequence[LabelledCounter | LabelledHistogram]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield metric.family()


class Metrics:
    """The metrics, in a registry of their own (so tests and processes never share one)."""

    def __init__(self) -> None:
        self.http_requests = LabelledCounter(
            "hypertrack_gateway_http_requests_total",
            "REST requests answered, by route template, method and HTTP status.",
            ["route", "method", "status"],
        )
        self.http_latency = LabelledHistogram(
            "hypertrack_gateway_http_request_duration_seconds",
            "Time to answer a REST request, by route template and method.",
            ["route", "method"],
            LATENCY_BUCKETS,
        )
        self.rpc_calls = LabelledCounter(
            "hypertrack_gateway_grpc_calls_total",
            "OrdersService calls handled (over gRPC or in-process from REST), by method and status code.",
            ["method", "code"],
        )
        self.rpc_latency = LabelledHistogram(
            "hypertrack_gateway_grpc_call_duration_seconds",
            "Time to handle an OrdersService call, by method.",
            ["method"],
            LATENCY_BUCKETS,
        )
        self.store_latency = LabelledHistogram(
            "hypertrack_gateway_store_operation_duration_seconds",
            "Time of a store operation (one transaction), by operation.",
            ["operation"],
            LATENCY_BUCKETS,
        )
        self.registry = CollectorRegistry()
        self.registry.register(
            _Families(
                [self.http_requests, self.http_latency, self.rpc_calls, self.rpc_latency, self.store_latency]
            )
        )

    def observe_request(
        self, *, route: str, method: str, status: int, seconds: float, request_id: str, remote: str | None
    ) -> None:
        self.http_requests.inc((route, method, str(status)))
        self.http_latency.observe((route, method), seconds)

    def observe_call(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.rpc_calls.inc((method, code.name))
        self.rpc_latency.observe((method,), seconds)

    def observe_store(self, operation: str, seconds: float) -> None:
        self.store_latency.observe((operation,), seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
