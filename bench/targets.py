"""The targets of issue 5, checked against the figures of one benchmark run.

Issue 7's PostgreSQL rows have no target: the issue asks that they be reported.
"""

from __future__ import annotations

from dataclasses import dataclass

# Throughput of a variant as a share of its ceiling's (median of the per-run ratios).
THROUGHPUT_TARGETS = {
    "rest-embedded": 0.5,
    "grpc": 0.7,
    "rest-remote": 0.35,
}
JSON_SPEEDUP_OVER_MESSAGE_TO_JSON = 8.0
MAX_RSS_GROWTH = 0.10  # from after the first tenth of the cancels to after all of them
MAX_P99_OVER_P50_AT_HALF_LOAD = 4.0


@dataclass(frozen=True)
class Target:
    """One target: what it asks, the measured value, and the bound it must meet."""

    name: str
    value: float | None
    bound: float
    at_least: bool  # True: value >= bound; False: value <= bound
    unit: str = ""
    note: str = ""  # said after the verdict: a figure that reads beside this one

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    def describe(self) -> str:
        state = "met    " if self.met else "NOT met"
        shown = "n/a" if self.value is None else f"{self.value:.2f}{self.unit}"
        sign = ">=" if self.at_least else "<="
        note = f"; {self.note}" if self.note else ""
        return f"[{state}] {self.name}: {shown} (target {sign} {self.bound:g}{self.unit}){note}"
