"""The figures of the table: medians over the runs, and ratios to the ceiling within one run.

A ratio compares a variant with its ceiling as measured in the same run (the same minutes of the
same noisy machine), and the table shows the median of those per-run ratios, not the ratio of the
medians. For req/s a ratio below 1 means slower than the ceiling; for latency and CPU per request,
above 1 means more than the ceiling.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.load import LoadResult

METRICS: dict[str, Callable[[LoadResult], float | None]] = {
    "rps": lambda r: r.rps,
    "p50_ms": lambda r: r.p50_ms,
    "p99_ms": lambda r: r.p99_ms,
    "cpu_per_1k": lambda r: r.cpu_per_1k,
}


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or ceiling is None or ceiling == 0:
        return None
    return value / ceiling


@dataclass(frozen=True)
class VariantFigures:
    """One row: each metric's median over the runs and its median per-run ratio to the ceiling."""

    key: str
    label: str
    medians: dict[str, float | None]
    ratios: dict[str, float | None]
    runs: int


def summarise(
    key: str, label: str, runs: Sequence[LoadResult], ceiling_runs: Sequence[LoadResult] | None
) -> VariantFigures:
    """The row of a variant from its runs and, run by run, its ceiling's (None: it is a ceiling)."""
    medians = {name: median([metric(r) for r in runs]) for name, metric in METRICS.items()}
    if ceiling_runs is None:
        ratios: dict[str, float | None] = dict.fromkeys(METRICS, 1.0)
    else:
        ratios = {
            name: median([_ratio(metric(r), metric(c)) for r, c in zip(runs, ceiling_runs, strict=True)])
            for name, metric in METRICS.items()
        }
    return VariantFigures(key, label, medians, ratios, len(runs))
