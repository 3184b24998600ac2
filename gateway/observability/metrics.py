"""Prometheus metrics of the gateway, named as the ecosystem names them, and one view of them across
the `--workers` processes.

Names:
- gRPC calls as go-grpc-prometheus and py-grpc-prometheus name them (`grpc_server_started_total`,
  `grpc_server_handled_total`, `grpc_server_handling_seconds`, `grpc_server_msg_received_total`,
  `grpc_server_msg_sent_total`), for calls that arrive through the gRPC server only: `serve`'s REST
  calls reach the servicer in-process and are REST requests, not gRPC calls;
- REST requests as OpenTelemetry's HTTP server conventions read in Prometheus
  (`http_server_request_duration_seconds{http_request_method,http_route,http_response_status_code}`);
- store operations and webhook delivery under the product's prefix (no convention names them):
  deliveries by outcome, attempts by result, the outbox's pending events and the age of the oldest,
  and the open WatchOrderEvents streams;
- prometheus_client's process, platform and garbage-collector collectors.

Every call is counted and timed two or three times, so the metrics are plain dicts and lists
updated on the event loop's thread (a dict lookup, a bisect and two additions), and turned into
Prometheus families only when /metrics is read. prometheus_client's own Counter and Histogram
take a lock per update and walk the buckets in Python, a visible share of an in-process cancel.

One view across workers (`shared_directory`): each worker writes a snapshot of all its families to
a file of its own in a directory private to the run, every few seconds, at exit, and whenever it
answers /metrics; the worker answering /metrics adds its own fresh families to the others'
snapshots. Whatever a scrape showed was first written to a file, so a later scrape, answered by any
worker, shows at least as much: counters never go backwards. The snapshot of a worker that died
stays, so what it counted still counts; its gauges (memory, descriptors) no longer do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import orjson
from google.protobuf.descriptor import MethodDescriptor
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.protos import SERVICE_DESCRIPTOR
from gateway.store.events import OutboxStats

log = logging.getLogger(__name__)

# How prometheus_client writes an `le` bound (it is untyped).
_le = cast(Callable[[float], str], floatToGoString)

LATENCY_BUCKETS = (
    # Finer than OpenTelemetry's list below 5 ms: an answer from the embedded store takes about a
    # millisecond, and a single bucket up to 5 ms would hide a slowdown of several times.
    0.0005,
    0.001,
    0.0025,
    # OpenTelemetry's recommended buckets for http.server.request.duration (its explicit 0 left out:
    # nothing is answered in no time).
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)


def grpc_type(method: MethodDescriptor) -> str:
    """The method's kind as go-grpc-prometheus names it (OrdersService has no client streams)."""
    return "server_stream" if method.server_streaming else "unary"


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
"""The methods OpenTelemetry names as themselves; any other is `_OTHER`, so a caller cannot make
series without bound."""
OTHER_METHOD = "_OTHER"
UNMATCHED_ROUTE = "unmatched"
"""What the REST front end names a request no route matched. OpenTelemetry leaves `http.route` out
then; an empty label value is Prometheus's way of leaving a label out."""
SNAPSHOT_INTERVAL_S = 5.0
"""How often a worker writes its snapshot: how far behind the other workers' counts a scrape may be."""
OUTBOX_READ_TIMEOUT_S = 1.0
"""How long a scrape waits for the outbox's figures; past that it shows the last ones read, so a
busy database slows /metrics by this much at most."""
DELIVERY_OUTCOMES = ("delivered", "rejected", "failed")


class LabelledCounter:
    """A counter per tuple of label values. Updated from one thread (the event loop's)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def values(self) -> list[tuple[tuple[str, ...], float]]:
        return list(self._values.items())

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.values():
            family.add_metric(list(labels), value)
        return family


class _DerivedCounter:
    """A counter whose values are read off other counters when the metrics are read."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        values: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._read = values

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self._read():
            family.add_metric(list(labels), value)
        return family


class _Gauge:
    """A gauge read off a callable when the metrics are read; no sample until it has a source."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.read: Callable[[], float | None] | None = None

    def family(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=[])
        value = None if self.read is None else self.read()
        if value is not None:
            family.add_metric([], value)
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
    def __init__(
        self, metrics: Sequence[LabelledCounter | _DerivedCounter | LabelledHistogram | _Gauge]
    ) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield metric.family()


class Metrics:
    """The metrics, in a registry of their own (so tests and processes never share one).
    `shared_directory`, when given, is the run's directory of worker snapshots (see the module)."""

    def __init__(self, *, shared_directory: Path | None = None, service: str = SERVICE_DESCRIPTOR.full_name):
        grpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = LabelledCounter(
            "grpc_server_started_total", "RPCs started on the server.", grpc_labels
        )
        self.grpc_handled = LabelledCounter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            [*grpc_labels, "grpc_code"],
        )
        self.grpc_handling = LabelledHistogram(
            "grpc_server_handling_seconds",
            "Response latency (seconds) of gRPC that had been application-level handled by the server.",
            grpc_labels,
            LATENCY_BUCKETS,
        )
        # Every call takes one message: one in per call started. A unary call answers one message
        # when it ends OK; a stream's messages are counted as they are written. The unary ones are
        # read off the counters above when /metrics is read, not counted again per call.
        self._stream_sent = LabelledCounter("", "", grpc_labels)
        self.grpc_received = _DerivedCounter(
            "grpc_server_msg_received_total",
            "RPC stream messages received on the server.",
            grpc_labels,
            self.grpc_started.values,
        )
        self.grpc_sent = _DerivedCounter(
            "grpc_server_msg_sent_total",
            "gRPC stream messages sent on the server.",
            grpc_labels,
            lambda: [
                *(
                    (labels[:-1], value)
                    for labels, value in self.grpc_handled.values()
                    if labels[-1] == "OK" and labels[0] == "unary"
                ),
                *self._stream_sent.values(),
            ],
        )
        self.http_duration = LabelledHistogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            ["http_request_method", "http_route", "http_response_status_code"],
            LATENCY_BUCKETS,
        )
        self.store_duration = LabelledHistogram(
            "hypertrack_gateway_store_operation_duration_seconds",
            "Time of a store operation (one transaction), by operation.",
            ["operation"],
            LATENCY_BUCKETS,
        )
        self.webhook_deliveries = LabelledCounter(
            "hypertrack_gateway_webhook_deliveries_total",
            "Webhook deliveries ended, by outcome: delivered (2xx), rejected (4xx), failed (retries spent).",
            ["outcome"],
        )
        for outcome in DELIVERY_OUTCOMES:
            self.webhook_deliveries.inc((outcome,), 0.0)
        self.webhook_attempts = LabelledCounter(
            "hypertrack_gateway_webhook_attempts_total",
            "Webhook POSTs made, by result: the answer's status class (2xx, 3xx, 4xx, 5xx), timeout or error.",
            ["result"],
        )
        # The outbox is the database's, not this process's: read from the store (watch_outbox).
        self.outbox_pending = _Gauge(
            "hypertrack_gateway_webhook_outbox_pending_events",
            "Events in the outbox not yet delivered, rejected or failed.",
        )
        self.outbox_oldest_age = _Gauge(
            "hypertrack_gateway_webhook_outbox_oldest_pending_age_seconds",
            "Age of the oldest event not yet delivered, rejected or failed (0 when there is none).",
        )
        self.event_watchers = _Gauge(
            "hypertrack_gateway_event_watchers", "WatchOrderEvents streams open on this process."
        )
        self._outbox_source: Callable[[], Awaitable[OutboxStats]] | None = None
        self._outbox: OutboxStats | None = None
        # The labels of each method's calls, made once: a call looks them up, builds no tuple.
        self._grpc_labels = {
            method.name: (grpc_type(method), service, method.name)
            for method in SERVICE_DESCRIPTOR.methods  # the service's own methods, whatever `service` says
        }
        self._handled_labels: dict[tuple[str, grpc.StatusCode], tuple[str, ...]] = {}
        for labels in self._grpc_labels.values():
            # Present from the start at 0, as go-grpc-prometheus does, so that a rate has a beginning.
            self.grpc_started.inc(labels, 0.0)
        self.registry = CollectorRegistry()
        self.registry.register(
            _Families(
                [
                    self.grpc_started,
                    self.grpc_handled,
                    self.grpc_handling,
                    self.grpc_received,
                    self.grpc_sent,
                    self.http_duration,
                    self.store_duration,
                    self.webhook_deliveries,
                    self.webhook_attempts,
                    self.outbox_pending,
                    self.outbox_oldest_age,
                    self.event_watchers,
                ]
            )
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._snapshots = None if shared_directory is None else WorkerSnapshots(shared_directory)
        self._writer: asyncio.Task[None] | None = None
        self._sequence = itertools.count(1)

    def observe_request(
        self, *, route: str, method: str, status: int, seconds: float, request_id: str, remote: str | None
    ) -> None:
        """A REST request answered (a RequestObserver: `request_id` and `remote` are the access log's)."""
        if method not in HTTP_METHODS:
            method = OTHER_METHOD
        if route == UNMATCHED_ROUTE:
            route = ""
        self.http_duration.observe((method, route, str(status)), seconds)

    def call_started(self, method: str) -> None:
        """A call arrived through the gRPC server."""
        self.grpc_started.inc(self._grpc_labels[method])

    def message_sent(self, method: str) -> None:
        """A streaming call that arrived through the gRPC server wrote one message."""
        self._stream_sent.inc(self._grpc_labels[method])

    def call_handled(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """A call that arrived through the gRPC server is answered (or failed) with `code`."""
        labels = self._grpc_labels[method]
        handled = self._handled_labels.get((method, code))
        if handled is None:
            handled = self._handled_labels[(method, code)] = (*labels, code.name)
        self.grpc_handled.inc(handled)
        self.grpc_handling.observe(labels, seconds)

    def observe_store(self, operation: str, seconds: float) -> None:
        self.store_duration.observe((operation,), seconds)

    def webhook_attempted(self, result: str) -> None:
        """A webhook POST ended (a DeliveryObserver, gateway/events/delivery.py)."""
        self.webhook_attempts.inc((result,))

    def webhook_ended(self, outcome: str) -> None:
        """A webhook delivery ended: delivered, rejected or failed."""
        self.webhook_deliveries.inc((outcome,))

    def watch_outbox(self, read: Callable[[], Awaitable[OutboxStats]]) -> None:
        """Read the outbox's figures with `read` (the store's `outbox_stats`) when /metrics is read."""
        self._outbox_source = read
        self.outbox_pending.read = lambda: None if self._outbox is None else self._outbox.pending
        self.outbox_oldest_age.read = self._oldest_pending_age

    def watch_watchers(self, read: Callable[[], int]) -> None:
        """Read the number of open watch streams with `read` when /metrics is read."""
        self.event_watchers.read = read

    def _oldest_pending_age(self) -> float | None:
        if self._outbox is None:
            return None
        if self._outbox.oldest_pending_ms is None:
            return 0.0
        return max(0.0, time.time() - self._outbox.oldest_pending_ms / 1000)

    async def refresh_outbox(self) -> None:
        """Read the outbox's figures now; on a slow or failing store keep the last ones read."""
        if self._outbox_source is None:
            return
        try:
            self._outbox = await asyncio.wait_for(self._outbox_source(), OUTBOX_READ_TIMEOUT_S)
        except Exception as error:  # the scrape goes on: the figures are only as old as the last read
            log.warning("could not read the outbox for the metrics: %s", type(error).__name__)

    def exposition(self) -> tuple[bytes, str]:
        """This process's metrics, in the text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def scrape(self) -> tuple[bytes, str]:
        """What /metrics answers: this process's metrics, or with a shared directory, all workers'."""
        await self.refresh_outbox()
        if self._snapshots is None:
            return self.exposition()
        own = self._snapshot()
        return await asyncio.to_thread(self._snapshots.merged_exposition, own), CONTENT_TYPE_LATEST

    def start(self) -> None:
        """With a shared directory, write a snapshot now and then every few seconds."""
        if self._snapshots is not None and self._writer is None:
            self._snapshots.write(self._snapshot())
            self._writer = asyncio.create_task(self._write_periodically(), name="metrics snapshots")

    async def _write_periodically(self) -> None:
        assert self._snapshots is not None
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)
            own = self._snapshot()
            try:
                await asyncio.to_thread(self._snapshots.write, own)
            except OSError as error:  # the next one may succeed; a scrape writes one too
                log.warning("could not write the metrics snapshot: %s", error)

    def _snapshot(self) -> Snapshot:
        """All families now, numbered. Taken on the event loop: the dicts are changed only there."""
        return Snapshot(next(self._sequence), _families(self.registry.collect()))

    async def stop(self) -> None:
        """Write the last snapshot, marked final: what this process counted stays in the view."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._snapshots is not None:
            self._snapshots.write(self._snapshot(), final=True)


# --- snapshots of the workers, and their sum --------------------------------------------------------

Family = dict[str, Any]
"""A family as written to a snapshot: name, type, help, samples [[sample name, labels, value]]."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A worker's families at one moment; a later snapshot has a higher `sequence`."""

    sequence: int
    families: list[Family]


def _families(metrics: Iterable[Metric]) -> list[Family]:
    return [
        {
            "name": metric.name,
            "type": metric.type,
            "help": metric.documentation,
            "samples": [[s.name, s.labels, s.value] for s in metric.samples],
        }
        for metric in metrics
    ]


def _first(values: Iterable[float]) -> float:
    return next(iter(values))


_GAUGE_COMBINED: dict[str, Callable[[Iterable[float]], float]] = {
    "process_start_time_seconds": min,
    "process_max_fds": max,
    "python_info": max,
    # The database's figures, which every worker reads alike: the answering worker's, read for
    # this scrape (its snapshot comes first), not a sum, nor another's older reading.
    "hypertrack_gateway_webhook_outbox_pending_events": _first,
    "hypertrack_gateway_webhook_outbox_oldest_pending_age_seconds": _first,
}
"""How the live workers' values of a gauge add up; any gauge not named here is summed (memory,
open descriptors, watchers: the service's total)."""
_SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
_SNAPSHOT_SUFFIX = ".json"


class WorkerSnapshots:
    """This worker's snapshot file in the run's directory, and the sum of everyone's."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pid = os.getpid()
        # The pid and a random part: a pid may come back in the same run, a file name must not.
        self.path = directory / f"worker-{self._pid}-{uuid.uuid4().hex[:12]}{_SNAPSHOT_SUFFIX}"
        self._lock = threading.Lock()
        self._written = 0

    def write(self, snapshot: Snapshot, *, final: bool = False) -> None:
        """Make `snapshot` this worker's file, unless a later one is there already: writes run in
        threads, and one taken earlier may finish later. Never older than what a scrape has shown."""
        with self._lock:
            if snapshot.sequence <= self._written:
                return
            data = orjson.dumps({"pid": self._pid, "final": final, "families": snapshot.families})
            # Written whole, then renamed over the old one: a reader never sees half a snapshot.
            partial = self.path.with_suffix(".partial")
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(partial, self.path)
            self._written = snapshot.sequence

    def merged_exposition(self, own: Snapshot) -> bytes:
        """Write `own` as this worker's snapshot, then expose the sum of all workers' snapshots."""
        self.write(own)
        snapshots = [(own.families, True)]
        for path in sorted(self.directory.glob(f"worker-*{_SNAPSHOT_SUFFIX}")):
            if path == self.path:
                continue
            try:
                snapshot = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as error:
                log.warning("unreadable metrics snapshot %s: %s", path.name, error)
                continue
            live = not snapshot["final"] and _alive(snapshot["pid"])
            snapshots.append((snapshot["families"], live))
        return generate_latest(_Merged(merge(snapshots)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def merge(snapshots: Sequence[tuple[list[Family], bool]]) -> list[Metric]:
    """One family per name from the workers' snapshots, each given with whether its worker is
    alive: counters and histograms are the sum over all workers, the dead ones included; gauges
    come from the live workers only (see _GAUGE_COMBINED)."""
    heads: dict[str, Family] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    for families, live in snapshots:
        for family in families:
            name, kind = family["name"], family["type"]
            summed = kind in _SUMMED_TYPES
            heads.setdefault(name, family)
            samples = values.setdefault(name, {})
            if not (summed or live):
                continue
            for sample_name, labels, value in family["samples"]:
                if value is None or (summed and sample_name.endswith("_created")):
                    continue  # a creation time is no count to add up
                key = (sample_name, tuple(sorted(labels.items())))
                samples.setdefault(key, []).append(value)
    merged = []
    for name, head in heads.items():
        kind = head["type"]
        # fsum: exactly rounded, so the same whatever order the workers' values come in (the
        # answering worker's first); a plain sum could come out a rounding error lower for the next
        # scrape, which Prometheus would take for a counter reset.
        combine = math.fsum if kind in _SUMMED_TYPES else _GAUGE_COMBINED.get(name, math.fsum)
        metric = Metric(name, head["help"], kind)
        for (sample_name, labels), found in values[name].items():
            metric.add_sample(sample_name, dict(labels), float(combine(found)))
        merged.append(metric)
    return merged


class _Merged(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)
