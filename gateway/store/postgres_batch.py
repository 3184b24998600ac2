"""Group commit for the PostgreSQL store: the changes of one process that arrive together share one
transaction.

A change costs four round trips whatever it holds: BEGIN, the SELECT ... FOR UPDATE of its handle's
records, the write of its record and its event (one statement, postgres_events.py), COMMIT. Each
is a wait on the network and a turn of the server, and the outbox lock makes event-writing commits
of the whole database take turns. So a change is not run at once: it joins a batch, and a batch
runs as soon as one of MAX_IN_FLIGHT slots is free (at the next turn of the event loop, so the
calls that are ready together go together). Under load the changes that arrive while batches are
on the wire make the next batch: a batch is the same four round trips, set-based.

- One SELECT locks the records of every handle of the batch, skipping those another transaction
  holds rather than waiting for them: the changes of such a handle run alone after the batch, each
  waiting for its records in id order as a single change always did, so nothing deadlocks and one
  busy order holds up no other change.
- Each change's decision runs on its handle's records, in arrival order. A decision is a plain
  function run between the SELECT and the write, so one that raises writes nothing and is answered
  with its error, and the others go on: no savepoint is needed, since the set-based write cannot
  fail for one change alone (it sets status and body by id and inserts events).
- Two changes of one handle in a batch: the second decides on the records as the first left them,
  exactly what it would have read after the first committed, so a cancel sent twice still makes
  one event, and no update is lost.
- One statement writes every record and every event; COMMIT; then every change is answered.

Deadlines. A batch's statements are bounded by the latest deadline among its changes. A change
whose own deadline passes before its decision ran is answered STORE_BUSY at once and left out of
the batch (nothing of it is written); one whose decision ran waits for the COMMIT, as a single
change waits for its own. A batch that is retried (a deadlock, a lost connection) decides again
for the changes still in time; the others hear STORE_BUSY, nothing of theirs having been kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.domain.errors import Unavailable
from gateway.store import postgres_events
from gateway.store.base import ANSWER_MARGIN_S, Decide, RecordWrite, StoredRecord, now_ms
from gateway.store.postgres_base import MIN_STATEMENT_S, Work, answer_too_late, statement_timeout
from gateway.store.postgres_events import ChangedEvent

T = TypeVar("T")

MAX_IN_FLIGHT = 2
"""Batches of one process in flight at once: one commits while the next locks and decides."""
MAX_BATCH = 256
"""Changes in one batch at most: bounds the statements and how long their rows stay locked."""

RunInTransaction = Callable[[Work[Any], float], Awaitable[Any]]
"""Runs a unit of work in one transaction, retried until the deadline (PostgresStore's)."""

# The records of several handles, but those another transaction holds, which it skips; and how
# many records each handle has (a row with a NULL id), so that a handle whose records were not all
# locked is known. `n` names the handle (1-based).
SELECT_SKIPPING = (
    "WITH k AS (SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k (account_id, order_handle, n)),"
    " locked AS MATERIALIZED (SELECT o.id, o.type, o.type_index, o.fulfillment_attempt, o.status, o.body, k.n"
    " FROM k JOIN orders AS o ON o.account_id = k.account_id AND o.order_handle = k.order_handle"
    " FOR UPDATE OF o SKIP LOCKED)"
    " SELECT id, type, type_index, fulfillment_attempt, status, body, n, 0::int8 FROM locked"
    " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, k.n, count(*) FROM k"
    " JOIN orders AS o ON o.account_id = k.account_id AND o.order_handle = k.order_handle GROUP BY k.n"
)
# The records of one handle, locked in id order, waiting for them as long as it takes.
SELECT_LOCKED = (
    "SELECT o.id, o.type, o.type_index, o.fulfillment_attempt, o.status, o.body, k.n"
    " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k (account_id, order_handle, n)"
    " JOIN orders AS o ON o.account_id = k.account_id AND o.order_handle = k.order_handle"
    " ORDER BY o.id FOR UPDATE OF o"
)


@dataclass(slots=True, eq=False)
class _Change:
    account_id: str
    order_handle: str
    decide: Decide[Any]
    give_up_at: float
    """When its caller stops waiting (`time.monotonic()`), unless its decision ran."""
    answer: asyncio.Future[Any]
    decided: bool = False
    abandoned: bool = False
    outcome: Any = None

    @property
    def waiting(self) -> bool:
        return not (self.abandoned or self.answer.done())


@dataclass(slots=True)
class _Decided:
    """What one attempt of a batch decided: the changes to answer on COMMIT, and the write."""

    changes: list[_Change] = field(default_factory=list)
    writes: dict[int, RecordWrite] = field(default_factory=dict)
    events: list[ChangedEvent] = field(default_factory=list)
    contended: list[_Change] = field(default_factory=list)
    """Changes of handles whose records another transaction held: to run alone, after the batch."""


class ChangeBatcher:
    """Runs the changes submitted to it in batches, one transaction per batch (see the module)."""

    def __init__(
        self,
        run: RunInTransaction,
        notice: str,
        events_committed: Callable[[], None],
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run = run
        self._notice = notice
        self._events_committed = events_committed
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: list[_Change] = []
        self._scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._alone: set[asyncio.Task[None]] = set()

    async def change(self, account_id: str, order_handle: str, decide: Decide[T], deadline: float) -> T:
        """Run the change in the next batch; its decision's answer once committed."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        # Stop short of the caller's deadline, so that our 503 reaches it before its own timer fires;
        # but a change that comes at its deadline still gets one real attempt.
        give_up_at = max(deadline - ANSWER_MARGIN_S, now + MIN_STATEMENT_S)
        change = _Change(account_id, order_handle, decide, give_up_at, loop.create_future())
        self._waiting.append(change)
        self._schedule(loop)
        try:
            result: T = await asyncio.wait_for(asyncio.shield(change.answer), give_up_at - now)
            return result
        except TimeoutError:
            if not change.decided:
                change.abandoned = True
                raise answer_too_late() from None
        except asyncio.CancelledError:
            if change.decided:
                # Its write commits or not without its caller: nobody will read the outcome.
                change.answer.add_done_callback(_unread)
            else:
                change.abandoned = True
            raise
        # Its decision ran and its write may be committing: the answer says whether it was.
        result = await change.answer
        return result

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and len(self._in_flight) < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        self._waiting = [change for change in self._waiting if change.waiting]
        if not self._waiting or len(self._in_flight) >= self._max_in_flight:
            return
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._commit(batch), name="postgres-change-batch")
        self._in_flight.add(task)
        task.add_done_callback(self._finished)
        if self._waiting:
            self._schedule(loop)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._waiting:
            self._schedule(asyncio.get_running_loop())

    async def _commit(self, batch: list[_Change], *, alone: bool = False) -> None:
        decided = _Decided()

        async def work(connection: Any, deadline: float) -> None:
            nonlocal decided
            decided = await self._attempt(connection, deadline, batch, alone=alone)

        deadline = max(change.give_up_at for change in batch) + ANSWER_MARGIN_S
        try:
            await self._run(work, deadline)
        except BaseException as error:
            for change in batch:
                if change.waiting:
                    change.answer.set_exception(_copy(error))
            if isinstance(error, Exception):
                return
            raise
        for change in decided.changes:
            if not change.answer.done():
                change.answer.set_result(change.outcome)
        if decided.events:
            self._events_committed()
        loop = asyncio.get_running_loop()
        for change in decided.contended:
            if change.waiting:
                task = loop.create_task(self._commit([change], alone=True), name="postgres-change-alone")
                self._alone.add(task)
                task.add_done_callback(self._alone.discard)

    async def _attempt(
        self, connection: Any, deadline: float, batch: list[_Change], *, alone: bool
    ) -> _Decided:
        """One attempt of the batch, inside its transaction: lock, decide, write.

        A batch does not wait for records another transaction holds (another process's change of
        the same order, or an operator's open transaction): it would hold up every change in it, up
        to the latest deadline among them. It skips them, and the changes of those handles run
        alone, after it, each waiting for its own records as long as its own deadline allows."""
        keys = list(dict.fromkeys((c.account_id, c.order_handle) for c in batch if c.waiting))
        if not keys:
            return _Decided()
        rows = await connection.fetch(
            SELECT_LOCKED if alone else SELECT_SKIPPING,
            [account_id for account_id, _ in keys],
            [handle for _, handle in keys],
            timeout=statement_timeout(deadline),
        )
        records: list[list[StoredRecord]] = [[] for _ in keys]
        totals = [0] * len(keys)
        for row in rows:
            if row[0] is None:
                totals[row[6] - 1] = row[7]
            else:
                records[row[6] - 1].append(StoredRecord(*row[:6]))
        contended = {
            key for key, found, total in zip(keys, records, totals, strict=True) if len(found) < total
        }
        handle_records = {key: sorted(found) for key, found in zip(keys, records, strict=True)}
        decided = _Decided()
        now = time.monotonic()
        for change in batch:
            if not change.waiting:
                continue
            if (change.account_id, change.order_handle) in contended:
                decided.contended.append(change)
                continue
            if now >= change.give_up_at:  # its caller is gone or about to be: leave it out
                change.answer.set_exception(answer_too_late())
                continue
            change.decided = True
            current = handle_records[change.account_id, change.order_handle]
            try:
                decision = change.decide(list(current))
            except Exception as error:  # the decision refused: its caller hears that very error
                change.answer.set_exception(error)
                continue
            change.outcome = decision.answer
            decided.changes.append(change)
            write = decision.write
            if write is None:
                continue  # and no event either: an event only tells of a write
            decided.writes[write.row_id] = write
            # The next change of this handle decides on the records as this one leaves them.
            for index, record in enumerate(current):
                if record.row_id == write.row_id:
                    current[index] = record._replace(status=write.status, body=write.body)
            if decision.event is not None:
                decided.events.append(ChangedEvent(change.account_id, change.order_handle, decision.event))
        await postgres_events.write_changes(
            connection,
            deadline,
            list(decided.writes.values()),
            decided.events,
            now_ms=now_ms(),
            notice=self._notice,
        )
        return decided

    async def close(self) -> None:
        """Wait for the batches in flight; the changes still waiting fail with the store."""
        while self._in_flight or self._alone:
            await asyncio.wait([*self._in_flight, *self._alone])


def _unread(answer: asyncio.Future[Any]) -> None:
    if not answer.cancelled():
        answer.exception()


def _copy(error: BaseException) -> BaseException:
    """The error for one more waiting caller: an Unavailable of its own (each caller's handling may
    add to it); a batch cut short (the store closing) is one too; anything else as it is."""
    if isinstance(error, Unavailable):
        copied = Unavailable(error.reason, error.message, dict(error.metadata))
        copied.__cause__ = error.__cause__
        return copied
    if not isinstance(error, Exception):
        stopped = Unavailable("STORE_UNAVAILABLE", "the database could not complete the change")
        stopped.__cause__ = error
        return stopped
    return error
