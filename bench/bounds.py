"""`python -m bench.bounds`: how near the bare servers any gateway can come that makes each cancel
durable before it answers.

Three of issue 15's targets compare the product with the bare servers (bench/ceilings.py): gRPC
CancelOrder at 0.75 of bare grpc.aio's req/s or more, and at half load a p99 at most 4 times the
bare aiohttp handler's (REST) and 1.5 times bare grpc.aio's (gRPC) at the same rate; a fourth asks
REST `serve` for 3 times grpc-gateway's req/s, which the bare aiohttp handler limits too. The
product answers a cancel only once it is synced to disk, and its store write costs its event loop
CPU. This measures the bare servers with only those two things added, nothing of the product running:

- `+ durable commit`: each answer waits for a group commit whose one thread appends a small batch's
  pages to a file and waits for its `fdatasync` (`--durable`: bench/ceilings.py's DurableCommits,
  the product's commit thread without a database);
- `+ durable commit + W µs`: and W µs of CPU per request on the event loop first (`--work-us`), W
  being what the product's store write costs its loop in batches of 20 (bench/writecost.py, measured
  at the start of this run on the same disk), unless `--work-us` gives it.

A gateway that does at least this cannot beat these figures on this machine, so where one of them
misses a target, the product cannot meet that target with durable answers here. And for REST it
times, warm in a loop, three things every cancel must do on top (RestWork): encode its JSON answer,
check the credentials, build the request message; `make bench` sets them against what the REST
`serve` ÷ grpc-gateway target leaves beyond the bound.

Closed loop: ghz -c32 on one connection (gRPC) and wrk -t2 -c32 (REST), ROUNDS rounds of
`--duration` s, the variants in turn within each round; req/s over bare is the median of the rounds'
ratios. Fixed rate: bare and `+ durable commit + W µs` at the given rates (defaults: about half of
what `make bench` measures for the product's rows), h2load --rps over as many connections as
`make bench` gives the product's row at that rate (REST) and ghz --rps -c32 (gRPC), once each, p50
and p99 over bare's at that rate.

Progress goes to stderr, the tables to stdout; exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import math
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.answer import cancelled_seed_order
from bench.load import (
    GrpcCall,
    LoadResult,
    fixed_rate_clients,
    run_ghz,
    run_h2load_fixed_rate,
    run_wrk,
)
from bench.processes import REPO, ServerProcess, start_ceiling
from bench.tools import Tools, ensure_tools
from bench.writecost import BATCH, Sizes, measure
from gateway.calls.auth import parse_basic
from gateway.calls.credentials import hash_secret, new_secret, secret_matches
from gateway.jsonmap import encode_json
from gateway.protos import SERVICE_NAME, orders_service_pb2, protoset_path

ROUNDS = 3
AUTHORIZATION = "Basic Ym91bmRzOmJvdW5kcw=="  # the ceilings check none; sent as the product's load sends it
PREFIX = "bound-"


@dataclass(frozen=True)
class Variant:
    name: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    duration_s: int = 8
    rounds: int = ROUNDS
    fixed_duration_s: int = 10
    rest_rate: float = 2500.0
    grpc_rate: float = 1400.0
    fixed_clients: int = 8  # h2load connections at the least, as make bench's fixed-rate rows
    work_us: float | None = None  # None: measured with bench/writecost.py, at these sizes
    writecost: Sizes = field(default_factory=lambda: Sizes(alone=100, batches=100, rounds=1))


def _progress(message: str) -> None:
    print(f"bounds: {message}", file=sys.stderr, flush=True)


def store_write_us(directory: Path, sizes: Sizes) -> float:
    """The loop's CPU per store write in batches, with durable commits (bench/writecost.py)."""
    figures = measure(directory, sizes, ("full",))
    cost = figures[("full", f"in batches of {BATCH}")]
    return round(cost.user_us + cost.system_us, 1)


def variants(directory: Path, work_us: float) -> list[Variant]:
    durable = ("--durable", str(directory))
    return [
        Variant("bare", ()),
        Variant("+ durable commit", durable),
        Variant(f"+ durable commit + {work_us:g} µs", (*durable, "--work-us", f"{work_us:g}")),
    ]


@dataclass(frozen=True)
class RestWork:
    """µs of what every REST cancel must do beyond the bound's variant, timed warm in a loop: the
    answer's JSON (`encode_json` of the product's own cancel answer), the credentials (the Basic
    header parsed, SHA-256 of the secret, a constant-time compare) and the request message."""

    json_us: float
    credentials_us: float
    request_us: float

    @property
    def total_us(self) -> float:
        return self.json_us + self.credentials_us + self.request_us


def time_rest_work(number: int = 2000, repeat: int = 5) -> RestWork:
    answer = asyncio.run(cancelled_seed_order())
    secret = new_secret()
    stored = hash_secret(secret)
    header = "Basic " + base64.b64encode(f"{PREFIX}account:{secret}".encode()).decode()

    def credentials() -> bool:
        _, given = parse_basic(header)
        return secret_matches(given, stored)

    def request() -> orders_service_pb2.CancelOrderRequest:
        return orders_service_pb2.CancelOrderRequest(order_handle=f"{PREFIX}123456")

    def best_us(work: Callable[[], object]) -> float:
        return min(timeit.repeat(work, number=number, repeat=repeat)) / number * 1e6

    return RestWork(best_us(lambda: encode_json(answer)), best_us(credentials), best_us(request))


@dataclass
class Measured:
    closed: dict[str, dict[str, list[LoadResult]]]  # transport -> variant -> one result per round
    fixed: dict[str, dict[str, LoadResult]]  # transport -> variant -> the fixed-rate result
    work_us: float
    settings: Settings
    rest_work: RestWork

    def rest_headroom_us(self, rps: float) -> float:
        """µs a request may cost beyond the bound's REST variant for one event loop to make `rps`."""
        bound = statistics.median(r.rps for r in self.closed["rest"][self.bound])
        return (1 / rps - 1 / bound) * 1e6 if rps and bound else math.nan

    def failures(self) -> list[str]:
        results = [r for by in self.closed.values() for rs in by.values() for r in rs]
        results += [r for by in self.fixed.values() for r in by.values()]
        return [f"{r.tool}: {r.failures} failed ({r.failure_sample})" for r in results if r.failures]

    @property
    def bound(self) -> str:
        """The name of the variant that stands for the least a durable gateway does."""
        return list(self.closed["grpc"])[-1]

    def over_bare(self, transport: str, name: str) -> float:
        """The variant's req/s over bare's, the median over rounds of the ratio within each."""
        pairs = zip(self.closed[transport][name], self.closed[transport]["bare"], strict=True)
        return statistics.median(mine.rps / bare.rps if bare.rps else math.nan for mine, bare in pairs)

    def tail_over_bare(self, transport: str) -> float:
        """p99 at the fixed rate of the bound's variant over bare's."""
        bare = self.fixed[transport]["bare"].p99_ms
        return self.fixed[transport][self.bound].p99_ms / bare if bare else math.nan


def _cancel_call(server: ServerProcess) -> GrpcCall:
    return GrpcCall(
        f"127.0.0.1:{server.grpc_port}", f"{SERVICE_NAME}/CancelOrder", protoset_path(), AUTHORIZATION
    )


def _load(
    tools: Tools, transport: str, server: ServerProcess, output: Path, settings: Settings
) -> LoadResult:
    if transport == "grpc":
        return run_ghz(
            tools.ghz, _cancel_call(server), prefix=PREFIX, concurrency=32, connections=1, output=output,
            duration_s=settings.duration_s,
        )  # fmt: skip
    url = f"http://127.0.0.1:{server.http_port}"
    return run_wrk(
        tools.wrk, url, authorization=AUTHORIZATION, prefix=PREFIX, threads=2, connections=32,
        duration_s=settings.duration_s,
    )  # fmt: skip


def _fixed(
    tools: Tools, transport: str, server: ServerProcess, workdir: Path, settings: Settings
) -> LoadResult:
    if transport == "grpc":
        return run_ghz(
            tools.ghz, _cancel_call(server), prefix=PREFIX, concurrency=32, connections=1, output=workdir / "ghz.json",
            duration_s=settings.fixed_duration_s, rps=settings.grpc_rate,
        )  # fmt: skip
    rate = settings.rest_rate
    return run_h2load_fixed_rate(
        tools.h2load, f"http://127.0.0.1:{server.http_port}", authorization=AUTHORIZATION, prefix=PREFIX,
        rate=rate, clients=fixed_rate_clients(rate, settings.fixed_clients),
        duration_s=settings.fixed_duration_s, workdir=workdir,
    )  # fmt: skip


def run_bounds(settings: Settings, workdir: Path, tools: Tools) -> Measured:
    workdir.mkdir(parents=True, exist_ok=True)
    work_us = settings.work_us
    if work_us is None:
        _progress("timing the product's store write (bench/writecost.py)")
        work_us = store_write_us(workdir, settings.writecost)
        _progress(f"a store write costs the event loop {work_us:g} µs in batches of {BATCH}")
    rest_work = time_rest_work()
    _progress(
        f"a REST cancel's JSON answer, credentials and request message take {rest_work.total_us:.1f} µs"
    )
    chosen = variants(workdir, work_us)
    servers: dict[tuple[str, str], ServerProcess] = {}
    try:
        for transport in ("grpc", "rest"):
            for number, variant in enumerate(chosen):
                servers[transport, variant.name] = start_ceiling(
                    transport, workdir / "logs", options=variant.options, name=f"{transport}-{number}"
                )
        closed = {transport: {v.name: list[LoadResult]() for v in chosen} for transport in ("grpc", "rest")}
        for round_number in range(1, settings.rounds + 1):
            for transport in ("grpc", "rest"):
                # The variants' order turns each round, so that a machine getting busier favours none.
                turned = chosen[round_number % len(chosen) :] + chosen[: round_number % len(chosen)]
                for variant in turned:
                    output = workdir / f"{transport}-{round_number}-{chosen.index(variant)}.json"
                    result = _load(tools, transport, servers[transport, variant.name], output, settings)
                    closed[transport][variant.name].append(result)
                    _progress(
                        f"round {round_number} {transport:<4} {variant.name:<32} {result.rps:8.0f} req/s"
                    )
        fixed: dict[str, dict[str, LoadResult]] = {"grpc": {}, "rest": {}}
        for transport in ("grpc", "rest"):
            for variant in (chosen[0], chosen[-1]):
                where = workdir / f"fixed-{transport}-{chosen.index(variant)}"
                where.mkdir(exist_ok=True)
                result = _fixed(tools, transport, servers[transport, variant.name], where, settings)
                fixed[transport][variant.name] = result
                _progress(
                    f"fixed {transport:<4} {variant.name:<32} p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
                )
        return Measured(closed, fixed, work_us, settings, rest_work)
    finally:
        for server in servers.values():
            server.stop()


def report(measured: Measured) -> list[str]:
    settings = measured.settings
    lines = [
        f"{'Bare servers + only what a durable cancel needs':<47} {'gRPC req/s':>10} {'x bare':>7}"
        f" {'REST req/s':>10} {'x bare':>7}",
        "-" * 85,
    ]
    for name in measured.closed["grpc"]:
        row = f"{name:<47}"
        for transport in ("grpc", "rest"):
            rps = statistics.median(r.rps for r in measured.closed[transport][name])
            row += f" {rps:10.0f} {measured.over_bare(transport, name):7.2f}"
        lines.append(row)
    lines += [
        "",
        f"{'the same at a fixed rate':<47} {'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99 x bare':>10}",
        "-" * 82,
    ]
    for transport, rate in (("rest", settings.rest_rate), ("grpc", settings.grpc_rate)):
        bare = measured.fixed[transport]["bare"]
        for name, result in measured.fixed[transport].items():
            ratio = result.p99_ms / bare.p99_ms if bare.p99_ms else math.nan
            lines.append(
                f"{transport + ' ' + name:<47} {rate:7.0f} {result.p50_ms:7.2f} {result.p99_ms:7.2f} {ratio:10.2f}"
            )
    work = measured.rest_work
    lines.append(
        f"  beyond the bound, every REST cancel must also encode its answer ({work.json_us:.1f} µs), check the"
        f" credentials ({work.credentials_us:.1f} µs) and build its request message ({work.request_us:.1f} µs):"
        f" {work.total_us:.1f} µs, timed warm in a loop"
    )
    lines.append(
        f"  (bench/bounds.py: durable commit = a group commit's fdatasync on its own thread, no database;"
        f" W = {measured.work_us:g} µs, the product's store write as its event loop's CPU, bench/writecost.py;"
        f" closed loop {settings.rounds} round(s) of {settings.duration_s} s, x bare the median of the rounds' ratios;"
        f" fixed rate once each)"
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
    parser.add_argument("--work-us", type=float, help="W, instead of timing the store write")
    parser.add_argument("--dir", type=Path, help="where the files go (default: build/bounds/<time>)")
    args = parser.parse_args(argv)
    settings = Settings(
        args.duration, args.rounds, args.fixed_duration, args.rest_rate, args.grpc_rate, work_us=args.work_us
    )
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
