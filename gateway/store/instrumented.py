"""A store that times each operation of the store it wraps and reports it to a plain callback.

The callback (`observe(operation, seconds)`, such as `Metrics.observe_store`) is passed in, so the
store package knows nothing of how the figures are kept or exported.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from gateway.store.base import Decide, DecideInsertion, OrderStore, StoredRecord

T = TypeVar("T")

Observe = Callable[[str, float], None]
"""Takes the name of a store operation and how long it took, in seconds."""


class InstrumentedStore:
    """An OrderStore that reports how long each operation of `store` took to `observe`."""

    def __init__(self, store: OrderStore, observe: Observe) -> None:
        self._store = store
        self._observe = observe

    async def _timed(self, operation: str, work: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await work()
        finally:
            self._observe(operation, time.perf_counter() - started)

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
