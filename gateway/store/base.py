"""The store interface the service depends on, and the rules every store applies alike.

A store keeps each order record as its serialized `Order` message beside the columns
that address it (account, handle, type, type index, attempt) and its status. Every
change is one transaction: find the handle's records, let the domain choose the one
the call names and change it, write it back, or leave everything untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.lifecycle import is_open
from gateway.domain.targets import OrderQuery, resolve_target
from gateway.domain.tracking import HandleHistory
from gateway.protos import order_pb2

OrderChange = Callable[[order_pb2.Order], bool]
"""Changes an order in place; returns whether anything changed. May raise an OrderError."""

ANSWER_MARGIN_S = 0.02
"""How long before its deadline a call stops waiting on a busy database, for its 503 to reach the
caller in time: a wait that ends at or past the deadline lets the caller's own timer fire first (504)."""

BuildOrders = Callable[[Mapping[str, HandleHistory]], list[order_pb2.Order]]
"""Builds new records from what the store knows of their handles. May raise an OrderError."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One row of the orders table: the columns that address it and the serialized order."""

    row_id: int
    type: int
    type_index: int
    fulfillment_attempt: int
    status: int
    body: bytes


class OrderStore(Protocol):
    """Accounts and orders. `deadline` is a `time.monotonic()` instant for retries of busy writes."""

    async def get_order(self, account_id: str, query: OrderQuery, *, deadline: float) -> order_pb2.Order: ...

    async def change_order(
        self, account_id: str, query: OrderQuery, change: OrderChange, *, deadline: float
    ) -> order_pb2.Order: ...

    async def track_orders(
        self, account_id: str, handles: Sequence[str], build: BuildOrders, *, deadline: float
    ) -> list[order_pb2.Order]: ...

    async def account_secret_hash(self, account_id: str) -> bytes | None: ...

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        """Create the account; False when it exists already (its secret is left as it was)."""
        ...

    async def ping(self) -> None:
        """Raise `Unavailable` unless the store answers and takes writes."""
        ...

    async def close(self) -> None: ...


def choose_and_change(
    query: OrderQuery, records: Sequence[StoredRecord], change: OrderChange
) -> tuple[StoredRecord, order_pb2.Order, bool]:
    """Within a transaction: the record `query` names, the order after `change`, and whether it changed."""
    record = resolve_target(query, records)
    order = order_pb2.Order.FromString(record.body)
    return record, order, change(order)


def histories(rows: Iterable[tuple[str, int, int]]) -> dict[str, HandleHistory]:
    """What is known of each handle from its (handle, attempt, status) rows."""
    latest: dict[str, int] = {}
    open_status: dict[str, int] = {}
    for handle, attempt, status in rows:
        latest[handle] = max(attempt, latest.get(handle, attempt))
        if is_open(status):
            open_status.setdefault(handle, status)
    return {h: HandleHistory(latest[h], open_status.get(h)) for h in latest}


def record_key(order: order_pb2.Order) -> tuple[str, int, int, int]:
    """The columns that address a record, taken from the order itself."""
    return (order.order_handle, order.type, order.type_index, order.fulfillment_attempt)
