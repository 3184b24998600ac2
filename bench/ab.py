"""`python -m bench.ab BEFORE AFTER`: two revisions of the gateway measured in alternating rounds.

Is a change "no slower"? Each revision is checked out into its own detached `git worktree` under
build/ab/<sha>, and its servers run from there: the venv's Python with `PYTHONPATH=<worktree>` and
the worktree as working directory (the venv's editable install of the repository is an import
hook consulted after PYTHONPATH, so it cannot shadow the worktree; a probe run the same way checks
that `gateway` and `gateway.cli` come from the worktree before anything is measured). The harness
itself (this file, wrk's script, the load tools) is the same for both.

Three rows, each measured per round for BEFORE and AFTER, in ABBA order (round 1 before then after,
round 2 after then before, ...), so that a machine getting busier or calmer favours neither:

- REST cancel, embedded: `serve`, wrk `bench/wrk/cancel.lua`;
- REST cancel, http + grpc processes: `http --backend` in front of `grpc`, wrk;
- gRPC CancelOrder: `serve`'s gRPC port, ghz with the revision's own descriptor set.

Every measurement has a fresh SQLite database and fresh servers (on free loopback ports,
`--log-level warning`), created and seeded by the revision's own code; a warm-up of a fixed number
of requests on its own orders; then a pool of fresh orders sized from the highest rate seen so far
with a margin of 2 (as bench/suite.py sizes its pools), and the timed run. A run that outran its
pool is measured again on a larger one. CPU is user + system time of the row's server processes.

The same revision can be measured against itself with different server flags: `--before-args` and
`--after-args` (one string each, split as a shell would) are added to the command line of the servers
that own the database (`serve`, `grpc`) on that side, e.g.
`python -m bench.ab HEAD HEAD --before-args '--sqlite-synchronous normal' --after-args '--sqlite-synchronous full'`.

Progress goes to stderr, the table to stdout. Exit status 0: every request succeeded (the 3 %
verdict is reported, not enforced); 1: some request failed; 2: a revision, a tool or a server
could not be set up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from bench.cpu import cpu_seconds
from bench.database import ACCOUNT, Database
from bench.environment import describe
from bench.load import (
    GrpcCall,
    LoadResult,
    LoadToolFailed,
    pool_size,
    run_ghz,
    run_wrk,
    wrk_request_cap,
)
from bench.postgres import free_port
from bench.processes import COMMAND_TIMEOUT_S, REPO, ServerFailed, ServerProcess
from bench.tools import ToolMissing, Tools, ensure_tools

WORKTREES = REPO / "build" / "ab"
GHZ_CONFIG = Path(__file__).resolve().parent / "ghz" / "cancel-protoset.json"
# Pools hold this many times the requests the highest rate seen so far would make (bench/suite.py's).
POOL_MARGIN = 2.0
# Before a row's first timed run only its warm-up's rate is known, and a short warm-up starts slower
# than a timed run goes (ghz especially): a wider margin, so that the first run rarely has to be redone.
FIRST_POOL_MARGIN = 4.0
MIN_POOL = 1000
ATTEMPTS = 3  # a run that outran its pool is measured again, on a larger one, at most this often in all
TOLERANCE = 0.03  # "within 3 %": after ÷ before of the medians, either way
Side = Literal["before", "after"]


def progress(message: str) -> None:
    print(f"ab: {message}", file=sys.stderr, flush=True)


class SetupFailed(Exception):
    """A revision could not be checked out, or its code is not what a child process imports."""


# -- settings and rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    duration_s: int = 8
    threads: int = 2  # wrk threads
    connections: int = 32  # wrk connections, and ghz concurrency (calls in flight)
    grpc_connections: int = 1  # ghz connections: gRPC clients multiplex calls over one
    warmup_requests: int = 2000
    server_log_level: str = "warning"


QUICK = Settings(rounds=1, duration_s=1, warmup_requests=300)


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    transport: Literal["rest", "grpc"]


ROWS = (
    Row("rest-embedded", "REST cancel, embedded (serve), wrk", "rest"),
    Row("rest-remote", "REST cancel, http + grpc processes, wrk", "rest"),
    Row("grpc", "gRPC CancelOrder (serve), ghz", "grpc"),
)


def order_of_round(number: int) -> tuple[Side, Side]:
    """ABBA: odd rounds (1, 3, ...) before then after, even rounds after then before."""
    return ("before", "after") if number % 2 == 1 else ("after", "before")


# -- revisions ------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path = REPO) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise SetupFailed(f"git {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


@dataclass(frozen=True)
class Revision:
    """One side of the comparison: a commit, checked out in its own worktree, and how to run its code."""

    side: Side
    name: str  # as given on the command line
    sha: str
    subject: str
    tree: Path
    server_args: tuple[str, ...] = ()  # added to `serve` and `grpc`, the servers that own the database

    @property
    def short(self) -> str:
        return self.sha[:10]

    @property
    def shown(self) -> str:
        """The commit, its name, and the server flags of this side when there are any."""
        flags = f" [{shlex.join(self.server_args)}]" if self.server_args else ""
        return f"{self.short} ({self.name}){flags}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.tree)}

    @property
    def protoset(self) -> Path:
        return self.tree / "gateway" / "gen" / "orders.protoset"

    def argv(self, *args: str) -> list[str]:
        """`hypertrack-gateway ARGS` of this revision: the venv's Python on the worktree's package."""
        return [sys.executable, "-m", "gateway", *args]

    def run(self, *args: str) -> str:
        """A one-shot command of this revision (accounts, seed); its stdout."""
        result = subprocess.run(
            self.argv(*args), cwd=self.tree, env=self.env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT_S, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerFailed(
                f"{self.side} ({self.short}): hypertrack-gateway {' '.join(args)} failed "
                f"({result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def server_argv(self, mode: str, options: Sequence[str]) -> list[str]:
        """`hypertrack-gateway MODE` of this revision on free ports, with this side's server flags
        where the database is."""
        extra = self.server_args if mode in ("serve", "grpc") else ()
        # --workers above 1 needs fixed ports: free ones, picked just before the server binds them.
        port = (lambda: str(free_port())) if "--workers" in extra else (lambda: "0")
        ports = {
            "serve": ["--http-port", port(), "--grpc-port", port()],
            "grpc": ["--grpc-port", port()],
            "http": ["--http-port", port()],
        }[mode]
        return self.argv(mode, *ports, *options, *extra)

    def start(self, name: str, mode: str, options: Sequence[str], log_dir: Path) -> ServerProcess:
        """`hypertrack-gateway MODE` of this revision on free ports (as bench.processes.start_gateway)."""
        return ServerProcess.start(
            name, self.server_argv(mode, options), log_dir, cwd=self.tree, env=self.env
        )

    def check_code(self) -> str:
        """Where a child run like the servers imports `gateway` from; raises unless from the worktree."""
        probe = "import gateway, gateway.cli; print(gateway.__file__); print(gateway.cli.__file__)"
        result = subprocess.run(
            [sys.executable, "-c", probe], cwd=self.tree, env=self.env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        files = result.stdout.split()
        if result.returncode != 0 or len(files) != 2:
            raise SetupFailed(f"{self.side} ({self.short}): `import gateway` failed: {result.stderr[-2000:]}")
        for file in files:
            if not Path(file).resolve().is_relative_to(self.tree.resolve()):
                raise SetupFailed(f"{self.side} ({self.short}): a child imports {file}, not from {self.tree}")
        return files[0]


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@dataclass
class Worktrees:
    """The worktrees under build/ab/<sha>: reused when already there, removed at the end if made here."""

    root: Path = WORKTREES
    keep: bool = False
    made: list[Path] = field(default_factory=list)

    def checkout(self, side: Side, name: str, server_args: Sequence[str] = ()) -> Revision:
        try:
            sha = _git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
        except SetupFailed as error:
            raise SetupFailed(f"{side}: {name!r} names no commit here") from error
        subject = _git("log", "-1", "--format=%s", sha)
        tree = self.root / sha
        if tree.exists():
            # A directory that is no worktree of its own would answer for the repository around it.
            top = _git("rev-parse", "--show-toplevel", cwd=tree)
            head = _git("rev-parse", "HEAD", cwd=tree)
            dirty = _git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no", cwd=tree)
            if Path(top).resolve() != tree.resolve() or head != sha or dirty:
                raise SetupFailed(f"{tree} exists but is not a clean checkout of {sha}: remove it first")
            progress(f"{side}: reusing the worktree {_shown(tree)}")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            _git("worktree", "add", "--detach", str(tree), sha)
            self.made.append(tree)
            progress(f"{side}: {name} checked out in {_shown(tree)}")
        revision = Revision(side, name, sha, subject, tree, tuple(server_args))
        progress(f"{side}: {revision.shown} {subject!r}; a child imports {revision.check_code()}")
        return revision

    def remove(self) -> None:
        for tree in self.made:
            if self.keep:
                progress(f"kept the worktree {_shown(tree)} (reused by the next run)")
            else:
                _git("worktree", "remove", "--force", str(tree))
        self.made = []


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class Measurement:
    round: int
    row: str
    side: Side
    attempt: int
    pool: int
    warmup: LoadResult
    result: LoadResult


@dataclass
class Servers:
    """The servers of one measurement: where the load goes, and whose CPU it costs."""

    processes: list[ServerProcess]
    rest_url: str | None = None
    grpc_target: str | None = None

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.processes)

    def check_alive(self) -> None:
        for server in self.processes:
            if not server.alive():
                raise ServerFailed(
                    f"{server.name} exited ({server.process.returncode}); see {server.stderr_path}"
                )

    def stop(self) -> None:
        # The REST front end before its gRPC backend, so no request of its finds the backend gone.
        for server in sorted(self.processes, key=lambda s: not s.name.startswith("http")):
            server.stop()


class AB:
    """Runs the rounds in `workdir` (a directory per measurement: database, server logs, ghz reports)."""

    def __init__(
        self, settings: Settings, tools: Tools, workdir: Path, method: str, rows: Sequence[Row] = ROWS
    ) -> None:
        self.settings = settings
        self.rows = tuple(rows)
        self.tools = tools
        self.workdir = workdir
        self.method = method
        self.best_rps: dict[str, float] = {}
        self.measurements: list[Measurement] = []
        self.discarded: list[Measurement] = []

    def run(self, before: Revision, after: Revision) -> None:
        revisions = {"before": before, "after": after}
        for number in range(1, self.settings.rounds + 1):
            for row in self.rows:
                for side in order_of_round(number):
                    self.measurements.append(self.measure(revisions[side], row, number))

    def measure(self, revision: Revision, row: Row, number: int) -> Measurement:
        s = self.settings
        where = self.workdir / f"round{number}-{row.key}-{revision.side}"
        where.mkdir(parents=True)
        database_path = where / "gateway.sqlite"
        url = f"sqlite:///{database_path}"
        printed = revision.run("accounts", "create", "--database", url, ACCOUNT).strip()
        account, _, secret = printed.rpartition("\n")[2].partition(":")
        database = Database(url, account, secret)
        self.seed(revision, database, "warmup-", self.pool(row, s.warmup_requests))
        servers = self.start(revision, row, database, where)
        try:
            warmup = self.load(
                row, revision, servers, database, prefix="warmup-", report=where / "ghz-warmup.json",
                requests=s.warmup_requests,
            )  # fmt: skip
            if warmup.failures:
                progress(
                    f"{revision.side} {row.key} warm-up: {warmup.failures} FAILED: {warmup.failure_sample}"
                )
            for attempt in range(1, ATTEMPTS + 1):
                margin = POOL_MARGIN if row.key in self.best_rps else FIRST_POOL_MARGIN
                rate = max(self.best_rps.get(row.key, 0.0), warmup.rps)
                needed = rate * s.duration_s * margin * (2 ** (attempt - 1))
                pool = self.pool(row, needed)
                prefix = f"run{attempt}-"
                self.seed(revision, database, prefix, pool)
                report = where / f"ghz-run{attempt}.json"
                result = self.load(row, revision, servers, database, prefix=prefix, report=report, pool=pool)
                measurement = Measurement(number, row.key, revision.side, attempt, pool, warmup, result)
                outran = result.handles_used > pool or result.seconds < 0.9 * s.duration_s
                self.report(measurement, outran)
                if not outran or attempt == ATTEMPTS:
                    break
                self.discarded.append(measurement)
            self.best_rps[row.key] = max(self.best_rps.get(row.key, 0.0), result.rps)
            return measurement
        finally:
            servers.stop()
            database_path.unlink(missing_ok=True)  # logs and ghz reports stay; a database is large

    def seed(self, revision: Revision, database: Database, prefix: str, count: int) -> None:
        """`prefix0` ... as open orders, by the revision's own `seed` (as Database.seed checks it)."""
        printed = revision.run(
            "seed", "--database", database.url, "--account", database.account, "--count", str(count),
            "--prefix", prefix,
        )  # fmt: skip
        if not printed.startswith(f"seeded {count} "):
            raise ServerFailed(f"seeding {count} orders {prefix}0 ... printed {printed.strip()!r}")

    def pool(self, row: Row, requests: float) -> int:
        """Orders to seed for `requests` requests of `row`, with room for those in flight
        (bench/load.py's pool_size, as suite.py's)."""
        s = self.settings
        return pool_size(
            row.transport, max(MIN_POOL, math.ceil(requests)), threads=s.threads, connections=s.connections
        )

    def start(self, revision: Revision, row: Row, database: Database, where: Path) -> Servers:
        common = ["--database", database.url, "--no-demo", "--log-level", self.settings.server_log_level]
        logs = where / "logs"
        if row.key != "rest-remote":
            serve = revision.start("serve", "serve", common, logs)
            return Servers([serve], f"http://127.0.0.1:{serve.http_port}", f"127.0.0.1:{serve.grpc_port}")
        grpc = revision.start("grpc", "grpc", common, logs)
        try:
            backend = f"127.0.0.1:{grpc.grpc_port}"
            options = ["--backend", backend, "--log-level", self.settings.server_log_level]
            http = revision.start("http", "http", options, logs)
        except BaseException:
            grpc.stop()
            raise
        # Both processes work for each request: both count.
        return Servers([http, grpc], f"http://127.0.0.1:{http.http_port}", backend)

    def load(
        self,
        row: Row,
        revision: Revision,
        servers: Servers,
        database: Database,
        *,
        prefix: str,
        report: Path,
        requests: int | None = None,
        pool: int | None = None,
    ) -> LoadResult:
        """The warm-up (`requests` answers) or the timed run (on `pool` orders); the servers' CPU."""
        s = self.settings
        duration_s = None if requests is not None else s.duration_s
        before = cpu_seconds(servers.pids)
        if row.transport == "rest":
            if pool is not None:  # a timed run stops at the end of its pool rather than cancel missing orders
                requests = wrk_request_cap(s.threads, s.connections, pool)
            result = run_wrk(
                self.tools.wrk, str(servers.rest_url), authorization=database.authorization, prefix=prefix,
                threads=s.threads, connections=s.connections, duration_s=duration_s, requests=requests,
            )  # fmt: skip
        else:
            call = GrpcCall(str(servers.grpc_target), self.method, revision.protoset, database.authorization)
            result = run_ghz(
                self.tools.ghz, call, prefix=prefix, concurrency=s.connections, connections=s.grpc_connections,
                output=report, duration_s=duration_s, total=requests,
            )  # fmt: skip
        result.server_cpu_s = cpu_seconds(servers.pids) - before
        servers.check_alive()
        return result

    def report(self, m: Measurement, outran: bool) -> None:
        r = m.result
        cpu = "" if r.cpu_per_1k is None else f", {r.cpu_per_1k:.3f} CPU ms/req"
        failed = f", {r.failures} FAILED: {r.failure_sample}" if r.failures else ""
        again = f"; it outran its {m.pool} orders, measured again" if outran and m.attempt < ATTEMPTS else ""
        progress(
            f"round {m.round} {m.row:<13} {m.side:<6} {r.rps:8.0f} req/s, p50 {r.p50_ms:6.2f} ms, "
            f"p99 {r.p99_ms:6.2f} ms{cpu} ({r.requests} requests in {r.seconds:.1f} s{failed}){again}"
        )


# -- figures and the table ------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None or before == 0 else after / before


@dataclass(frozen=True)
class RowFigures:
    """One row: the medians of each side over the rounds, their ratio, and the figures round by round."""

    row: Row
    rps: dict[Side, float | None]
    cpu_ms: dict[Side, float | None]  # CPU ms per request = CPU s per 1,000 requests
    p50_ms: dict[Side, float | None]
    rounds: list[tuple[int, tuple[Side, Side], float, float]]  # round, order, before req/s, after req/s

    @property
    def ratio(self) -> float | None:
        return _ratio(self.rps["after"], self.rps["before"])

    @property
    def round_ratio(self) -> float | None:
        """The median of the per-round ratios: each compares two runs minutes apart, not rounds apart."""
        return _median([_ratio(after, before) for _, _, before, after in self.rounds])

    @property
    def cpu_ratio(self) -> float | None:
        return _ratio(self.cpu_ms["after"], self.cpu_ms["before"])

    @property
    def verdict(self) -> str:
        ratio = self.ratio
        if ratio is None:
            return "n/a"
        if abs(ratio - 1) <= TOLERANCE:
            return "yes"
        return "no: slower" if ratio < 1 else "no: faster"


def figures(measurements: Sequence[Measurement], settings: Settings) -> list[RowFigures]:
    rows = []
    for row in ROWS:
        by = {(m.round, m.side): m.result for m in measurements if m.row == row.key}
        if not by:
            continue  # not among --rows
        sides: tuple[Side, Side] = ("before", "after")
        numbers = sorted({number for number, _ in by})
        results = {side: [by[n, side] for n in numbers if (n, side) in by] for side in sides}
        rows.append(
            RowFigures(
                row,
                {side: _median([r.rps for r in results[side]]) for side in sides},
                {side: _median([r.cpu_per_1k for r in results[side]]) for side in sides},
                {side: _median([r.p50_ms for r in results[side]]) for side in sides},
                [
                    (n, order_of_round(n), by[n, "before"].rps, by[n, "after"].rps)
                    for n in numbers
                    if (n, "before") in by and (n, "after") in by
                ],
            )
        )
    return rows


def failures(measurements: Sequence[Measurement]) -> list[str]:
    """One line per warm-up or timed run in which any request failed (or none was answered)."""
    lines = []
    for m in measurements:
        for what, r in (("warm-up", m.warmup), ("run", m.result)):
            if r.failures or r.requests == 0:
                sample = f"; first: {r.failure_sample}" if r.failure_sample else ""
                lines.append(
                    f"round {m.round} {m.row} {m.side} {what}: {r.failures} of {r.requests} requests failed{sample}"
                )
    return lines


def _num(value: float | None, decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned (report.py's)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([cells[0].ljust(widths[0]), *rest]).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


@dataclass
class Outcome:
    environment: dict[str, str]
    settings: Settings
    before: Revision
    after: Revision
    measurements: list[Measurement]
    discarded: list[Measurement]
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    seconds: float


def render(outcome: Outcome) -> str:
    env, s = outcome.environment, outcome.settings
    rows = figures(outcome.measurements, s)
    load = " / ".join(f"{a:.1f}" for a in (outcome.load_start[0], outcome.load_end[0]))
    out = [
        "hypertrack-gateway before/after: POST /orders/{handle}/cancel and OrdersService/CancelOrder",
        f"before {outcome.before.shown}: {outcome.before.subject}",
        f"after  {outcome.after.shown}: {outcome.after.subject}",
        f"date {env['date']} | {env['cores']} cores ({env['usable_cores']} usable) | {env['machine']}"
        f" | load average at start / end {load}",
        f"tools: {env['wrk']}; {env['ghz']}",
        f"load: {s.rounds} round(s) of {s.duration_s} s per row and revision, ABBA (odd rounds before first);"
        f" wrk -t{s.threads} -c{s.connections}; ghz -c{s.connections} --connections {s.grpc_connections};"
        f" servers --log-level {s.server_log_level}; each run: fresh servers and SQLite database,"
        f" {s.warmup_requests} warm-up requests, every cancel a fresh open order",
        f"figures: medians over the rounds; 'within {TOLERANCE:.0%}': after/before of the req/s medians;"
        " rounds' ratio: the median of the rounds' after/before;"
        " CPU: user + system of the row's server processes, ms per request",
        "",
    ]
    header = ["Row", "before req/s", "after req/s", "after/before", f"within {TOLERANCE:.0%}", "rounds' ratio",
              "CPU ms/req before", "after", "after/before", "p50 ms before", "after"]  # fmt: skip
    out += _table(
        header,
        [
            [
                f.row.label,
                _num(f.rps["before"], 0),
                _num(f.rps["after"], 0),
                _num(f.ratio, 3),
                f.verdict,
                _num(f.round_ratio, 3),
                _num(f.cpu_ms["before"], 3),
                _num(f.cpu_ms["after"], 3),
                _num(f.cpu_ratio, 3),
                _num(f.p50_ms["before"], 2),
                _num(f.p50_ms["after"], 2),
            ]
            for f in rows
        ],
    )
    out += ["", "Round by round: req/s before | after (after/before) [which ran first]"]
    numbers = sorted({n for f in rows for n, *_ in f.rounds})
    per_round = []
    for f in rows:
        cells = {n: (order, b, a) for n, order, b, a in f.rounds}
        per_round.append(
            [f.row.label]
            + [
                f"{cells[n][1]:.0f} | {cells[n][2]:.0f} ({_num(_ratio(cells[n][2], cells[n][1]), 3)})"
                f" [{cells[n][0][0]} first]"
                if n in cells
                else "n/a"
                for n in numbers
            ]
        )
    out += _table(["Row", *(f"round {n}" for n in numbers)], per_round)
    out.append("")
    if outcome.discarded:
        out.append(
            f"{len(outcome.discarded)} run(s) outran their pool of orders and were measured again"
            " (the first attempts are left out)"
        )
    failed = failures(outcome.measurements)
    if failed:
        out += ["FAILED requests:", *(f"  {line}" for line in failed)]
    else:
        out.append(f"every request of the {len(outcome.measurements)} runs and their warm-ups succeeded")
    out.append(f"took {outcome.seconds / 60:.1f} min")
    return "\n".join(out)


def to_json(outcome: Outcome) -> dict[str, object]:
    def measurement(m: Measurement) -> dict[str, object]:
        return {**asdict(m), "rps": m.result.rps, "cpu_ms_per_request": m.result.cpu_per_1k}

    return {
        "environment": outcome.environment,
        "settings": asdict(outcome.settings),
        "revisions": {
            r.side: {"name": r.name, "sha": r.sha, "subject": r.subject, "server_args": list(r.server_args)}
            for r in (outcome.before, outcome.after)
        },
        "rows": [
            {
                "row": f.row.key,
                "label": f.row.label,
                "rps": f.rps,
                "ratio": f.ratio,
                "round_ratio": f.round_ratio,
                "cpu_ms": f.cpu_ms,
                "cpu_ratio": f.cpu_ratio,
                "p50_ms": f.p50_ms,
                "within_tolerance": f.verdict == "yes",
            }
            for f in figures(outcome.measurements, outcome.settings)
        ],
        "measurements": [measurement(m) for m in outcome.measurements],
        "discarded": [measurement(m) for m in outcome.discarded],
        "seconds": outcome.seconds,
    }


# -- the command line -----------------------------------------------------------------------------


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def _rows(text: str) -> tuple[Row, ...]:
    keys = {row.key: row for row in ROWS}
    wanted = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in keys]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"rows are {', '.join(keys)}, not {text!r}")
    return tuple(row for row in ROWS if row.key in wanted)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("before", help="the revision before the change (any git commit-ish)")
    parser.add_argument("after", help="the revision after it")
    parser.add_argument("--rows", type=_rows, default=ROWS,
                        help=f"some of the rows only, comma-separated (default all: {','.join(r.key for r in ROWS)})")  # fmt: skip
    parser.add_argument("--before-args", type=shlex.split, default=[], metavar="FLAGS",
                        help="more flags for BEFORE's serve and grpc servers, one string: '--sqlite-synchronous normal'")  # fmt: skip
    parser.add_argument("--after-args", type=shlex.split, default=[], metavar="FLAGS",
                        help="more flags for AFTER's serve and grpc servers (write --after-args=--flag for a lone flag)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per row, for a test")
    parser.add_argument("--rounds", type=positive, help="ABBA rounds (default 3)")
    parser.add_argument("--duration", type=positive, help="seconds per timed run (default 8)")
    parser.add_argument(
        "--connections", type=positive, help="wrk connections and ghz concurrency (default 32)"
    )
    parser.add_argument("--threads", type=positive, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=positive, help="warm-up requests per run (default 2000)")
    parser.add_argument("--keep-worktrees", action="store_true",
                        help="keep the worktrees this run made under build/ab/ (a later run reuses them)")  # fmt: skip
    parser.add_argument("--worktrees", type=Path, default=WORKTREES,
                        help="where the revisions are checked out, one directory per commit (default build/ab)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every raw figure to this file")
    parser.add_argument("--out-dir", type=Path, help="server logs and ghz reports "
                        "(default build/bench/ab-<date-time>; must not exist yet)")  # fmt: skip
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else Settings()
    overrides = {
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "warmup_requests": args.warmup,
    }
    return Settings(**{**asdict(settings), **{k: v for k, v in overrides.items() if v is not None}})


@contextmanager
def _worktrees(root: Path, keep: bool) -> Iterator[Worktrees]:
    trees = Worktrees(root.resolve(), keep)
    try:
        yield trees
    finally:
        trees.remove()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    started, load_start = time.monotonic(), os.getloadavg()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = (args.out_dir or REPO / "build" / "bench" / f"ab-{stamp}").resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        progress(f"error: {workdir} exists; every run starts from fresh databases")
        return 2
    method = json.loads(GHZ_CONFIG.read_text())["call"]
    # `make tools` puts ghz in the venv's bin, which need not be on PATH: look there first.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    try:
        tools = ensure_tools()
        with _worktrees(args.worktrees, args.keep_worktrees) as trees:
            before = trees.checkout("before", args.before, args.before_args)
            after = trees.checkout("after", args.after, args.after_args)
            ab = AB(settings, tools, workdir, method, args.rows)
            ab.run(before, after)
    except (ToolMissing, ServerFailed, LoadToolFailed, SetupFailed) as error:
        progress(f"error: {error}")
        progress(f"server logs and ghz reports are in {workdir}")
        return 2
    outcome = Outcome(
        describe(tools), settings, before, after, ab.measurements, ab.discarded, load_start, os.getloadavg(),
        time.monotonic() - started,
    )  # fmt: skip
    print(render(outcome), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(outcome), indent=2, default=str))
    progress(f"server logs and ghz reports are in {workdir}")
    return 1 if failures(outcome.measurements) else 0


if __name__ == "__main__":
    raise SystemExit(main())
