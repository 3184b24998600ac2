"""`python -m bench.bounds`: how near the bare servers a gateway can come that does only what a
durable cancel cannot do without.

Three of issue 15's targets compare the product with the bare servers (bench/ceilings.py): gRPC
CancelOrder at 0.75 of bare grpc.aio's req/s or more, and at half load a p99 at most 4 times the
bare aiohttp handler's (REST) and 1.5 times bare grpc.aio's (gRPC) at the same rate; a fourth asks
REST `serve` for 3 times grpc-gateway's req/s, which the bare aiohttp handler limits too. This
serves the bare servers again with what every cancel needs added, in two steps:

- `+ durable commit`: each answer waits for a group commit whose one thread appends a small batch's
  pages to a file and waits for its `fdatasync` (`--durable`: bench/ceilings.py's DurableCommits,
  the product's commit thread without a database);
- `+ the essential cancel`: each request is a real cancel of a seeded open order, done by the
  product's own parts and nothing else (`--essential`: bench/ceilings.py's EssentialCancel): the
  credentials checked, the cancel rule, the store write with its event, a durable group commit on
  SQLite, and for REST the answer's JSON. What it leaves out is the product's transport: routing,
  the deadline's timer, the request id, metrics, access log and error mapping.

Where `+ the essential cancel` misses a target, the product cannot meet it with its own store, rule
and encoder on this machine, whatever its transport does; where the essential cancel meets a target
the product misses, the difference is the product's transport, and its size is measured here.

Closed loop: ghz -c32 on one connection (gRPC) and wrk -t2 -c32 (REST), ROUNDS rounds of
`--duration` s, the variants in turn within each round; req/s over bare is the median of the rounds'
ratios. Fixed rate: bare and `+ the essential cancel` at the given rates (defaults: about half of
what `make bench` measures for the product's rows), h2load --rps over as many connections as
`make bench` gives the product's row at that rate (REST) and ghz --rps -c32 (gRPC), once each, p50
and p99 over bare's at that rate. Every measurement cancels orders of its own pool, seeded before
the servers start; the ceilings answer whatever handle they are sent.

Progress goes to stderr, the tables to stdout; exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.database import Database
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
from bench.processes import REPO, ServerProcess, start_ceiling
from bench.tools import Tools, ensure_tools
from gateway.protos import SERVICE_NAME, protoset_path

ROUNDS = 3
TRANSPORTS = ("grpc", "rest")
WRK_THREADS = 2
CONNECTIONS = 32  # wrk connections and ghz concurrency, as make bench's closed-loop rows
# Orders seeded for each second of a closed-loop run of the essential cancel: more than it can make
# here (wrk stops at the end of its pool; ghz cannot, so for gRPC the margin is wider).
MOST_RPS = {"grpc": 8_000, "rest": 12_000}


@dataclass(frozen=True)
class Variant:
    name: str
    options: tuple[str, ...]

    @property
    def essential(self) -> bool:
        return "--essential" in self.options


@dataclass(frozen=True)
class Settings:
    duration_s: int = 8
    rounds: int = ROUNDS
    fixed_duration_s: int = 10
    rest_rate: float = 2500.0
    grpc_rate: float = 1400.0
    fixed_clients: int = 8  # h2load connections at the least, as make bench's fixed-rate rows

    def rate(self, transport: str) -> float:
        return self.rest_rate if transport == "rest" else self.grpc_rate


def _progress(message: str) -> None:
    print(f"bounds: {message}", file=sys.stderr, flush=True)


def variants(directory: Path, transport: str) -> list[Variant]:
    """bare, + durable commit, + the essential cancel (on `transport`'s own database in `directory`)."""
    return [
        Variant("bare", ()),
        Variant("+ durable commit", ("--durable", str(directory))),
        Variant("+ the essential cancel", ("--essential", str(essential_database(directory, transport)))),
    ]


def essential_database(directory: Path, transport: str) -> Path:
    return directory / f"essential-{transport}.sqlite"


def _prefix(transport: str, phase: str) -> str:
    """A measurement's handle prefix: its own pool (see bench/database.py)."""
    return f"bound{transport}{phase}-"


def _closed_pool(transport: str, settings: Settings) -> int:
    requests = settings.duration_s * MOST_RPS[transport]
    return pool_size(transport, requests, threads=WRK_THREADS, connections=CONNECTIONS)


def _fixed_pool(transport: str, settings: Settings) -> int:
    rate = settings.rate(transport)
    clients = fixed_rate_clients(rate, settings.fixed_clients)
    return fixed_rate_pool_size(
        transport, rate, settings.fixed_duration_s, clients=clients, connections=CONNECTIONS
    )


def seed(directory: Path, settings: Settings) -> dict[str, Database]:
    """Each transport's essential database with its account and a pool per measurement."""
    databases = {}
    for transport in TRANSPORTS:
        database = databases[transport] = Database.create(essential_database(directory, transport))
        for round_number in range(1, settings.rounds + 1):
            database.seed(_prefix(transport, f"round{round_number}x"), _closed_pool(transport, settings))
        database.seed(_prefix(transport, "fixed"), _fixed_pool(transport, settings))
    return databases


@dataclass
class Measured:
    closed: dict[str, dict[str, list[LoadResult]]]  # transport -> variant -> one result per round
    fixed: dict[str, dict[str, LoadResult]]  # transport -> variant -> the fixed-rate result
    settings: Settings

    def failures(self) -> list[str]:
        results = [r for by in self.closed.values() for rs in by.values() for r in rs]
        results += [r for by in self.fixed.values() for r in by.values()]
        return [f"{r.tool}: {r.failures} failed ({r.failure_sample})" for r in results if r.failures]

    @property
    def bound(self) -> str:
        """The name of the variant that stands for the least a durable gateway does."""
        return list(self.closed["grpc"])[-1]

    def rps(self, transport: str, name: str) -> float:
        """The variant's req/s, the median over rounds."""
        return statistics.median(r.rps for r in self.closed[transport][name])

    def over_bare(self, transport: str, name: str) -> float:
        """The variant's req/s over bare's, the median over rounds of the ratio within each."""
        pairs = zip(self.closed[transport][name], self.closed[transport]["bare"], strict=True)
        return statistics.median(mine.rps / bare.rps if bare.rps else math.nan for mine, bare in pairs)

    def tail_over_bare(self, transport: str) -> float:
        """p99 at the fixed rate of the bound's variant over bare's."""
        bare = self.fixed[transport]["bare"].p99_ms
        return self.fixed[transport][self.bound].p99_ms / bare if bare else math.nan


@dataclass(frozen=True)
class Served:
    """One variant's server on one transport, and the database whose orders its load names."""

    transport: str
    variant: Variant
    server: ServerProcess
    database: Database

    def cancel_call(self) -> GrpcCall:
        return GrpcCall(
            f"127.0.0.1:{self.server.grpc_port}", f"{SERVICE_NAME}/CancelOrder", protoset_path(),
            self.database.authorization,
        )  # fmt: skip

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


def _load(tools: Tools, served: Served, prefix: str, output: Path, settings: Settings) -> LoadResult:
    if served.transport == "grpc":
        return run_ghz(
            tools.ghz, served.cancel_call(), prefix=prefix, concurrency=CONNECTIONS, connections=1, output=output,
            duration_s=settings.duration_s,
        )  # fmt: skip
    # Only the essential cancel's run stops at the end of its pool: the bare handler may outrun it.
    cap = wrk_request_cap(WRK_THREADS, CONNECTIONS, _closed_pool("rest", settings))
    return run_wrk(
        tools.wrk, served.rest_url, authorization=served.database.authorization, prefix=prefix,
        threads=WRK_THREADS, connections=CONNECTIONS, duration_s=settings.duration_s,
        requests=cap if served.variant.essential else None,
    )  # fmt: skip


def _fixed(tools: Tools, served: Served, workdir: Path, settings: Settings) -> LoadResult:
    prefix, rate = _prefix(served.transport, "fixed"), settings.rate(served.transport)
    if served.transport == "grpc":
        return run_ghz(
            tools.ghz, served.cancel_call(), prefix=prefix, concurrency=CONNECTIONS, connections=1,
            output=workdir / "ghz.json", duration_s=settings.fixed_duration_s, rps=rate,
        )  # fmt: skip
    return run_h2load_fixed_rate(
        tools.h2load, served.rest_url, authorization=served.database.authorization, prefix=prefix, rate=rate,
        clients=fixed_rate_clients(rate, settings.fixed_clients), duration_s=settings.fixed_duration_s,
        workdir=workdir,
    )  # fmt: skip


def run_bounds(settings: Settings, workdir: Path, tools: Tools) -> Measured:
    workdir.mkdir(parents=True, exist_ok=True)
    _progress("seeding the essential cancel's orders")
    databases = seed(workdir, settings)
    chosen = {transport: variants(workdir, transport) for transport in TRANSPORTS}
    servers: dict[tuple[str, str], Served] = {}
    try:
        for transport in TRANSPORTS:
            for number, variant in enumerate(chosen[transport]):
                server = start_ceiling(
                    transport, workdir / "logs", options=variant.options, name=f"{transport}-{number}"
                )
                servers[transport, variant.name] = Served(transport, variant, server, databases[transport])
        closed = {t: {v.name: list[LoadResult]() for v in chosen[t]} for t in TRANSPORTS}
        for round_number in range(1, settings.rounds + 1):
            for transport in TRANSPORTS:
                prefix = _prefix(transport, f"round{round_number}x")
                # The variants' order turns each round, so that a machine getting busier favours none.
                listed = chosen[transport]
                turned = listed[round_number % len(listed) :] + listed[: round_number % len(listed)]
                for variant in turned:
                    output = workdir / f"{transport}-{round_number}-{listed.index(variant)}.json"
                    result = _load(tools, servers[transport, variant.name], prefix, output, settings)
                    closed[transport][variant.name].append(result)
                    _progress(
                        f"round {round_number} {transport:<4} {variant.name:<32} {result.rps:8.0f} req/s"
                    )
        fixed: dict[str, dict[str, LoadResult]] = {t: {} for t in TRANSPORTS}
        for transport in TRANSPORTS:
            listed = chosen[transport]
            for variant in (listed[0], listed[-1]):
                where = workdir / f"fixed-{transport}-{listed.index(variant)}"
                where.mkdir(exist_ok=True)
                result = _fixed(tools, servers[transport, variant.name], where, settings)
                fixed[transport][variant.name] = result
                _progress(
                    f"fixed {transport:<4} {variant.name:<32} p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
                )
        return Measured(closed, fixed, settings)
    finally:
        for served in servers.values():
            served.server.stop()


def report(measured: Measured) -> list[str]:
    settings = measured.settings
    lines = [
        f"{'Bare servers + only what a durable cancel needs':<47} {'gRPC req/s':>10} {'x bare':>7}"
        f" {'REST req/s':>10} {'x bare':>7}",
        "-" * 85,
    ]
    for name in measured.closed["grpc"]:
        row = f"{name:<47}"
        for transport in TRANSPORTS:
            row += f" {measured.rps(transport, name):10.0f} {measured.over_bare(transport, name):7.2f}"
        lines.append(row)
    lines += [
        "",
        f"{'the same at a fixed rate':<47} {'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99 x bare':>10}",
        "-" * 82,
    ]
    for transport in ("rest", "grpc"):
        bare = measured.fixed[transport]["bare"]
        for name, result in measured.fixed[transport].items():
            ratio = result.p99_ms / bare.p99_ms if bare.p99_ms else math.nan
            lines.append(
                f"{transport + ' ' + name:<47} {settings.rate(transport):7.0f} {result.p50_ms:7.2f}"
                f" {result.p99_ms:7.2f} {ratio:10.2f}"
            )
    lines.append(
        "  (bench/bounds.py: durable commit = a group commit's fdatasync on its own thread, no database;"
        " the essential cancel = credentials, cancel rule, store write and event, durable commit on SQLite"
        " and, for REST, the JSON answer, by the product's own parts, without its transport;"
        f" closed loop {settings.rounds} round(s) of {settings.duration_s} s, x bare the median of the rounds'"
        " ratios; fixed rate once each)"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bounds", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=int, default=Settings.duration_s, help="seconds per closed-loop run"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--fixed-duration", type=int, default=Settings.fixed_duration_s)
    parser.add_argument("--rest-rate", type=float, default=Settings.rest_rate)
    parser.add_argument("--grpc-rate", type=float, default=Settings.grpc_rate)
    parser.add_argument("--dir", type=Path, help="where the files go (default: build/bounds/<time>)")
    args = parser.parse_args(argv)
    settings = Settings(args.duration, args.rounds, args.fixed_duration, args.rest_rate, args.grpc_rate)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    workdir = args.dir or REPO / "build" / "bounds" / stamp
    measured = run_bounds(settings, workdir, ensure_tools())
    print("\n".join(report(measured)))
    failures = measured.failures()
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
