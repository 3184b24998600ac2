"""SQLite's write-ahead log stays bounded under steady writes, with checkpoints off the writer's thread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.store.sqlite import WalCheckpointer

PAGE = 4096


def _writer(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # as SqliteStore: only the checkpointer checkpoints
    db.execute("PRAGMA busy_timeout=5000")  # a TRUNCATE holds writers back for a moment
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
    return db


def _write(db: sqlite3.Connection, count: int) -> None:
    for i in range(count):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT OR REPLACE INTO t (id, body) VALUES (?, ?)", (i % 500, b"x" * 600))
        db.execute("COMMIT")


def test_without_a_checkpointer_the_log_grows_with_every_write(tmp_path: Path) -> None:
    db = _writer(tmp_path / "plain.db")
    _write(db, 3000)
    assert (tmp_path / "plain.db-wal").stat().st_size > 3000 * PAGE


def test_the_checkpointer_keeps_the_log_bounded_and_the_data_whole(tmp_path: Path) -> None:
    path = tmp_path / "bounded.db"
    db = _writer(path)
    checkpointer = WalCheckpointer(path, interval_s=0.005, truncate_frames=200)
    try:
        _write(db, 3000)
    finally:
        checkpointer.stop()
    # Without restarts the log would hold 3,000+ frames; with them it stays near the threshold.
    assert (tmp_path / "bounded.db-wal").stat().st_size < 1500 * PAGE
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (500,)
