"""bench/writecost.py on a small scale: every cancel it times is made, and each figure is a cost."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from bench.writecost import BATCH, PREFIX, Sizes, measure


def test_every_write_it_times_is_a_cancel_made(tmp_path: Path) -> None:
    sizes = Sizes(alone=20, batches=2, rounds=1)
    figures = measure(tmp_path, sizes)
    assert set(figures) == {
        (synchronous, written)
        for synchronous in ("full", "normal")
        for written in ("alone", f"in batches of {BATCH}")
    }
    for cost in figures.values():
        assert cost.wall_us > 0 and math.isfinite(cost.user_us + cost.system_us)
    for database in sorted(tmp_path.glob("writecost-*.db")):
        with sqlite3.connect(database) as db:
            (cancelled,) = db.execute(
                "SELECT count(*) FROM order_events WHERE order_handle LIKE ?", (f"{PREFIX}%",)
            ).fetchone()
        assert cancelled == sizes.orders, database
