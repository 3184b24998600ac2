"""InstrumentedStore: every timed operation reaches the callback by name, failures included."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.domain.errors import NotFound
from gateway.store.base import Decision, HandleRow, Insertion, NewRecord, RecordWrite, StoredRecord
from gateway.store.events import DeliveryOutcome, DeliveryState, EventQuery, EventWrite, OutboxStats
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


async def test_event_operations_are_timed_and_listeners_reach_the_store(tmp_path: Path) -> None:
    observed: list[str] = []
    inner = await SqliteStore.open(tmp_path / "store.db")
    store = InstrumentedStore(inner, lambda op, s: observed.append(op))
    try:
        await store.create_account("acme", b"hash")
        await store.set_webhook("acme", "https://acme.example/hook", "whsec_x")
        assert (await store.webhook("acme")) is not None
        assert await store.last_event_id() == 0
        assert await store.events_after(0, limit=10, account_id="acme") == []
        assert await store.order_events("acme", "h", EventQuery(), deadline=1e12) == []
        assert await store.claim_deliveries("me", now_ms=0, lease_ms=1, max_deliveries=1, max_events=1) == []
        outcome = DeliveryOutcome(DeliveryState.DELIVERED, 200, "ok")
        assert await store.finish_delivery("me", "none", outcome) is False
        assert await store.release_deliveries("me") == 0
        assert await store.next_delivery_due_ms() is None
        assert await store.outbox_stats() == OutboxStats(0, None)
        assert await store.remove_webhook("acme") is True
        # A listener registered through the wrapper hears of the wrapped store's commits.
        heard = asyncio.Event()
        store.on_events_committed(heard.set)

        def one_record(rows: Sequence[HandleRow]) -> Insertion[None]:
            return Insertion(None, [NewRecord("h", 0, 0, 0, 1, b"order")])

        def change(records: Sequence[StoredRecord]) -> Decision[None]:
            event = EventWrite(0, 2, 0, b"event")
            return Decision(None, RecordWrite(records[0].row_id, 2, b"changed"), event)

        await inner.track_orders("acme", ["h"], one_record, deadline=1e12)
        await inner.change_order("acme", "h", change, deadline=1e12)
        await asyncio.wait_for(heard.wait(), 10)
    finally:
        await store.close()
    assert observed == [
        "set_webhook",
        "webhook",
        "last_event_id",
        "events_after",
        "order_events",
        "claim_deliveries",
        "finish_delivery",
        "release_deliveries",
        "next_delivery_due_ms",
        "outbox_stats",
        "remove_webhook",
    ]
