"""A store that times each operation of the store it wraps and reports it to a plain callback.

The callback (`observe(operation, seconds)`, such as `Metrics.observe_store`) is passed in, so the
store package knows nothing of how the figures are kept or exported; so is the one that starts an
operation's trace span (`span(operation)`), when tracing is on.

The event side (events.py) is timed the same way, by the same names as its methods; registering a
listener is no operation and goes straight through.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from gateway.store.base import Decide, DecideInsertion, Store, StoredRecord
from gateway.store.events import (
    ClaimedDelivery,
    DeliveryOutcome,
    EventQuery,
    OutboxStats,
    ReplayedEvent,
    StoredEvent,
    Webhook,
)

T = TypeVar("T")

Observe = Callable[[str, float], None]
"""Takes the name of a store operation and how long it took, in seconds."""


class OperationSpan(Protocol):
    def end(self, error: BaseException | None) -> None:
        """The operation ended, having raised `error` (None: it succeeded)."""


StartSpan = Callable[[str], OperationSpan | None]
"""Starts the span of a store operation by name; None when this one has none."""


class InstrumentedStore:
    """An OrderStore and EventStore that reports how long each operation of `store` took to
    `observe`."""

    def __init__(self, store: Store, observe: Observe, *, span: StartSpan | None = None) -> None:
        self._store = store
        self._observe = observe
        self._span = span

    async def _timed(self, operation: str, work: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        span = None if self._span is None else self._span(operation)
        try:
            return await work()
        except BaseException as error:
            if span is not None:
                span.end(error)
                span = None
            raise
        finally:
            self._observe(operation, time.perf_counter() - started)
            if span is not None:
                span.end(None)

    async def read_records(
        self, account_id: str, order_handle: str, *, deadline: float
    ) -> list[StoredRecord]:
        return await self._timed(
            "read_records", lambda: self._store.read_records(account_id, order_handle, deadline=deadline)
        )

    async def change_order(
        self, account_id: str, order_handle: str, decide: Decide[T], *, deadline: float
    ) -> T:
        return await self._timed(
            "change_order",
            lambda: self._store.change_order(account_id, order_handle, decide, deadline=deadline),
        )

    async def track_orders(
        self, account_id: str, handles: Sequence[str], decide: DecideInsertion[T], *, deadline: float
    ) -> T:
        return await self._timed(
            "track_orders", lambda: self._store.track_orders(account_id, handles, decide, deadline=deadline)
        )

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        return await self._timed("account_secret_hash", lambda: self._store.account_secret_hash(account_id))

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        return await self._store.create_account(account_id, secret_hash)

    async def ping(self) -> None:
        await self._timed("ping", self._store.ping)

    async def close(self) -> None:
        await self._store.close()

    # --- EventStore -----------------------------------------------------------------------------

    async def last_event_id(self) -> int:
        return await self._timed("last_event_id", self._store.last_event_id)

    async def events_after(
        self, after_id: int, *, limit: int, account_id: str | None = None
    ) -> list[StoredEvent]:
        return await self._timed(
            "events_after",
            lambda: self._store.events_after(after_id, limit=limit, account_id=account_id),
        )

    async def order_events(
        self, account_id: str, order_handle: str, query: EventQuery, *, deadline: float
    ) -> list[ReplayedEvent]:
        return await self._timed(
            "order_events",
            lambda: self._store.order_events(account_id, order_handle, query, deadline=deadline),
        )

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        self._store.on_events_committed(listener)

    def on_deliveries_pending(self, listener: Callable[[], None]) -> None:
        self._store.on_deliveries_pending(listener)

    async def claim_deliveries(
        self,
        owner: str,
        *,
        now_ms: int,
        lease_ms: int,
        max_deliveries: int,
        max_events: int,
    ) -> list[ClaimedDelivery]:
        return await self._timed(
            "claim_deliveries",
            lambda: self._store.claim_deliveries(
                owner,
                now_ms=now_ms,
                lease_ms=lease_ms,
                max_deliveries=max_deliveries,
                max_events=max_events,
            ),
        )

    async def finish_delivery(self, owner: str, delivery_id: str, outcome: DeliveryOutcome) -> bool:
        return await self._timed(
            "finish_delivery", lambda: self._store.finish_delivery(owner, delivery_id, outcome)
        )

    async def release_deliveries(self, owner: str) -> int:
        return await self._timed("release_deliveries", lambda: self._store.release_deliveries(owner))

    async def next_delivery_due_ms(self) -> int | None:
        return await self._timed("next_delivery_due_ms", self._store.next_delivery_due_ms)

    async def outbox_stats(self) -> OutboxStats:
        return await self._timed("outbox_stats", self._store.outbox_stats)

    async def set_webhook(self, account_id: str, url: str, secret: str) -> None:
        await self._timed("set_webhook", lambda: self._store.set_webhook(account_id, url, secret))

    async def webhook(self, account_id: str) -> Webhook | None:
        return await self._timed("webhook", lambda: self._store.webhook(account_id))

    async def remove_webhook(self, account_id: str) -> bool:
        return await self._timed("remove_webhook", lambda: self._store.remove_webhook(account_id))
