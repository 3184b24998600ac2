"""SQLite's write-ahead log stays bounded under steady writes, with checkpoints off the writer's thread,
and its file is overwritten in place rather than emptied and grown again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from gateway.store.sqlite import RESTART_FRAMES, SqliteStore, WalCheckpointer, wal_bytes, wal_limit_frames

PAGE = 4096


def _writer(path: Path, journal_size_limit: int = -1) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_size_limit={journal_size_limit}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # as SqliteStore: only the checkpointer checkpoints
    db.execute("PRAGMA busy_timeout=5000")  # a RESTART holds writers back for a moment
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
    checkpointer = WalCheckpointer(path, interval_s=0.005, restart_frames=200)
    try:
        _write(db, 3000)
    finally:
        checkpointer.stop()
    # Without restarts the log would hold 3,000+ frames; with them it stays near the threshold.
    assert (tmp_path / "bounded.db-wal").stat().st_size < 1500 * PAGE
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (500,)


def test_the_log_file_is_reused_in_place_not_emptied(tmp_path: Path) -> None:
    """Once the log has started over, its file keeps its size: the next commits overwrite it rather
    than grow it from nothing (a sync that lengthens a file also waits for the filesystem's journal)."""
    path = tmp_path / "reused.db"
    limit = wal_bytes(2000)  # far above what the writes below can outgrow it by: never a TRUNCATE
    db = _writer(path, journal_size_limit=limit)
    wal = tmp_path / "reused.db-wal"
    checkpointer = WalCheckpointer(path, interval_s=0.005, restart_frames=200, limit_bytes=limit)
    sizes = []
    try:
        for i in range(3000):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO t (id, body) VALUES (?, ?)", (i % 500, b"x" * 600))
            db.execute("COMMIT")
            sizes.append(wal.stat().st_size)
            time.sleep(0.0002)  # as the store's writer, which leaves a gap between transactions
    finally:
        checkpointer.stop()
    grown = next(i for i, size in enumerate(sizes) if size >= wal_bytes(200))
    assert min(sizes[grown:]) >= wal_bytes(200)  # never cut back below what it had held
    assert max(sizes) <= limit
    frames = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    assert frames < 1000  # the log did start over: 3,000 commits wrote well over that
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (500,)


def test_a_log_file_past_its_bound_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "outgrown.db"
    db = _writer(path)
    _write(db, 1000)  # no checkpointer yet: the log holds about 1,000 frames
    wal = tmp_path / "outgrown.db-wal"
    assert wal.stat().st_size > wal_bytes(300)
    checkpointer = WalCheckpointer(path, interval_s=0.005, restart_frames=200, limit_bytes=wal_bytes(300))
    try:
        waited = time.monotonic() + 10
        while wal.stat().st_size > wal_bytes(300) and time.monotonic() < waited:
            time.sleep(0.01)
    finally:
        checkpointer.stop()
    assert wal.stat().st_size <= wal_bytes(300)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (500,)


def test_the_store_keeps_the_log_file_to_the_checkpointer_bound(tmp_path: Path) -> None:
    async def limits() -> tuple[int, int]:
        store = await SqliteStore.open(tmp_path / "store.db")
        try:
            (limit,) = store._writer.execute("PRAGMA journal_size_limit").fetchone()
            return limit, store._checkpointer._limit_bytes
        finally:
            await store.close()

    writer_limit, checkpointer_limit = asyncio.run(limits())
    assert writer_limit == checkpointer_limit == wal_bytes(wal_limit_frames(RESTART_FRAMES))
