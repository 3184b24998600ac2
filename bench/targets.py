"""The targets a benchmark run is reported against: issue 15's ratios, issue 14's cost of a webhook,
and the two of issue 5 that this machine can reach.

Issue 5's shares of the ceilings for REST (embedded 0.5, `http` + `grpc` 0.35) and its p99 <= 4 x p50
at half load are out of reach on two cores whatever a gateway does (the README's performance
section gives the arithmetic): their figures stay in the tables ('x ceil', 'p99/p50'), without a
verdict. Issue 15's ratios take their place, each between two rows of the same run; its gRPC
target (0.75 of bare grpc.aio) replaces issue 5's (0.7). Issue 7's PostgreSQL rows are reported,
and now judged by issue 15's two PostgreSQL ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

JSON_SPEEDUP_OVER_MESSAGE_TO_JSON = 8.0
MAX_RSS_GROWTH = 0.10  # from after the first tenth of the cancels to after all of them


@dataclass(frozen=True)
class RatioTarget:
    """A bound on one ratio of bench/ratios.py, named by its key."""

    ratio: str
    bound: float
    at_least: bool  # True: ratio >= bound; False: ratio <= bound


RATIO_TARGETS = (
    # Issue 15 (median of the per-run ratios; the tails: one fixed-rate run each).
    RatioTarget("serve-over-grpc-gateway", 3.0, True),
    RatioTarget("http-over-grpc-gateway", 1.5, True),
    RatioTarget("http-cpu-over-grpc-gateway", 1.0, False),
    RatioTarget("grpc-over-bare", 0.75, True),
    RatioTarget("postgres-over-sqlite", 0.75, True),
    RatioTarget("postgres-two-over-one", 1.0, True),
    RatioTarget("workers-two-over-one", 1.7, True),
    RatioTarget("rest-tail-over-aiohttp", 4.0, False),
    RatioTarget("grpc-tail-over-bare", 1.5, False),
    # Issue 14: the outbox and its delivery cost a cancel at most 10%.
    RatioTarget("webhook-over-none", 0.9, True),
)


@dataclass(frozen=True)
class Target:
    """One target: what it asks, the measured value, and the bound it must meet."""

    name: str
    value: float | None
    bound: float
    at_least: bool  # True: value >= bound; False: value <= bound
    unit: str = ""
    note: str = ""  # said after the verdict: a figure that reads beside this one
    missing: str = ""  # why there is no value: its rows were not measured here

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    def describe(self) -> str:
        state = "n/a    " if self.missing else "met    " if self.met else "NOT met"
        shown = self.missing or ("n/a" if self.value is None else f"{self.value:.2f}{self.unit}")
        sign = ">=" if self.at_least else "<="
        note = f"; {self.note}" if self.note else ""
        return f"[{state}] {self.name}: {shown} (target {sign} {self.bound:g}{self.unit}){note}"
