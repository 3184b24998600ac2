"""A store that times each operation of the store it wraps and reports it to a plain callback.

The callback (`observe(operation, seconds)`, such as `Metrics.observe_store`) is passed in, so the
store package knows nothing of how the figures are kept or exported; so is the one that starts an
operation's trace span (`span(operation)`), when tracing is on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from gateway.store.base import Decide, DecideInsertion, OrderStore, StoredRecord

T = TypeVar("T")

Observe = Callable[[str, float], None]
"""Takes the name of a store operation and how long it took, in seconds."""


class OperationSpan(Protocol):
    def end(self, error: BaseException | None) -> None:
        """The operation ended, having raised `error` (None: it succeeded)."""


StartSpan = Callable[[str], OperationSpan | None]
"""Starts the span of a store operation by name; None when this one has none."""


class InstrumentedStore:
    """An OrderStore that reports how long each operation of `store` took to `observe`."""

    def __init__(self, store: OrderStore, observe: Observe, *, span: StartSpan | None = None) -> None:
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
