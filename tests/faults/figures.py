"""The figures of a run of the fault tests, for the README's 'Reliability and security' section:
faults injected (by kind), concurrent cancels made, orders checked and how many of them were lost
or half-written, and a few measured timings. Written to build/faults-figures.json at the end of
the session and printed in pytest's terminal summary."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FIGURES_KEY = pytest.StashKey["Figures"]()
OUTPUT = Path(__file__).resolve().parents[2] / "build" / "faults-figures.json"


@dataclass
class Figures:
    faults: Counter[str] = field(default_factory=Counter)
    concurrent_cancels: int = 0
    orders_checked: int = 0
    lost_or_half_written: int = 0
    timings: dict[str, list[float]] = field(default_factory=dict)
    tallies: Counter[str] = field(default_factory=Counter)

    def fault(self, kind: str, count: int = 1) -> None:
        """`count` faults of `kind` were injected."""
        self.faults[kind] += count

    def cancels(self, count: int) -> None:
        """`count` cancels were sent while others of the same orders were in flight."""
        self.concurrent_cancels += count

    def checked(self, orders: int, bad: int) -> None:
        """`orders` were read back from the database after a fault; `bad` were lost or half-written."""
        self.orders_checked += orders
        self.lost_or_half_written += bad

    def tally(self, name: str, count: int) -> None:
        """Anything else worth counting."""
        self.tallies[name] += count

    def timing(self, name: str, seconds: float) -> None:
        self.timings.setdefault(name, []).append(seconds)

    def as_json(self) -> dict[str, object]:
        return {
            "faults_injected": dict(sorted(self.faults.items())),
            "faults_injected_total": sum(self.faults.values()),
            "concurrent_cancels": self.concurrent_cancels,
            "orders_checked": self.orders_checked,
            "lost_or_half_written_orders": self.lost_or_half_written,
            "tallies": dict(sorted(self.tallies.items())),
            "timings_s": {
                name: {
                    "count": len(values),
                    "min": round(min(values), 3),
                    "median": round(statistics.median(values), 3),
                    "max": round(max(values), 3),
                }
                for name, values in sorted(self.timings.items())
            },
        }

    def lines(self) -> list[str]:
        summary = self.as_json()
        lines = [f"faults injected: {summary['faults_injected_total']}"]
        lines += [f"  {count:6d}  {kind}" for kind, count in sorted(self.faults.items())]
        lines.append(f"concurrent cancels: {self.concurrent_cancels}")
        lines.append(f"orders checked after faults: {self.orders_checked}")
        lines.append(f"lost or half-written orders: {self.lost_or_half_written}")
        lines += [f"{name}: {count}" for name, count in sorted(self.tallies.items())]
        lines.append("timings (s): count / min / median / max")
        for name, t in summary["timings_s"].items():  # type: ignore[attr-defined]
            lines.append(f"  {name}: {t['count']} / {t['min']} / {t['median']} / {t['max']}")
        return lines

    def write(self, path: Path = OUTPUT) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path
