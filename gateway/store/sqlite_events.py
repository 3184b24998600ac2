"""The outbox of order events, their delivery leases and webhook subscriptions, in SQLite.

Plain functions over a connection: `SqliteStore` runs the writes through its group commit (each
in the savepoint of its batch, so a claim is part of one write transaction and SQLite's single
writer makes it exclusive across processes on the file) and the reads on its reader connection.

The queries name `state = 0` as a literal, never as a parameter: only then can SQLite's planner
see that they fall within the partial indexes of migration 2, which hold only pending events.
"""

from __future__ import annotations

import sqlite3
import uuid
from functools import lru_cache
from operator import itemgetter

from gateway.domain.errors import NotFound
from gateway.store.events import (
    CLAIM_SCAN_ROWS,
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryState,
    EventQuery,
    EventWrite,
    OutboxStats,
    ReplayedEvent,
    StoredEvent,
    Webhook,
    delivery_groups,
)

PENDING = int(DeliveryState.PENDING)
UNSUBSCRIBED = int(DeliveryState.UNSUBSCRIBED)

_DUE = "coalesce(lease_until_ms, next_attempt_ms)"
"""When a delivery in flight is due: its lease's end while leased (a lease is only taken on a due
delivery, so it ends after the next attempt was due), else its next attempt. Indexed as written."""

_NEW = f"state = {PENDING} AND delivery_id IS NULL"
_IN_FLIGHT = f"state = {PENDING} AND delivery_id IS NOT NULL"

INSERT_EVENT = (
    "INSERT INTO order_events (account_id, order_handle, fulfillment_attempt, value,"
    " recorded_at_us, created_at_ms, body, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SUBSCRIBED = "SELECT 1 FROM webhooks WHERE account_id = ?"
_LAST_EVENT_ID = "SELECT max(id) FROM order_events"
_EVENTS_AFTER = "SELECT id, account_id, body FROM order_events WHERE id > ? ORDER BY id LIMIT ?"
_ACCOUNT_EVENTS_AFTER = (
    "SELECT id, account_id, body FROM order_events WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?"
)

_DUE_DELIVERIES = f"SELECT delivery_id FROM order_events WHERE {_IN_FLIGHT} AND {_DUE} <= ? ORDER BY {_DUE}"
_DELIVERY_EVENTS = (
    f"SELECT id, account_id, attempts, body FROM order_events"
    f" WHERE delivery_id = ? AND state = {PENDING} ORDER BY id"
)
_LEASE_DELIVERY = (
    f"UPDATE order_events SET lease_owner = ?, lease_until_ms = ? WHERE delivery_id = ? AND state = {PENDING}"
)
_UNSUBSCRIBE_DELIVERY = (
    f"UPDATE order_events SET state = {UNSUBSCRIBED}, lease_owner = NULL, lease_until_ms = NULL"
    f" WHERE delivery_id = ? AND state = {PENDING}"
)
_NEW_EVENTS = f"SELECT id, account_id, body FROM order_events WHERE {_NEW} AND id > ? ORDER BY id LIMIT ?"
_START_DELIVERY = (
    "UPDATE order_events SET delivery_id = ?, next_attempt_ms = ?, lease_owner = ?, lease_until_ms = ?"
    " WHERE id = ?"
)
_UNSUBSCRIBE_EVENT = f"UPDATE order_events SET state = {UNSUBSCRIBED} WHERE id = ?"
# An attempt without an answer (a timeout, no connection) keeps the last answer's status and text.
_FINISH_ANSWERED = (
    "UPDATE order_events SET state = ?, http_status = ?, response_text = ?, next_attempt_ms = ?,"
    " attempts = attempts + 1, lease_owner = NULL, lease_until_ms = NULL"
    f" WHERE delivery_id = ? AND state = {PENDING} AND lease_owner = ?"
)
_FINISH_UNANSWERED = (
    "UPDATE order_events SET state = ?, next_attempt_ms = ?,"
    " attempts = attempts + 1, lease_owner = NULL, lease_until_ms = NULL"
    f" WHERE delivery_id = ? AND state = {PENDING} AND lease_owner = ?"
)
_RELEASE = (
    "UPDATE order_events SET lease_owner = NULL, lease_until_ms = NULL"
    f" WHERE {_IN_FLIGHT} AND lease_owner = ? RETURNING delivery_id"
)
_FIRST_NEW = f"SELECT created_at_ms FROM order_events WHERE {_NEW} ORDER BY id LIMIT 1"
_FIRST_DUE = f"SELECT {_DUE} FROM order_events WHERE {_IN_FLIGHT} ORDER BY {_DUE} LIMIT 1"
_PENDING_COUNT = f"SELECT count(*), min(id) FROM order_events WHERE state = {PENDING}"
_CREATED_AT = "SELECT created_at_ms FROM order_events WHERE id = ?"

_ACCOUNT_EXISTS = "SELECT 1 FROM accounts WHERE account_id = ?"
_SET_WEBHOOK = (
    "INSERT INTO webhooks (account_id, url, secret, created_at_ms) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (account_id) DO UPDATE SET"
    " url = excluded.url, secret = excluded.secret, created_at_ms = excluded.created_at_ms"
)
_WEBHOOK = "SELECT account_id, url, secret, created_at_ms FROM webhooks WHERE account_id = ?"
_REMOVE_WEBHOOK = "DELETE FROM webhooks WHERE account_id = ?"


def insert_event(
    db: sqlite3.Connection, account_id: str, order_handle: str, event: EventWrite, now_ms: int
) -> bool:
    """The event of a change, in the change's own transaction; whether it is to be delivered.

    An account without a webhook when its event is written never gets that event: it is written
    UNSUBSCRIBED at once, outside the outbox's indexes, rather than marked so by the next claim
    (another write per event, and a wake-up of the delivery worker per commit, on every cancel of
    an account that takes no webhooks). The webhook is read in the same transaction, so a `webhooks
    set` is either before the event (it is delivered) or after it (it is not)."""
    subscribed = db.execute(_SUBSCRIBED, (account_id,)).fetchone() is not None
    db.execute(
        INSERT_EVENT,
        (
            account_id,
            order_handle,
            event.fulfillment_attempt,
            event.value,
            event.recorded_at_us,
            now_ms,
            event.body,
            PENDING if subscribed else UNSUBSCRIBED,
        ),
    )
    return subscribed


# --- the stream and the replay --------------------------------------------------------------------


def last_event_id(db: sqlite3.Connection) -> int:
    (last,) = db.execute(_LAST_EVENT_ID).fetchone()
    return 0 if last is None else int(last)


def events_after(
    db: sqlite3.Connection, after_id: int, limit: int, account_id: str | None
) -> list[StoredEvent]:
    if limit <= 0:
        return []
    if account_id is None:
        rows = db.execute(_EVENTS_AFTER, (after_id, limit)).fetchall()
    else:
        rows = db.execute(_ACCOUNT_EVENTS_AFTER, (account_id, after_id, limit)).fetchall()
    return [StoredEvent._make(row) for row in rows]


@lru_cache(maxsize=256)
def _replay_sql(
    values: int, *, since: bool, before: bool, attempt: bool, after: bool, descending: bool
) -> str:
    """The replay's statement for the filters present (their values are parameters): one text per
    shape, so that the connection's statement cache prepares each shape once."""
    terms = ["account_id = ?", "order_handle = ?"]
    if values:
        terms.append(f"value IN ({','.join('?' * values)})")
    if since:
        terms.append("recorded_at_us >= ?")
    if before:
        terms.append("recorded_at_us < ?")
    if attempt:
        terms.append("fulfillment_attempt = ?")
    if after:
        terms.append("id < ?" if descending else "id > ?")
    return (
        "SELECT id, body, state, http_status, attempts, response_text FROM order_events"
        f" WHERE {' AND '.join(terms)} ORDER BY id {'DESC' if descending else 'ASC'} LIMIT ?"
    )


def order_events(
    db: sqlite3.Connection, account_id: str, order_handle: str, query: EventQuery
) -> list[ReplayedEvent]:
    if query.limit <= 0:
        return []
    sql = _replay_sql(
        len(query.values),
        since=query.from_us is not None,
        before=query.to_us is not None,
        attempt=query.fulfillment_attempt is not None,
        after=query.after_id is not None,
        descending=query.descending,
    )
    parameters: list[object] = [account_id, order_handle, *query.values]
    for given in (query.from_us, query.to_us, query.fulfillment_attempt, query.after_id):
        if given is not None:
            parameters.append(given)
    parameters.append(query.limit)
    return [ReplayedEvent.of_row(row) for row in db.execute(sql, parameters)]


# --- delivery -------------------------------------------------------------------------------------


def claim_deliveries(
    db: sqlite3.Connection,
    owner: str,
    *,
    now_ms: int,
    lease_ms: int,
    max_deliveries: int,
    max_events: int,
) -> list[ClaimedDelivery]:
    """Inside a write transaction: deliveries that are due (retries, and leases that ran out),
    then new ones of the oldest pending events, all leased to `owner`."""
    if max_deliveries <= 0 or max_events <= 0:
        return []
    claim = _Claim(db, owner, now_ms, now_ms + lease_ms)
    claimed = claim.due(max_deliveries)
    return claimed + claim.new(max_deliveries - len(claimed), max_events)


class _Claim:
    """One claim: what it leases to whom until when, and the subscriptions it read (each once)."""

    def __init__(self, db: sqlite3.Connection, owner: str, now_ms: int, until_ms: int) -> None:
        self._db = db
        self._owner = owner
        self._now_ms = now_ms
        self._until_ms = until_ms
        self._webhooks: dict[str, Webhook | None] = {}

    def _webhook(self, account_id: str) -> Webhook | None:
        if account_id not in self._webhooks:
            self._webhooks[account_id] = webhook(self._db, account_id)
        return self._webhooks[account_id]

    def due(self, most: int) -> list[ClaimedDelivery]:
        """Deliveries in flight that are due, taken over as they are (id, attempts, events)."""
        db = self._db
        due: list[str] = []
        cursor = db.execute(_DUE_DELIVERIES, (self._now_ms,))
        # A delivery's events sit together in the index (same due time, then delivery id): reading
        # stops after the events of the `most`-th delivery, however many are due.
        for (delivery_id,) in cursor:
            if due and due[-1] == delivery_id:
                continue
            if len(due) == most:
                break
            due.append(delivery_id)
        cursor.close()
        claimed = []
        for delivery_id in due:
            rows = db.execute(_DELIVERY_EVENTS, (delivery_id,)).fetchall()
            account_id, attempts = rows[0][1], rows[0][2]
            hook = self._webhook(account_id)
            if hook is None:  # unsubscribed since its last attempt: nowhere to send it
                db.execute(_UNSUBSCRIBE_DELIVERY, (delivery_id,))
                continue
            db.execute(_LEASE_DELIVERY, (self._owner, self._until_ms, delivery_id))
            events = tuple(row[0] for row in rows)
            bodies = tuple(row[3] for row in rows)
            claimed.append(
                ClaimedDelivery(delivery_id, account_id, hook.url, hook.secret, attempts, events, bodies)
            )
        return claimed

    def new(self, most: int, max_events: int) -> list[ClaimedDelivery]:
        """New deliveries of the oldest pending events; those of accounts without a webhook are
        marked UNSUBSCRIBED on the way."""
        db = self._db
        claimed: list[ClaimedDelivery] = []
        after = scanned = 0
        while len(claimed) < most and scanned < CLAIM_SCAN_ROWS:
            # Enough events to fill every delivery still wanted, even if each account has one.
            wanted = min((most - len(claimed)) * max_events, CLAIM_SCAN_ROWS - scanned)
            rows: list[tuple[int, str, bytes]] = db.execute(_NEW_EVENTS, (after, wanted)).fetchall()
            if not rows:
                break
            scanned += len(rows)
            after = rows[-1][0]
            subscribed: list[tuple[int, str, bytes]] = []
            unsubscribed: list[tuple[int]] = []
            for row in rows:
                if self._webhook(row[1]) is None:
                    unsubscribed.append((row[0],))
                else:
                    subscribed.append(row)
            if unsubscribed:
                db.executemany(_UNSUBSCRIBE_EVENT, unsubscribed)
            for group in delivery_groups(subscribed, itemgetter(1), max_events)[: most - len(claimed)]:
                claimed.append(self._start(group))
            if len(rows) < wanted:
                break  # none is left
        return claimed

    def _start(self, group: list[tuple[int, str, bytes]]) -> ClaimedDelivery:
        """A new delivery of `group`, events of one subscribed account, leased to the owner."""
        account_id = group[0][1]
        hook = self._webhook(account_id)
        assert hook is not None  # only subscribed accounts' events are grouped
        delivery_id = uuid.uuid4().hex
        self._db.executemany(
            _START_DELIVERY,
            [(delivery_id, self._now_ms, self._owner, self._until_ms, event_id) for event_id, _, _ in group],
        )
        events = tuple(event_id for event_id, _, _ in group)
        bodies = tuple(body for _, _, body in group)
        return ClaimedDelivery(delivery_id, account_id, hook.url, hook.secret, 0, events, bodies)


def finish_delivery(
    db: sqlite3.Connection, owner: str, delivery_id: str, outcome: DeliveryOutcome, now_ms: int
) -> bool:
    next_attempt_ms = outcome.next_attempt_at(now_ms)
    if outcome.http_status is None:
        cursor = db.execute(_FINISH_UNANSWERED, (int(outcome.state), next_attempt_ms, delivery_id, owner))
    else:
        cursor = db.execute(
            _FINISH_ANSWERED,
            (
                int(outcome.state),
                outcome.http_status,
                outcome.response_text,
                next_attempt_ms,
                delivery_id,
                owner,
            ),
        )
    return cursor.rowcount > 0


def release_deliveries(db: sqlite3.Connection, owner: str) -> int:
    return len({delivery_id for (delivery_id,) in db.execute(_RELEASE, (owner,)).fetchall()})


def next_delivery_due_ms(db: sqlite3.Connection) -> int | None:
    # A new event is due as soon as it is written.
    rows = (db.execute(_FIRST_NEW).fetchone(), db.execute(_FIRST_DUE).fetchone())
    due = [row[0] for row in rows if row is not None]
    return min(due) if due else None


def outbox_stats(db: sqlite3.Connection) -> OutboxStats:
    # The oldest pending event is the one of the lowest id: ids ascend with the time of writing.
    pending, oldest_id = db.execute(_PENDING_COUNT).fetchone()
    if oldest_id is None:
        return OutboxStats(0, None)
    row = db.execute(_CREATED_AT, (oldest_id,)).fetchone()
    return OutboxStats(pending, None if row is None else row[0])


# --- subscriptions --------------------------------------------------------------------------------


def set_webhook(db: sqlite3.Connection, account_id: str, url: str, secret: str, now_ms: int) -> None:
    if db.execute(_ACCOUNT_EXISTS, (account_id,)).fetchone() is None:
        raise NotFound("ACCOUNT_NOT_FOUND", f"no account {account_id!r}")
    db.execute(_SET_WEBHOOK, (account_id, url, secret, now_ms))


def webhook(db: sqlite3.Connection, account_id: str) -> Webhook | None:
    row = db.execute(_WEBHOOK, (account_id,)).fetchone()
    return None if row is None else Webhook._make(row)


def remove_webhook(db: sqlite3.Connection, account_id: str) -> bool:
    return db.execute(_REMOVE_WEBHOOK, (account_id,)).rowcount > 0
