"""The SQLite store's files are private and its answers durable by default.

A directory the store makes for its database is 0700 and the database, with its -wal and -shm
files, 0600, whatever the umask; a directory or database that already exists keeps its mode, and
a database other users can read is named in a warning at start-up. `synchronous` is FULL unless
asked otherwise.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.assembly import open_store
from gateway.store.base import OrderStore
from gateway.store.sqlite import SqliteStore

PERMISSIVE_UMASKS = [0o022, 0o000]
SQLITE_FULL = 2
SQLITE_NORMAL = 1


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _written(store: OrderStore) -> None:
    """A commit, so that the write-ahead log holds frames."""
    assert await store.create_account("acme", b"hash")


@pytest.mark.parametrize("mask", PERMISSIVE_UMASKS, ids=lambda m: f"umask-{m:03o}")
async def test_the_directories_and_files_the_store_creates_are_private(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "var" / "data" / "gateway.db"
    with umask(mask):
        store = await SqliteStore.open(path)
        try:
            await _written(store)
            files = [path, path.with_name("gateway.db-wal"), path.with_name("gateway.db-shm")]
            assert {f.name: oct(mode(f)) for f in files} == {f.name: oct(0o600) for f in files}
        finally:
            await store.close()
    assert oct(mode(tmp_path / "var")) == oct(0o700)
    assert oct(mode(tmp_path / "var" / "data")) == oct(0o700)


async def test_a_directory_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    existing.chmod(0o755)
    with umask(0o022):
        store = await SqliteStore.open(existing / "gateway.db")
        await store.close()
    assert oct(mode(existing)) == oct(0o755)
    assert oct(mode(existing / "gateway.db")) == oct(0o600)


async def test_an_existing_database_others_can_read_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.db"
    await (await SqliteStore.open(path)).close()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="gateway.store.sqlite"):
        store = await SqliteStore.open(path)
        await store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and "0644" in warnings[0] and f"chmod 600 {path}" in warnings[0]
    assert oct(mode(path)) == oct(0o644)  # the owner's file: told, not changed


async def test_a_private_database_opens_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.db"
    await (await SqliteStore.open(path)).close()
    with caplog.at_level(logging.WARNING, logger="gateway.store.sqlite"):
        store = await SqliteStore.open(path)
        await _written(store)
        await store.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def _synchronous(store: object) -> tuple[int, int]:
    """`PRAGMA synchronous` of the store's write and read connections."""
    assert isinstance(store, SqliteStore)
    return (
        store._writer.execute("PRAGMA synchronous").fetchone()[0],
        store._db.execute("PRAGMA synchronous").fetchone()[0],
    )


async def test_synchronous_is_full_by_default(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        await _written(store)
        assert _synchronous(store) == (SQLITE_FULL, SQLITE_FULL)
    finally:
        await store.close()


async def test_synchronous_normal_when_asked(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gateway.db'}", sqlite_synchronous="normal")
    try:
        await _written(store)
        assert _synchronous(store) == (SQLITE_NORMAL, SQLITE_NORMAL)
    finally:
        await store.close()
