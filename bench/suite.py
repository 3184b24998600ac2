"""The benchmark from start to end: servers up, orders seeded, every measurement, servers down.

1. The JSON mapping alone, first, while no server runs.
2. The servers, each on its own free ports and (for the product) its own fresh SQLite database:
   the webhook receiver (bench/receiver.py); `serve` (embedded default), `serve --workers 2`,
   `serve` with a webhook subscribed (issue 14), `grpc` with three front ends in front of it:
   `http --backend` (remote backend), grpc-gateway (Go, bench/gogateway.py: what a user would
   pick instead, issue 15) and the issue's naive gateway (bench/ceilings.py: a reference); the two
   ceilings; then, when the PostgreSQL binaries are here (issue 7), a durable throwaway PostgreSQL
   cluster, two `grpc` processes on one database of it, and two `http --backend` front ends: one in
   front of the first process, one balancing round-robin over both (`ipv4:` list).
3. A warm-up per variant (a fixed number of requests, not measured), which also estimates its rate.
4. `runs` rounds; each seeds its pools, then measures the variants back to back, every one
   under the same load settings (wrk threads/connections, ghz concurrency, duration). Interleaving
   variant and ceiling within a round lets both see the same minutes of a noisy machine.
5. Fixed rate: each SQLite product variant, and its ceiling, at half the variant's median maximum.
6. Delivery (issue 14): a backlog of cancelled events drained by a fresh `serve` to the receiver.
7. Memory: a fresh `serve`, its RSS at start and after every tenth of the cancels.

Every cancel names an order nobody cancelled before: each measurement has its own seeded pool,
sized from the highest rate seen so far with a margin; a pool that runs out shows up as failed
requests (404), named as such. CPU is the servers' user + system time over the measurement (the
PostgreSQL server's is counted apart: the CPU column is the gateway's own); behind a REST front
end, the gRPC processes' share is measured apart too. After each measurement of the subscribed
row, the run waits until the receiver has the event of every cancel answered (bench/webhooks.py).
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench import gogateway, ratios
from bench.answer import ANSWER_PREFIX, cancelled_seed_order, fetch_answer
from bench.bounds import Measured, run_bounds
from bench.bounds import Settings as BoundsSettings
from bench.cpu import cpu_seconds
from bench.database import Database
from bench.disk import SyncLatency, fdatasync_latency
from bench.environment import describe
from bench.figures import VariantFigures, median, summarise
from bench.jsonbench import EncodeTimes, time_encoders
from bench.load import (
    GrpcCall,
    LoadResult,
    fixed_rate_clients,
    fixed_rate_pool_size,
    pool_size,
    run_ghz,
    run_h2load_fixed_rate,
    run_wrk,
    wrk_request_cap,
)
from bench.pgserver import MISSING_BINARIES, BenchPostgres, PostgresInfo, find_binaries
from bench.postgres import PostgresMissing, free_port
from bench.processes import ServerFailed, ServerProcess, gateway_executable, start_ceiling, start_gateway
from bench.ratios import Ratio
from bench.rss import rss_bytes
from bench.targets import JSON_SPEEDUP_OVER_MESSAGE_TO_JSON, MAX_RSS_GROWTH, RATIO_TARGETS, Target
from bench.tools import Tools
from bench.webhooks import Delivery, HookCounts, Receiver, WebhookRow, cancel_in_process
from gateway.protos import SERVICE_NAME, orders_service_pb2, protoset_path

CANCEL_METHOD = f"{SERVICE_NAME}/CancelOrder"
# Pools hold this many times the requests the highest rate seen so far would make.
POOL_MARGIN = 2.0
# Below this share of the rate asked for, a fixed-rate run says so: its latencies are not at that load.
RATE_REACHED = 0.9


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    transport: Literal["rest", "grpc"]
    ceiling: str | None  # the key of its ceiling; None for a ceiling


VARIANTS = (
    Variant("ceiling-rest", "ceiling: bare aiohttp handler", "rest", None),
    Variant("rest-embedded", "REST cancel, embedded (serve)", "rest", "ceiling-rest"),
    Variant("rest-workers2", "REST cancel, embedded (serve --workers 2)", "rest", "ceiling-rest"),
    Variant("rest-webhook", "REST cancel, embedded, webhook subscribed", "rest", "ceiling-rest"),
    Variant("rest-remote", "REST cancel, http + grpc processes", "rest", "ceiling-rest"),
    Variant("rest-grpcgateway", "reference: grpc-gateway (Go) + grpc process", "rest", "ceiling-rest"),
    Variant("rest-naive", "reference: naive gateway + grpc process", "rest", "ceiling-rest"),
    Variant("rest-pg1", "REST cancel, http + 1 grpc, PostgreSQL", "rest", "ceiling-rest"),
    Variant("rest-pg2", "REST cancel, http + 2 grpc, PostgreSQL", "rest", "ceiling-rest"),
    Variant("ceiling-grpc", "ceiling: bare grpc.aio servicer", "grpc", None),
    Variant("grpc", "gRPC CancelOrder (serve), ghz", "grpc", "ceiling-grpc"),
)
BY_KEY = {v.key: v for v in VARIANTS}
FIXED_RATE_VARIANTS = ("rest-embedded", "rest-remote", "grpc")
# The naive gateway the issue calibrates its targets with: 0.14 of its aiohttp ceiling.
NAIVE_VARIANT = "rest-naive"
ISSUE_NAIVE_SHARE = 0.14
# Issue 7's rows: measured only where a PostgreSQL cluster can be started (see `Bench.run`).
POSTGRES_VARIANTS = ("rest-pg1", "rest-pg2")
POSTGRES_DATABASE = "hypertrack_bench"
# Issue 15: every REST row is also given as a ratio to grpc-gateway in front of the same grpc process.
GRPC_GATEWAY_VARIANT = "rest-grpcgateway"
# Servers that call others: stopped first.
FRONT_ENDS = ("http", "grpc-gateway", "ceiling-naive")
# Issue 14: the receiver's paths of the subscribed row and of the delivery row.
WEBHOOK_VARIANT = "rest-webhook"
WEBHOOK_HOOK = "rest-webhook"
DELIVERY_HOOK = "delivery"


@dataclass(frozen=True)
class Settings:
    """The load settings, the same for a variant and its ceiling."""

    runs: int = 3
    duration_s: int = 10
    threads: int = 2  # wrk threads
    connections: int = 32  # wrk connections, and ghz concurrency (calls in flight)
    grpc_connections: int = 1  # ghz connections: gRPC clients multiplex calls over one
    warmup_requests: int = 2000
    fixed_clients: int = 8  # h2load processes (one connection each) for the fixed-rate REST load
    fixed_duration_s: int = 10
    memory_cancels: int = 200_000
    memory_checkpoints: int = 10
    delivery_events: int = 20_000  # the backlog the delivery row drains
    disk_syncs: int = 2000  # fdatasyncs timed for the disk's floor under a durable commit (bench/disk.py)
    json_repeats: int = 7
    json_repeat_s: float = 0.2
    server_log_level: str = "warning"


QUICK = Settings(
    runs=1,
    duration_s=1,
    connections=8,
    warmup_requests=500,
    fixed_clients=2,
    fixed_duration_s=1,
    memory_cancels=2000,
    delivery_events=1000,
    disk_syncs=100,
    json_repeats=3,
    json_repeat_s=0.02,
)


@dataclass(frozen=True)
class Endpoint:
    """Where a variant's load goes, whose CPU it costs, and the database its orders come from."""

    rest_url: str | None
    grpc_target: str | None
    pids: tuple[int, ...]  # the server's, or the REST front end's when gRPC backends serve it
    database: Database | None  # None for the ceilings: they have no orders
    authorization: str
    database_pids: tuple[int, ...] = ()  # the PostgreSQL server's, whose CPU is counted apart
    backend_pids: tuple[int, ...] = ()  # the gRPC processes behind the front end: CPU counted apart too
    hook: str | None = None  # the receiver's path of its account's webhook, when it has one


@dataclass
class Measurement:
    phase: str
    variant: str
    result: LoadResult
    pool: int | None  # handles seeded for it (None: a ceiling)
    rate: float | None = None  # the fixed rate asked for, if any


@dataclass(frozen=True)
class FixedRate:
    variant: str
    rate: float
    tool: str
    result: LoadResult
    ceiling: LoadResult


@dataclass(frozen=True)
class Memory:
    checkpoints: list[tuple[int, int]]  # (cancels so far, RSS bytes), the first at start

    @property
    def growth(self) -> float:
        """RSS after all cancels over RSS after the first tenth, minus one."""
        return self.checkpoints[-1][1] / self.checkpoints[1][1] - 1


@dataclass(frozen=True)
class AnswerSizes:
    """How big the answer to one cancel is: the ceilings' prepared one, and one the product gave."""

    ceiling_json: int
    product_json: int
    ceiling_protobuf: int  # the CancelOrderResponse the gRPC ceiling answers, serialised


@dataclass(frozen=True)
class PostgresFigures:
    """Issue 7: where the PostgreSQL rows ran, how two gRPC processes compare with one, and the
    PostgreSQL server's own CPU per 1,000 requests of each row (median of the runs)."""

    server: PostgresInfo
    scaling: float | None  # req/s of two processes over one, median of the per-run ratios
    scaling_runs: list[float | None]  # those ratios, run by run: on a noisy machine they spread
    database_cpu_per_1k: dict[str, float | None]


@dataclass
class Outcome:
    environment: dict[str, str]
    settings: Settings
    encoders: EncodeTimes
    answer: AnswerSizes | None = None
    postgres: PostgresFigures | None = None
    postgres_skipped: str | None = None  # why there are no PostgreSQL rows, when there are none
    rows: list[VariantFigures] = field(default_factory=list)
    fixed: list[FixedRate] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)  # issue 15's and 14's (bench/ratios.py)
    webhook: WebhookRow | None = None
    delivery: Delivery | None = None
    memory: Memory | None = None
    disk: SyncLatency | None = None  # the fdatasync under each durable commit, alone
    bounds: Measured | None = None  # the bare servers with a durable commit, and with the essential cancel
    measurements: list[Measurement] = field(default_factory=list)
    discarded: list[Measurement] = field(default_factory=list)  # runs that outran their pool, then redone
    targets: list[Target] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """One line per measurement in which any request failed."""
        lines = []
        for m in self.measurements:
            if m.result.failures or m.result.requests == 0:
                exhausted = m.pool is not None and m.result.handles_used > m.pool
                lines.append(
                    f"{m.phase} {m.variant}: {m.result.failures} of {m.result.requests} requests failed"
                    + (
                        f" (it needed {m.result.handles_used} orders, {m.pool} were seeded)"
                        if exhausted
                        else ""
                    )
                    + (f"; first: {m.result.failure_sample}" if m.result.failure_sample else "")
                )
        if self.bounds is not None:
            lines += [f"bounds: {failure}" for failure in self.bounds.failures()]
        # An answered cancel whose event never reached the receiver is a failed request too.
        if self.webhook is not None and (self.webhook.missing or self.webhook.received.unsigned):
            lines.append(
                f"{WEBHOOK_VARIANT}: {self.webhook.missing} of {self.webhook.cancels} events not delivered, "
                f"{self.webhook.received.unsigned} deliveries unsigned"
            )
        if self.delivery is not None and (self.delivery.missing or self.delivery.received.unsigned):
            lines.append(
                f"delivery: {self.delivery.missing} of {self.delivery.events} events not delivered, "
                f"{self.delivery.received.unsigned} deliveries unsigned"
            )
        return lines


def _prefix(phase: str, variant: Variant) -> str:
    """The handle prefix of one measurement's pool: letters and digits, then "-" (see database.py)."""
    return f"{phase}{variant.key.replace('-', '')}-"


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Bench:
    """Runs the benchmark in `workdir` (databases, server logs, tool reports) and returns its figures."""

    def __init__(self, settings: Settings, tools: Tools, workdir: Path) -> None:
        self.settings = settings
        self.tools = tools
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.servers: list[ServerProcess] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.variants: tuple[Variant, ...] = VARIANTS  # without the PostgreSQL rows if they are skipped
        self.postgres: BenchPostgres | None = None
        self.receiver: Receiver | None = None
        self.hook_cancels: dict[str, int] = {}  # cancels answered 2xx per receiver path, so far
        self.catch_up_s: list[float] = []  # how long the receiver took to have them, per measurement
        self.best_rps: dict[str, float] = {}
        self.outcome: Outcome | None = None

    # -- the whole run ----------------------------------------------------------------------------

    def run(self) -> Outcome:
        s = self.settings
        progress(f"timing the JSON encoders ({s.json_repeats} repeats)")
        encoders = time_encoders(s.json_repeats, s.json_repeat_s)
        self.outcome = outcome = Outcome(describe(self.tools), s, encoders)
        bindir = find_binaries()
        if bindir is None:
            outcome.postgres_skipped = MISSING_BINARIES
            self.variants = tuple(v for v in VARIANTS if v.key not in POSTGRES_VARIANTS)
            progress(MISSING_BINARIES)
        try:
            self._start_servers()
            if bindir is not None:
                self._start_postgres_servers(bindir)
            outcome.answer = self._answer_sizes()
            self._warm_up()
            per_run: dict[str, list[LoadResult]] = {v.key: [] for v in self.variants}
            for run in range(1, s.runs + 1):
                phase = f"run{run}"
                pools = self._seed_run(phase)
                for variant in self.variants:
                    per_run[variant.key].append(self._closed_loop(variant, phase, pools.get(variant.key)))
            outcome.rows = [self._row(v, per_run) for v in self.variants]
            if self.postgres is not None:
                outcome.postgres = self._postgres_figures(self.postgres.info, per_run)
            for key in FIXED_RATE_VARIANTS:
                rps = next(r.medians["rps"] for r in outcome.rows if r.key == key)
                outcome.fixed.append(self._fixed_rate(BY_KEY[key], (rps or 0) / 2))
            progress("timing fdatasync alone on the databases' disk")
            outcome.disk = fdatasync_latency(self.workdir, syncs=s.disk_syncs)
            outcome.ratios = self._ratios(per_run, outcome)
            outcome.webhook = self._webhook_row()
            outcome.delivery = self._delivery()
        finally:
            self._stop_servers()
            if self.postgres is not None:
                self.postgres.stop(self.logs / "postgresql.log")
                self.postgres = None
        outcome.memory = self._memory()
        outcome.bounds = self._bounds(outcome)
        outcome.targets = self._targets(outcome)
        return outcome

    # -- servers ----------------------------------------------------------------------------------

    def _start_servers(self) -> None:
        s = self.settings
        if self.tools.grpc_gateway is None:
            raise ServerFailed("no grpc-gateway binary: build it with python -m bench.gogateway build")
        receiver = ServerProcess.start(
            "receiver", [sys.executable, "-m", "bench.receiver", "--port", "0"], self.logs
        )
        self.servers.append(receiver)
        self.receiver = Receiver(f"http://127.0.0.1:{receiver.http_port}")
        serve_db = Database.create(self.workdir / "serve.sqlite")
        workers_db = Database.create(self.workdir / "serve-workers2.sqlite")
        webhook_db = Database.create(self.workdir / "serve-webhook.sqlite")
        webhook_db.subscribe(self.receiver.hook_url(WEBHOOK_HOOK))
        grpc_db = Database.create(self.workdir / "grpc.sqlite")
        common = ["--no-demo", "--log-level", s.server_log_level]
        # --workers above 1 needs fixed ports: free ones, picked just before it binds them.
        workers_ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--workers", "2"]
        progress("starting serve, serve --workers 2, serve with a webhook, grpc, and the two ceilings")
        starting: dict[str, Callable[[], ServerProcess]] = {
            "serve": lambda: start_gateway("serve", "serve", ["--database", serve_db.url, *common], self.logs),
            "serve-workers2": lambda: ServerProcess.start(
                "serve-workers2",
                [gateway_executable(), "serve", *workers_ports, "--database", workers_db.url, *common], self.logs,
            ),
            "serve-webhook": lambda: start_gateway(
                "serve-webhook", "serve", ["--database", webhook_db.url, *common], self.logs
            ),
            "grpc": lambda: start_gateway("grpc", "grpc", ["--database", grpc_db.url, *common], self.logs),
            "ceiling-rest": lambda: start_ceiling("rest", self.logs),
            "ceiling-grpc": lambda: start_ceiling("grpc", self.logs),
        }  # fmt: skip
        with ThreadPoolExecutor(max_workers=len(starting)) as pool:
            futures = {name: pool.submit(start) for name, start in starting.items()}
            started: dict[str, ServerProcess] = {}
            errors = []
            for name, future in futures.items():
                try:
                    started[name] = future.result()
                except ServerFailed as error:
                    errors.append(error)
            self.servers += started.values()
            if errors:
                raise errors[0]
        grpc_server = started["grpc"]
        progress("starting http, grpc-gateway and the naive gateway, in front of grpc")
        backend = f"127.0.0.1:{grpc_server.grpc_port}"
        http = start_gateway(
            "http", "http", ["--backend", backend, "--log-level", s.server_log_level], self.logs
        )
        self.servers.append(http)
        go_gateway = gogateway.start(self.tools.grpc_gateway, backend, self.logs)
        self.servers.append(go_gateway)
        naive = start_ceiling("naive", self.logs, backend)
        self.servers.append(naive)
        serve, rest_ceiling, grpc_ceiling = started["serve"], started["ceiling-rest"], started["ceiling-grpc"]
        workers, webhook = started["serve-workers2"], started["serve-webhook"]
        auth = serve_db.authorization
        grpc_pids = (grpc_server.pid,)

        def rest(server: ServerProcess) -> str:
            return f"http://127.0.0.1:{server.http_port}"

        self.endpoints = {
            # The ceilings check no credentials, but get the same header, so the requests are the same.
            "ceiling-rest": Endpoint(rest(rest_ceiling), None, (rest_ceiling.pid,), None, auth),
            "rest-embedded": Endpoint(rest(serve), None, (serve.pid,), serve_db, auth),
            # The supervisor and its workers: cpu.py counts a process's descendants with it.
            "rest-workers2": Endpoint(rest(workers), None, (workers.pid,), workers_db, workers_db.authorization),
            "rest-webhook": Endpoint(rest(webhook), None, (webhook.pid,), webhook_db, webhook_db.authorization,
                                     hook=WEBHOOK_HOOK),
            # The front end and the grpc process both work for each request: both count, and apart.
            "rest-remote": Endpoint(rest(http), None, (http.pid,), grpc_db, grpc_db.authorization,
                                    backend_pids=grpc_pids),
            "rest-grpcgateway": Endpoint(rest(go_gateway), None, (go_gateway.pid,), grpc_db, grpc_db.authorization,
                                         backend_pids=grpc_pids),
            "rest-naive": Endpoint(rest(naive), None, (naive.pid,), grpc_db, grpc_db.authorization,
                                   backend_pids=grpc_pids),
            "ceiling-grpc": Endpoint(None, f"127.0.0.1:{grpc_ceiling.grpc_port}", (grpc_ceiling.pid,), None, auth),
            "grpc": Endpoint(None, f"127.0.0.1:{serve.grpc_port}", (serve.pid,), serve_db, auth),
        }  # fmt: skip

    def _start_postgres_servers(self, bindir: Path) -> None:
        """Issue 7: a durable cluster, two `grpc` processes on one database, two `http` in front.

        `http-pg1` calls the first process only; `http-pg2` balances round-robin over both. The
        second process idles while the one-process row is measured, so it costs that row nothing.
        """
        s = self.settings
        progress(f"starting a PostgreSQL cluster ({bindir}), two grpc processes and two http on it")
        try:
            self.postgres = BenchPostgres.start(bindir, POSTGRES_DATABASE)
        except (RuntimeError, PostgresMissing) as error:
            raise ServerFailed(f"PostgreSQL could not be started: {error}") from error
        progress(self.postgres.info.describe())
        database = Database.on(self.postgres.dsn)
        common = ["--database", database.url, "--no-demo", "--log-level", s.server_log_level]
        with ThreadPoolExecutor(max_workers=2) as pool:
            starting = [pool.submit(start_gateway, f"grpc-pg{n}", "grpc", common, self.logs) for n in (1, 2)]
        # Both have finished starting, or failed: keep what started so that it is stopped, then fail.
        grpcs = [future.result() for future in starting if future.exception() is None]
        self.servers += grpcs
        for future in starting:
            if future.exception() is not None:
                future.result()
        targets = {
            "rest-pg1": f"127.0.0.1:{grpcs[0].grpc_port}",
            "rest-pg2": "ipv4:" + ",".join(f"127.0.0.1:{g.grpc_port}" for g in grpcs),
        }
        postmaster = (self.postgres.cluster.postmaster_pid(),)
        for n, (key, target) in enumerate(targets.items(), start=1):
            http = start_gateway(
                f"http-pg{n}", "http", ["--backend", target, "--log-level", s.server_log_level], self.logs
            )
            self.servers.append(http)
            # Every gateway process of the row counts: the front end and, apart, the backends it calls.
            self.endpoints[key] = Endpoint(
                f"http://127.0.0.1:{http.http_port}", None, (http.pid,), database, database.authorization,
                postmaster, backend_pids=tuple(g.pid for g in grpcs[:n]),
            )  # fmt: skip

    def _answer_sizes(self) -> AnswerSizes:
        """The ceilings' answer next to one the product gives, for a handle as long as the runs' handles.

        `run0restembedded-10000`: round 0 is this probe; it is seeded apart from every pool.
        """
        serve, ceiling = self.endpoints["rest-embedded"], self.endpoints["ceiling-rest"]
        assert serve.database is not None
        prefix = ANSWER_PREFIX.replace("run1", "run0", 1)
        serve.database.seed(prefix, 1)
        product = fetch_answer(str(serve.rest_url), serve.authorization, f"{prefix}0")
        prepared = fetch_answer(str(ceiling.rest_url), ceiling.authorization, f"{prefix}0")
        response = orders_service_pb2.CancelOrderResponse(order=asyncio.run(cancelled_seed_order()))
        return AnswerSizes(len(prepared), len(product), response.ByteSize())

    def _postgres_figures(
        self, server: PostgresInfo, per_run: dict[str, list[LoadResult]]
    ) -> PostgresFigures:
        one, two = per_run["rest-pg1"], per_run["rest-pg2"]
        # Per run, like the ratios to the ceilings: both rows saw the same minutes of the machine.
        ratios = [b.rps / a.rps if a.rps else None for a, b in zip(one, two, strict=True)]
        database_cpu = {
            key: median([r.database_cpu_per_1k for r in per_run[key]]) for key in POSTGRES_VARIANTS
        }
        return PostgresFigures(server, median(ratios), ratios, database_cpu)

    def _stop_servers(self) -> None:
        # The REST front ends before their gRPC backends, so no request of theirs finds a backend gone;
        # the receiver last, so that no delivery in flight finds it gone.
        def order(server: ServerProcess) -> int:
            if server.name.startswith(FRONT_ENDS):
                return 0
            return 2 if server.name == "receiver" else 1

        for server in sorted(self.servers, key=order):
            server.stop()
        self.servers = []
        self.receiver = None

    def _check_alive(self) -> None:
        for server in self.servers:
            if not server.alive():
                raise ServerFailed(
                    f"{server.name} exited ({server.process.returncode}); see {server.stderr_path}"
                )

    # -- measurements -----------------------------------------------------------------------------

    def _measure(
        self,
        variant: Variant,
        phase: str,
        prefix: str,
        pool: int | None,
        *,
        duration_s: int | None = None,
        requests: int | None = None,
        rate: float | None = None,
        clients: int = 1,
        start: int = 0,
        endpoint: Endpoint | None = None,
    ) -> LoadResult:
        s = self.settings
        endpoint = endpoint or self.endpoints[variant.key]
        if variant.transport == "rest" and duration_s is not None and pool is not None and requests is None:
            # A timed run stops early rather than run out of fresh orders and cancel missing ones.
            requests = wrk_request_cap(s.threads, s.connections, pool - start)
        before = cpu_seconds(endpoint.pids)
        backend_before = cpu_seconds(endpoint.backend_pids)
        database_before = cpu_seconds(endpoint.database_pids)
        if variant.transport == "rest" and rate is not None:
            result = run_h2load_fixed_rate(
                self.tools.h2load, str(endpoint.rest_url), authorization=endpoint.authorization, prefix=prefix,
                rate=rate, clients=clients, duration_s=s.fixed_duration_s,
                workdir=self.workdir / "h2load" / f"{phase}-{variant.key}",
            )  # fmt: skip
        elif variant.transport == "rest":
            result = run_wrk(
                self.tools.wrk, str(endpoint.rest_url), authorization=endpoint.authorization, prefix=prefix,
                threads=s.threads, connections=s.connections, duration_s=duration_s, requests=requests, start=start,
            )  # fmt: skip
        else:
            call = GrpcCall(str(endpoint.grpc_target), CANCEL_METHOD, protoset_path(), endpoint.authorization)
            reports = self.workdir / "ghz"
            reports.mkdir(parents=True, exist_ok=True)
            result = run_ghz(
                self.tools.ghz, call, prefix=prefix, concurrency=s.connections, connections=s.grpc_connections,
                output=reports / f"{phase}-{variant.key}.json",
                duration_s=duration_s if rate is None else s.fixed_duration_s, total=requests, rps=rate,
            )  # fmt: skip
        front_cpu_s = cpu_seconds(endpoint.pids) - before
        if endpoint.backend_pids:
            result.backend_cpu_s = cpu_seconds(endpoint.backend_pids) - backend_before
        result.server_cpu_s = front_cpu_s + (result.backend_cpu_s or 0.0)
        if endpoint.database_pids:
            result.database_cpu_s = cpu_seconds(endpoint.database_pids) - database_before
        self._check_alive()
        assert self.outcome is not None
        self.outcome.measurements.append(Measurement(phase, variant.key, result, pool, rate))
        cpu = "" if result.cpu_per_1k is None else f", {result.cpu_per_1k:.3f} CPU s/1k"
        failed = f", {result.failures} FAILED" if result.failures else ""
        early = ""
        if duration_s is not None and rate is None and result.seconds < 0.9 * duration_s:
            early = f", stopped after {result.seconds:.1f} s: all {pool} seeded orders used"
        progress(
            f"{phase:>8} {variant.label:<36} {result.rps:8.0f} req/s, p50 {result.p50_ms:7.2f} ms, "
            f"p99 {result.p99_ms:7.2f} ms{cpu} ({result.requests} requests{failed}{early})"
        )
        if rate is None:
            self.best_rps[variant.key] = max(self.best_rps.get(variant.key, 0.0), result.rps)
        if endpoint.hook is not None:
            self._catch_up(endpoint.hook, result.requests - result.failures)
        return result

    def _catch_up(self, hook: str, answered: int) -> HookCounts:
        """Wait until the receiver has the event of every cancel answered so far at `hook`.

        Deliveries left behind would be sent during the next row's measurement, and cost it CPU.
        """
        assert self.receiver is not None
        self.hook_cancels[hook] = self.hook_cancels.get(hook, 0) + answered
        started = time.monotonic()
        counts = self.receiver.wait_for(hook, self.hook_cancels[hook])
        self.catch_up_s.append(time.monotonic() - started)
        progress(
            f"{'':>8} webhook: {counts.events} of {self.hook_cancels[hook]} events delivered in"
            f" {counts.deliveries} POSTs; {self.catch_up_s[-1]:.2f} s to catch up after the load"
        )
        return counts

    def _webhook_row(self) -> WebhookRow:
        """The subscribed row's deliveries over the whole run, once every one has had its time."""
        assert self.receiver is not None
        counts = self.receiver.wait_for(WEBHOOK_HOOK, self.hook_cancels.get(WEBHOOK_HOOK, 0))
        return WebhookRow(self.hook_cancels.get(WEBHOOK_HOOK, 0), counts, list(self.catch_up_s))

    def _delivery(self) -> Delivery:
        """Events delivered per second: a backlog made with no worker running, drained by a fresh serve."""
        s = self.settings
        assert self.receiver is not None
        database = Database.create(self.workdir / "delivery.sqlite")
        database.subscribe(self.receiver.hook_url(DELIVERY_HOOK))
        prefix = "delivery-"
        database.seed(prefix, s.delivery_events)
        started = time.monotonic()
        cancel_in_process(database.url, database.account, prefix, s.delivery_events)
        progress(f"delivery: {s.delivery_events} events in the outbox in {time.monotonic() - started:.1f} s;"
                 " a fresh serve sends them")  # fmt: skip
        self.receiver.hold(DELIVERY_HOOK)
        server = start_gateway(
            "serve-delivery", "serve",
            ["--database", database.url, "--no-demo", "--log-level", s.server_log_level], self.logs,
        )  # fmt: skip
        self.servers.append(server)
        before = cpu_seconds((server.pid,))
        self.receiver.release(DELIVERY_HOOK)
        counts = self.receiver.wait_for(DELIVERY_HOOK, s.delivery_events)
        delivery = Delivery(s.delivery_events, counts, cpu_seconds((server.pid,)) - before)
        self.servers.remove(server)
        server.stop()
        rate = delivery.events_per_s
        progress(
            f"delivery: {counts.events} of {s.delivery_events} events in {counts.deliveries} POSTs over"
            f" {counts.seconds:.2f} s" + ("" if rate is None else f": {rate:.0f} events/s")
        )
        return delivery

    def _closed_loop(self, variant: Variant, phase: str, pool: int | None) -> LoadResult:
        """One timed full-speed measurement; measured again, on a larger pool, if its pool ran out.

        wrk stops at the end of its pool by itself: a shorter run, valid but noisier. ghz cannot (its
        -n is ignored once a duration is set, ghz v0.121.0), so a gRPC run that needed more orders
        than were seeded has cancelled missing ones. Either is measured again on a pool twice what it
        used; the first attempt is kept apart in `Outcome.discarded`, not among the measurements.
        """
        duration_s = self.settings.duration_s
        result = self._measure(variant, phase, _prefix(phase, variant), pool, duration_s=duration_s)
        database = self.endpoints[variant.key].database
        outran = pool is not None and (result.handles_used > pool or result.seconds < 0.9 * duration_s)
        if pool is None or database is None or not outran:
            return result
        assert self.outcome is not None
        self.outcome.discarded.append(self.outcome.measurements.pop())
        needed = result.handles_used / result.seconds * duration_s if result.seconds else result.handles_used
        bigger = self._pool(variant, max(self._expected_requests(variant), 2 * needed))
        progress(f"{phase}: {variant.label} needed more than the {pool} seeded orders; again with {bigger}")
        retry = f"{phase}again"
        database.seed(_prefix(retry, variant), bigger)
        return self._measure(variant, phase, _prefix(retry, variant), bigger, duration_s=duration_s)

    def _expected_requests(self, variant: Variant) -> float:
        """Requests a timed run of `variant` may make: the highest rate seen, with a margin.

        For gRPC its ceiling's rate counts too: ghz, on the same cores, often limits both alike, and
        a gRPC pool cannot cap its run (see `_closed_loop`). For REST the ceiling is many times
        faster, and wrk stops at the end of the pool, so the variant's own rate is enough.
        """
        rate = self.best_rps.get(variant.key, 0.0)
        if variant.transport == "grpc" and variant.ceiling is not None:
            rate = max(rate, self.best_rps.get(variant.ceiling, 0.0))
        return rate * self.settings.duration_s * POOL_MARGIN

    def _pool(self, variant: Variant, requests: float) -> int:
        """Orders to seed for `requests` requests of `variant`, with room for those in flight."""
        s = self.settings
        return pool_size(variant.transport, requests, threads=s.threads, connections=s.connections)

    def _warm_up(self) -> None:
        """A fixed number of requests per variant: code paths warm, and a first estimate of its rate."""
        n = self.settings.warmup_requests
        pools = self._seed_pools("warmup", {v.key: self._pool(v, n) for v in self.variants})
        for variant in self.variants:
            self._measure(variant, "warm-up", _prefix("warmup", variant), pools.get(variant.key), requests=n)

    def _seed_run(self, phase: str) -> dict[str, int]:
        """Seed the pools of one round, before any of its measurements: the pool of each variant."""
        wanted = {v.key: self._pool(v, self._expected_requests(v)) for v in self.variants}
        return self._seed_pools(phase, wanted)

    def _seed_pools(self, phase: str, sizes: dict[str, int]) -> dict[str, int]:
        """Seed the pool of each variant that has a database; the sizes of those seeded.

        Each `seed` is a process of its own: the databases are seeded side by side, as many at a time
        as there are cores (one seed at a time within a database, which several variants may share),
        before the phase measures anything.
        """
        by_database: dict[str, list[tuple[Database, str, int]]] = {}
        pools = {}
        for variant in self.variants:
            database = self.endpoints[variant.key].database
            if database is not None:
                pools[variant.key] = sizes[variant.key]
                by_database.setdefault(database.url, []).append(
                    (database, _prefix(phase, variant), sizes[variant.key])
                )

        def seed_all(jobs: list[tuple[Database, str, int]]) -> None:
            for database, prefix, count in jobs:
                database.seed(prefix, count)

        with ThreadPoolExecutor(max_workers=max(1, min(len(by_database), os.cpu_count() or 1))) as pool:
            for done in [pool.submit(seed_all, jobs) for jobs in by_database.values()]:
                done.result()
        return pools

    def _fixed_rate(self, variant: Variant, rate: float) -> FixedRate:
        assert variant.ceiling is not None
        database = self.endpoints[variant.key].database
        assert database is not None
        s = self.settings
        clients = fixed_rate_clients(rate, s.fixed_clients)
        pool = fixed_rate_pool_size(
            variant.transport, rate, s.fixed_duration_s, clients=clients, connections=s.connections
        )
        if variant.transport == "rest":
            tool = f"h2load --rps, {clients} connections"
        else:
            tool = f"ghz --rps, concurrency {s.connections}"
        prefix = _prefix("fixed", variant)
        database.seed(prefix, pool)
        result = self._measure(variant, "fixed", prefix, pool, rate=rate, clients=clients)
        ceiling = self._measure(BY_KEY[variant.ceiling], "fixed", prefix, None, rate=rate, clients=clients)
        return FixedRate(variant.key, rate, tool, result, ceiling)

    def _bounds(self, outcome: Outcome) -> Measured:
        """bench/bounds.py's variants, at the product's own fixed rates, after every product row."""
        s = self.settings
        rates = {f.variant: f.rate for f in outcome.fixed}
        settings = BoundsSettings(
            duration_s=s.duration_s,
            rounds=s.runs,
            fixed_duration_s=s.fixed_duration_s,
            rest_rate=rates["rest-embedded"],
            fixed_clients=s.fixed_clients,
            grpc_rate=rates["grpc"],
        )
        progress("the bare servers with a durable commit, and with the essential cancel (bench/bounds.py)")
        return run_bounds(settings, self.workdir / "bounds", self.tools)

    def _memory(self) -> Memory:
        """A fresh `serve`: RSS at start, then after each of `memory_checkpoints` equal rounds of cancels."""
        s = self.settings
        database = Database.create(self.workdir / "memory.sqlite")
        chunk = math.ceil(s.memory_cancels / s.memory_checkpoints)
        variant = BY_KEY["rest-embedded"]
        pool = s.memory_checkpoints * self._pool(variant, chunk)
        database.seed("memory-", pool)
        server = start_gateway(
            "serve-memory", "serve",
            ["--database", database.url, "--no-demo", "--log-level", s.server_log_level], self.logs,
        )  # fmt: skip
        self.servers.append(server)
        endpoint = Endpoint(f"http://127.0.0.1:{server.http_port}", None, (server.pid,), database,
                            database.authorization)  # fmt: skip
        try:
            checkpoints = [(0, rss_bytes(server.pid))]
            progress(
                f"memory: serve RSS at start {checkpoints[0][1] / 2**20:.1f} MiB; {s.memory_cancels} cancels"
            )
            start, done = 0, 0
            for k in range(1, s.memory_checkpoints + 1):
                result = self._measure(
                    variant, f"memory{k}", "memory-", pool, requests=chunk, start=start, endpoint=endpoint
                )
                start += result.handles_used
                done += result.requests
                checkpoints.append((done, rss_bytes(server.pid)))
                progress(f"memory: RSS after {done} cancels {checkpoints[-1][1] / 2**20:.1f} MiB")
            if start > pool:
                raise RuntimeError(f"memory rounds used {start} orders of {pool} seeded")
        finally:
            self._stop_servers()
        return Memory(checkpoints)

    # -- ratios and targets -----------------------------------------------------------------------

    @staticmethod
    def _row(variant: Variant, per_run: dict[str, list[LoadResult]]) -> VariantFigures:
        """A variant's figures, as ratios to its ceiling and, for a REST row, to grpc-gateway's."""
        ceiling = per_run[variant.ceiling] if variant.ceiling else None
        reference = per_run[GRPC_GATEWAY_VARIANT] if variant.transport == "rest" and variant.ceiling else None
        return summarise(variant.key, variant.label, per_run[variant.key], ceiling, reference)

    def _ratios(self, per_run: dict[str, list[LoadResult]], outcome: Outcome) -> list[Ratio]:
        fixed = {f.variant: (f.result, f.ceiling) for f in outcome.fixed}
        absent = "not measured: no PostgreSQL server binaries here"
        missing = dict.fromkeys(POSTGRES_VARIANTS, absent) if outcome.postgres_skipped else {}
        return ratios.compute(per_run, fixed, missing)

    @staticmethod
    def _targets(outcome: Outcome) -> list[Target]:
        by_key = {r.key: r for r in outcome.ratios}
        targets = []
        floors = _sync_floors(outcome)
        bounds = _bound_notes(outcome)
        for target in RATIO_TARGETS:
            ratio = by_key[target.ratio]
            runs = ", ".join("n/a" if r is None else f"{r:.2f}" for r in ratio.runs)
            notes = [f"runs: {runs}" if len(ratio.runs) > 1 else floors.get(target.ratio, "")]
            note = "; ".join(n for n in [*notes, bounds.get(target.ratio, "")] if n)
            targets.append(
                Target(ratio.name, ratio.value, target.bound, target.at_least, "x", note, ratio.missing)
            )
        compact = outcome.encoders.speedup_over_compact_message_to_json
        targets.append(
            Target(
                "JSON: encode_json faster than MessageToJson(order) (default arguments, as the issue says) by",
                outcome.encoders.speedup_over_message_to_json,
                JSON_SPEEDUP_OVER_MESSAGE_TO_JSON,
                True,
                "x",
                f"over MessageToJson compact with proto names (our shape): {compact:.2f}x",
            )
        )
        if outcome.memory is not None:
            first, last = outcome.memory.checkpoints[1][0], outcome.memory.checkpoints[-1][0]
            targets.append(
                Target(
                    f"memory: serve RSS growth from {first} to {last} cancels",
                    outcome.memory.growth * 100,
                    MAX_RSS_GROWTH * 100,
                    False,
                    "%",
                )
            )
        return targets


# The tail targets, by the fixed-rate row whose ceiling's p99 they divide by.
_TAIL_TARGETS = {"rest-tail-over-aiohttp": "rest-embedded", "grpc-tail-over-bare": "grpc"}


def _bound_notes(outcome: Outcome) -> dict[str, str]:
    """For the targets against the bare servers and grpc-gateway, what the bare server makes with the
    essential cancel added (bench/bounds.py): the product's own credentials check, cancel rule, store
    write and encoder, without its transport."""
    bounds = outcome.bounds
    if bounds is None:
        return {}
    least = f"bare {bounds.bound}"
    notes = {
        "grpc-over-bare": f"{least}: {bounds.over_bare('grpc', bounds.bound):.2f}x",
        "rest-tail-over-aiohttp": f"{least} at that rate: {bounds.tail_over_bare('rest'):.2f}x",
        "grpc-tail-over-bare": f"{least} at that rate: {bounds.tail_over_bare('grpc'):.2f}x",
    }
    gateway = next((r.medians["rps"] for r in outcome.rows if r.key == GRPC_GATEWAY_VARIANT), None)
    if gateway:
        essential = bounds.rps("rest", bounds.bound)
        notes["serve-over-grpc-gateway"] = (
            f"{least} (REST): {essential:.0f} req/s, {essential / gateway:.2f}x grpc-gateway's"
        )
    return notes


def _sync_floors(outcome: Outcome) -> dict[str, str]:
    """For each tail target, the disk's fdatasync p99 alone over the same ceiling's p99: where that is
    above the target's bound, no durable write can meet it on this disk."""
    if outcome.disk is None:
        return {}
    notes = {}
    for target, variant in _TAIL_TARGETS.items():
        fixed = next((f for f in outcome.fixed if f.variant == variant), None)
        if fixed is None or not fixed.ceiling.p99_ms:
            continue
        floor = outcome.disk.p99_ms / fixed.ceiling.p99_ms
        notes[target] = (
            f"the disk's fdatasync p99 alone is {outcome.disk.p99_ms:.2f} ms, {floor:.2f}x that ceiling's p99"
        )
    return notes
