"""InstrumentedStore: every timed operation reaches the callback by name, failures included."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.domain.errors import NotFound
from gateway.store.base import Decision, HandleRow, Insertion, StoredRecord
from gateway.store.instrumented import InstrumentedStore
from gateway.store.sqlite import SqliteStore


async def test_each_operation_is_timed_by_name(tmp_path: Path) -> None:
    observed: list[tuple[str, float]] = []
    store = InstrumentedStore(
        await SqliteStore.open(tmp_path / "store.db"), lambda op, s: observed.append((op, s))
    )
    try:
        assert await store.create_account("acme", b"hash") is True  # not timed: a one-off
        assert await store.account_secret_hash("acme") == b"hash"
        assert await store.read_records("acme", "h", deadline=1e12) == []

        def nothing_new(rows: Sequence[HandleRow]) -> Insertion[int]:
            return Insertion(len(rows), [])

        assert await store.track_orders("acme", ["h"], nothing_new, deadline=1e12) == 0

        def refuse(records: Sequence[StoredRecord]) -> Decision[None]:
            raise NotFound("ORDER_NOT_FOUND", "no such order")

        with pytest.raises(NotFound):
            await store.change_order("acme", "h", refuse, deadline=1e12)
        await store.ping()
    finally:
        await store.close()
    assert [operation for operation, _ in observed] == [
        "account_secret_hash",
        "read_records",
        "track_orders",
        "change_order",
        "ping",
    ]
    assert all(seconds >= 0 for _, seconds in observed)
