"""The store interface: records of accounts and orders, and atomic transactions over them.

A store keeps each order record as its serialized `Order` message (`body`) beside the
columns that address it (account, handle, type, type index, attempt) and its status.
It knows no order rules. A change is one transaction: the store reads the records of a
handle (locked against other writers), hands them to the caller's decision, a plain
function run inside the transaction, and writes what the decision asks for, or nothing.
If the decision raises, nothing is written and the caller hears that very error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

from gateway.store.events import EventStore, EventWrite

T = TypeVar("T")

ANSWER_MARGIN_S = 0.02
"""How long before its deadline a call stops waiting on a busy database, for its 503 to reach the
caller in time: a wait that ends at or past the deadline lets the caller's own timer fire first (504)."""


def now_ms() -> int:
    """The wall clock in epoch milliseconds, as both stores keep their rows' timestamps."""
    return time.time_ns() // 1_000_000


class StoredRecord(NamedTuple):
    """One row of the orders table, as a change reads it: the columns that address it and its body."""

    row_id: int
    type: int
    type_index: int
    fulfillment_attempt: int
    status: int
    body: bytes


class HandleRow(NamedTuple):
    """What a track reads of each existing record of its handles."""

    order_handle: str
    fulfillment_attempt: int
    status: int


class RecordWrite(NamedTuple):
    """The new status and body of one of the records a decision was shown (named by its `row_id`)."""

    row_id: int
    status: int
    body: bytes


class NewRecord(NamedTuple):
    """A record to create: the columns that address it, its status and its body."""

    order_handle: str
    type: int
    type_index: int
    fulfillment_attempt: int
    status: int
    body: bytes


@dataclass(slots=True)
class Decision(Generic[T]):
    """What a change decided inside its transaction: the caller's `answer`, and the write, if any."""

    answer: T
    write: RecordWrite | None = None
    event: EventWrite | None = None
    """The event the write tells of (events.py), written in the same transaction; only with a write."""


@dataclass(slots=True)
class Insertion(Generic[T]):
    """What a track decided inside its transaction: the caller's `answer`, and the records to create."""

    answer: T
    records: Sequence[NewRecord]


Decide = Callable[[Sequence[StoredRecord]], Decision[T]]
"""Given every record of a handle, decides the change. Runs inside the transaction; may raise."""

DecideInsertion = Callable[[Sequence[HandleRow]], Insertion[T]]
"""Given the existing records of the handles, decides what to create. Runs inside the transaction;
may raise."""


class OrderStore(Protocol):
    """Accounts and order records. `deadline` is a `time.monotonic()` instant for retries of busy
    writes. The store raises only `Unavailable` of its own; a decision's error passes through as is."""

    async def read_records(
        self, account_id: str, order_handle: str, *, deadline: float
    ) -> list[StoredRecord]:
        """Every record of the handle (none: an empty list)."""
        ...

    async def change_order(
        self, account_id: str, order_handle: str, decide: Decide[T], *, deadline: float
    ) -> T:
        """In one transaction, with the handle's records locked: `decide(records)`, then its write
        and its event. Returns the decision's answer once they are committed."""
        ...

    async def track_orders(
        self, account_id: str, handles: Sequence[str], decide: DecideInsertion[T], *, deadline: float
    ) -> T:
        """In one transaction, with the handles locked (even those without a record yet):
        `decide(rows)` on the rows of those handles, then the records it asks for are inserted.
        Returns the decision's answer once they are committed."""
        ...

    async def account_secret_hash(self, account_id: str) -> bytes | None: ...

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        """Create the account; False when it exists already (its secret is left as it was)."""
        ...

    async def ping(self) -> None:
        """Raise `Unavailable` unless the store answers and takes writes."""
        ...

    async def close(self) -> None: ...


class Store(OrderStore, EventStore, Protocol):
    """A store of ours: the orders and, in the same database, their events (events.py)."""
