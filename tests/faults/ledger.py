"""What a fault left in the database, read straight from the SQLite file.

Every order a test touched must be in one of two states: fully cancelled (status cancelled in the
row and in the order, `cancelled_at` set, exactly one `order_cancelled` event, recorded at
`cancelled_at`) or untouched (ongoing, no `cancelled_at`, no cancel event). Anything else is
half-written; an order that is missing, or that was answered 200 and is not cancelled, is lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from gateway.protos import order_pb2

CANCELLED = order_pb2.ORDER_STATUS_CANCELLED
ONGOING = order_pb2.ORDER_STATUS_ONGOING


class State(Enum):
    CANCELLED = "fully cancelled"
    UNTOUCHED = "untouched"
    HALF_WRITTEN = "half-written"


@dataclass(frozen=True)
class StoredOrder:
    """One row: its status column and the order it holds."""

    handle: str
    row_status: int
    order: order_pb2.Order

    @property
    def cancel_events(self) -> list[order_pb2.TimelineEvent]:
        return [e for e in self.order.timeline if e.WhichOneof("event") == "order_cancelled"]

    @property
    def state(self) -> State:
        order, events = self.order, self.cancel_events
        if (
            self.row_status == order.status == CANCELLED
            and order.HasField("cancelled_at")
            and len(events) == 1
            and events[0].recorded_at == order.cancelled_at
        ):
            return State.CANCELLED
        if self.row_status == order.status == ONGOING and not order.HasField("cancelled_at") and not events:
            return State.UNTOUCHED
        return State.HALF_WRITTEN


def integrity(database: Path) -> str:
    with sqlite3.connect(database) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def stored_orders(database: Path, account_id: str, handles: Iterable[str]) -> dict[str, StoredOrder]:
    """The latest attempt of each handle (only the first attempt exists in these tests)."""
    wanted = list(handles)
    found: dict[str, StoredOrder] = {}
    with sqlite3.connect(database) as db:
        db.execute("CREATE TEMP TABLE wanted (handle TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO wanted VALUES (?)", [(h,) for h in wanted])
        rows = db.execute(
            "SELECT order_handle, status, body FROM orders JOIN wanted ON handle = order_handle"
            " WHERE account_id = ? ORDER BY fulfillment_attempt",
            (account_id,),
        ).fetchall()
    for handle, status, body in rows:
        found[handle] = StoredOrder(handle, status, order_pb2.Order.FromString(body))
    return found


@dataclass(frozen=True)
class Audit:
    """The states of the orders a test touched, and which of them are lost or half-written."""

    states: dict[str, State]
    missing: list[str]
    half_written: list[str]
    answered_but_not_cancelled: list[str]

    @property
    def bad(self) -> int:
        return len(self.missing) + len(self.half_written) + len(self.answered_but_not_cancelled)

    def count(self, state: State) -> int:
        return sum(1 for s in self.states.values() if s is state)

    def describe(self) -> str:
        return (
            f"missing {self.missing[:5]} ({len(self.missing)}), half-written {self.half_written[:5]}"
            f" ({len(self.half_written)}), answered 200 but not cancelled"
            f" {self.answered_but_not_cancelled[:5]} ({len(self.answered_but_not_cancelled)})"
        )


def audit(
    database: Path, account_id: str, handles: Collection[str], answered_ok: Collection[str] = ()
) -> Audit:
    """Check every handle: fully cancelled or untouched, and cancelled if its cancel was answered 200."""
    stored = stored_orders(database, account_id, handles)
    states = {h: s.state for h, s in stored.items()}
    return Audit(
        states=states,
        missing=sorted(set(handles) - set(stored)),
        half_written=sorted(h for h, s in states.items() if s is State.HALF_WRITTEN),
        answered_but_not_cancelled=sorted(
            h for h in answered_ok if h in states and states[h] is not State.CANCELLED
        ),
    )
