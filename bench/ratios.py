"""The ratios of issue 15's targets table and issue 14's cost of a webhook, each between two rows.

Two closed-loop rows are compared run by run (both measured within the same minutes of a noisy
machine) and the ratio is the median of those per-run ratios, as the issue asks ("ratios measured
side by side in one run; median of 3"). A tail is compared at a fixed rate: the product's p99 at
half its maximum over its ceiling's p99 at the same rate, one run each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.figures import median, run_ratios
from bench.load import LoadResult


@dataclass(frozen=True)
class RatioSpec:
    key: str
    name: str
    numerator: str  # a variant's key
    denominator: str
    metric: str  # of bench.figures.ALL_METRICS
    fixed_rate: bool = False  # the numerator's fixed-rate run over its ceiling's at the same rate


SPECS = (
    RatioSpec("serve-over-grpc-gateway", "REST serve ÷ grpc-gateway -> grpc, req/s",
              "rest-embedded", "rest-grpcgateway", "rps"),
    RatioSpec("http-over-grpc-gateway", "REST http -> grpc ÷ grpc-gateway -> grpc, req/s",
              "rest-remote", "rest-grpcgateway", "rps"),
    RatioSpec("http-cpu-over-grpc-gateway", "http's CPU per request ÷ grpc-gateway's (the front ends alone)",
              "rest-remote", "rest-grpcgateway", "front_cpu_per_1k"),
    RatioSpec("grpc-over-bare", "gRPC CancelOrder on serve ÷ bare grpc.aio, req/s", "grpc", "ceiling-grpc", "rps"),
    RatioSpec("postgres-over-sqlite", "REST http + grpc on PostgreSQL ÷ the same on SQLite, req/s",
              "rest-pg1", "rest-remote", "rps"),
    RatioSpec("postgres-two-over-one", "two grpc processes on PostgreSQL ÷ one, req/s", "rest-pg2", "rest-pg1", "rps"),
    RatioSpec("workers-two-over-one", "serve --workers 2 ÷ --workers 1, REST embedded, req/s",
              "rest-workers2", "rest-embedded", "rps"),
    RatioSpec("rest-tail-over-aiohttp", "REST embedded p99 at half load ÷ the aiohttp ceiling's p99 at that rate",
              "rest-embedded", "ceiling-rest", "p99_ms", fixed_rate=True),
    RatioSpec("grpc-tail-over-bare", "gRPC p99 at half load ÷ bare grpc.aio's p99 at that rate",
              "grpc", "ceiling-grpc", "p99_ms", fixed_rate=True),
    RatioSpec("webhook-over-none", "REST cancel with a webhook subscribed ÷ without (embedded), req/s",
              "rest-webhook", "rest-embedded", "rps"),
)  # fmt: skip
BY_KEY = {spec.key: spec for spec in SPECS}


@dataclass(frozen=True)
class Ratio:
    key: str
    name: str
    value: float | None
    runs: list[float | None]  # the per-run ratios of which `value` is the median (one at a fixed rate)
    missing: str = ""  # why there is none: a row of it was not measured here


def compute(
    per_run: Mapping[str, Sequence[LoadResult]],
    fixed: Mapping[str, tuple[LoadResult, LoadResult]],
    missing: Mapping[str, str],
) -> list[Ratio]:
    """Every ratio of SPECS, from the closed-loop runs of each variant and the fixed-rate runs
    (variant -> its result and its ceiling's); `missing` says why a variant has no runs."""
    out = []
    for spec in SPECS:
        absent = [missing[key] for key in (spec.numerator, spec.denominator) if key in missing]
        if absent:
            out.append(Ratio(spec.key, spec.name, None, [], absent[0]))
        elif spec.fixed_rate:
            result, ceiling = fixed[spec.numerator]
            runs = run_ratios([result], [ceiling], spec.metric)
            out.append(Ratio(spec.key, spec.name, runs[0], runs))
        else:
            runs = run_ratios(per_run[spec.numerator], per_run[spec.denominator], spec.metric)
            out.append(Ratio(spec.key, spec.name, median(runs), runs))
    return out
