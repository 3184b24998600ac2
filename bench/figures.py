"""The figures of the table: medians over the runs, and ratios to the ceiling within one run.

A ratio compares a variant with its ceiling as measured in the same run (the same minutes of the
same noisy machine), and the table shows the median of those per-run ratios, not the ratio of the
medians. For req/s a ratio below 1 means slower than the ceiling; for latency and CPU per request,
above 1 means more than the ceiling.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.load import LoadResult

METRICS: dict[str, Callable[[LoadResult], float | None]] = {
    "rps": lambda r: r.rps,
    "p50_ms": lambda r: r.p50_ms,
    "p99_ms": lambda r: r.p99_ms,
    "cpu_per_1k": lambda r: r.cpu_per_1k,
}
# CPU per 1,000 requests of a REST front end and of the gRPC process(es) behind it, apart; a row
# without a backend has its front end's only.
SPLIT_METRICS: dict[str, Callable[[LoadResult], float | None]] = {
    "front_cpu_per_1k": lambda r: r.front_cpu_per_1k,
    "backend_cpu_per_1k": lambda r: r.backend_cpu_per_1k,
}
ALL_METRICS = {**METRICS, **SPLIT_METRICS}
# What a REST row is compared on with the reference front end (grpc-gateway) in the same run.
VERSUS_METRICS = ("rps", "cpu_per_1k", "front_cpu_per_1k")


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or ceiling is None or ceiling == 0:
        return None
    return value / ceiling


def run_ratios(runs: Sequence[LoadResult], others: Sequence[LoadResult], metric: str) -> list[float | None]:
    """`metric` of each run over the same metric of the other row in the same run."""
    get = ALL_METRICS[metric]
    return [_ratio(get(r), get(o)) for r, o in zip(runs, others, strict=True)]


@dataclass(frozen=True)
class VariantFigures:
    """One row: each metric's median over the runs and its median per-run ratio to the ceiling."""

    key: str
    label: str
    medians: dict[str, float | None]
    ratios: dict[str, float | None]
    runs: int
    cpu_split: dict[str, float | None] = field(default_factory=dict)  # SPLIT_METRICS, medians
    versus: dict[str, float | None] = field(default_factory=dict)  # VERSUS_METRICS over the reference's


def summarise(
    key: str,
    label: str,
    runs: Sequence[LoadResult],
    ceiling_runs: Sequence[LoadResult] | None,
    reference_runs: Sequence[LoadResult] | None = None,
) -> VariantFigures:
    """The row of a variant from its runs and, run by run, its ceiling's (None: it is a ceiling) and
    a reference row's (None: no reference for this row)."""
    medians = {name: median([metric(r) for r in runs]) for name, metric in METRICS.items()}
    if ceiling_runs is None:
        ratios: dict[str, float | None] = dict.fromkeys(METRICS, 1.0)
    else:
        ratios = {name: median(run_ratios(runs, ceiling_runs, name)) for name in METRICS}
    split = {name: median([metric(r) for r in runs]) for name, metric in SPLIT_METRICS.items()}
    versus = {}
    if reference_runs is not None:
        versus = {name: median(run_ratios(runs, reference_runs, name)) for name in VERSUS_METRICS}
    return VariantFigures(key, label, medians, ratios, len(runs), split, versus)
