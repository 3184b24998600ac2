"""Fixtures of the store suite: one `backend` per store kind, each on a database of its own.

The PostgreSQL fixtures `postgres_dsn` and `postgres_database` live in tests/conftest.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from gateway.store.base import OrderStore
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests import pg

ACME = "acme"
RIVAL = "rival"

RawRow = tuple[int, int, int, bytes]
"""(fulfillment_attempt, status, updated_at_ms, body) of one stored row."""


async def open_store(kind: str, location: str) -> OrderStore:
    """A store of `kind` ("sqlite" or "postgres") on `location` (a file path or a DSN)."""
    if kind == "sqlite":
        return await SqliteStore.open(location)
    return await PostgresStore.open(location)


async def _sqlite_rows(path: str, account_id: str, handle: str) -> list[RawRow]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT fulfillment_attempt, status, updated_at_ms, body FROM orders"
            " WHERE account_id = ? AND order_handle = ? ORDER BY id",
            (account_id, handle),
        ).fetchall()
    return [(a, s, u, bytes(b)) for a, s, u, b in rows]


async def _postgres_rows(dsn: str, account_id: str, handle: str) -> list[RawRow]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT fulfillment_attempt, status, updated_at_ms, body FROM orders"
            " WHERE account_id = $1 AND order_handle = $2 ORDER BY id",
            account_id,
            handle,
        )
    finally:
        await connection.close()
    return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]


@dataclass
class StoreBackend:
    """One database of one store kind: open stores on it, and peek at its raw rows."""

    kind: str
    location: str
    _opened: list[OrderStore] = field(default_factory=list)

    async def open(self) -> OrderStore:
        """A new store on this database (closed at teardown), as another process would open it."""
        store = await open_store(self.kind, self.location)
        self._opened.append(store)
        return store

    async def reopen(self, store: OrderStore) -> OrderStore:
        """Close `store` and open the database afresh."""
        self._opened.remove(store)
        await store.close()
        return await self.open()

    async def raw_rows(self, account_id: str, handle: str) -> list[RawRow]:
        """The handle's rows as stored, bypassing the store: to check what was (not) written."""
        reader: Callable[[str, str, str], Awaitable[list[RawRow]]]
        reader = _sqlite_rows if self.kind == "sqlite" else _postgres_rows
        return await reader(self.location, account_id, handle)

    async def close_all(self) -> None:
        while self._opened:
            await self._opened.pop().close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "postgres":
        # Only PostgreSQL tests start (or skip for want of) the server.
        request.getfixturevalue("postgres_dsn")
    return kind


@pytest.fixture
async def backend(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreBackend]:
    """An empty database of the kind under test; every store opened on it is closed afterwards."""
    if store_kind == "sqlite":
        running = StoreBackend("sqlite", str(tmp_path / "store.db"))
        try:
            yield running
        finally:
            await running.close_all()
        return
    admin_dsn: str = request.getfixturevalue("postgres_dsn")
    async with pg.fresh_database(admin_dsn) as dsn:
        running = StoreBackend("postgres", dsn)
        try:
            yield running
        finally:
            await running.close_all()


@pytest.fixture
async def store(backend: StoreBackend) -> OrderStore:
    """A store on a fresh database with two accounts, ACME and RIVAL."""
    opened = await backend.open()
    for account_id in (ACME, RIVAL):
        await opened.create_account(account_id, f"hash-of-{account_id}".encode())
    return opened
