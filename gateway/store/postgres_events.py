"""The outbox of order events, their delivery leases and webhook subscriptions, in PostgreSQL.

Plain functions over a connection (`PostgresStore` runs each in its own call, with its retries; the
writes inside a transaction), and the one statement that writes a change with its event.

Commit order. A watcher resumes from an event id and must never miss an event that commits after
it read, with an id below its cursor. A sequence gives out its numbers when rows are inserted, not
when they commit, so two transactions can commit in the other order than their ids. Hence the
outbox lock: a transaction-scoped advisory lock taken by the very statement that inserts events,
just before the ids are drawn, and held to COMMIT. Whoever draws the next id waits until the
transaction holding the lock has committed (or rolled back) and become visible, so ids ascend in
commit order across every process on the database. It is held only from the insert to COMMIT: a
change locks its order rows, decides and writes them first. The cost is that event-writing
commits of the whole database take turns; the store shares one transaction among the concurrent
changes of a process (postgres_batch.py), so a turn carries many events.

The same statement sends `pg_notify` on CHANNEL, delivered to listeners when (and only if) the
transaction commits: that is how other processes on the database hear of new events
(postgres_listen.py).

Delivery leases. A delivery is the set of pending events that share a `delivery_id`; its events
always change together. Two claims must never take the same delivery, yet the claim may not queue
behind another claim either. So a claim locks each due delivery's lead event (its lowest id) with
`FOR UPDATE SKIP LOCKED`, and only then the rest of that delivery's events. Everything else that
locks a delivery's events (an outcome, a release) locks them in id order, the lead first: whoever
holds any event of a delivery holds its lead, so the claim never waits on a delivery it took, and
nothing deadlocks. New events are read without a lock, grouped into deliveries, and then only the
events chosen are locked, with `FOR UPDATE SKIP LOCKED`, and started: an event another claim holds
is left to it (and passed over by this claim's next reading), and no claim holds events it does not
take, so claims running at once leave nothing unclaimed between them.

The queries name `state = 0` as a literal, never as a parameter: only then does the planner know
they fall within the partial indexes of migration 2, which hold only pending events.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

import asyncpg

from gateway.domain.errors import NotFound
from gateway.store.base import RecordWrite
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
from gateway.store.postgres_base import statement_timeout

# Another number of the one-bigint advisory key space (see postgres_schema.py): the ASCII of
# "htgwoutb". Nothing else may take it.
OUTBOX_LOCK_KEY = 0x6874_6777_6F75_7462
CHANNEL = "hypertrack_order_events"
"""The notification channel of event-writing commits; the payload names the store that wrote."""

PENDING = int(DeliveryState.PENDING)
UNSUBSCRIBED = int(DeliveryState.UNSUBSCRIBED)


class ChangedEvent(NamedTuple):
    """An event a change writes, with the order it tells of."""

    account_id: str
    order_handle: str
    event: EventWrite


_UPDATE_RECORDS = (
    "UPDATE orders AS o SET status = w.status, body = w.body, updated_at_ms = $4"
    " FROM unnest($1::int8[], $2::int4[], $3::bytea[]) AS w (id, status, body) WHERE o.id = w.id"
)
# The records and the events in one statement. The unreferenced UPDATE runs to completion all the
# same; the outbox lock and the notification come from a CTE that is materialized, so they run once,
# and before any id is drawn: an id is drawn when a row reaches the insert, and every row passes
# through the join with `outbox`. WITH ORDINALITY keeps the changes' order in the ids. The event of
# an account without a webhook is written UNSUBSCRIBED, outside the outbox's partial indexes, rather
# than marked so by the next claim.
WRITE_WITH_EVENTS = (
    f"WITH changed AS ({_UPDATE_RECORDS}),"
    f" outbox AS MATERIALIZED (SELECT 1 AS locked FROM pg_advisory_xact_lock({OUTBOX_LOCK_KEY}),"
    f" pg_notify('{CHANNEL}', $5::text))"
    " INSERT INTO order_events"
    " (account_id, order_handle, fulfillment_attempt, value, recorded_at_us, created_at_ms, body, state)"
    " SELECT e.account_id, e.order_handle, e.attempt, e.value, e.recorded_at_us, $4, e.body,"
    " CASE WHEN EXISTS (SELECT 1 FROM webhooks AS w WHERE w.account_id = e.account_id)"
    f" THEN {PENDING} ELSE {UNSUBSCRIBED} END"
    " FROM outbox, unnest($6::text[], $7::text[], $8::int4[], $9::int4[], $10::int8[], $11::bytea[])"
    " WITH ORDINALITY AS e (account_id, order_handle, attempt, value, recorded_at_us, body, n)"
    " ORDER BY e.n"
)

_LAST_EVENT_ID = "SELECT coalesce(max(event_id), 0) FROM order_events"
_EVENTS_AFTER = (
    "SELECT event_id, account_id, body FROM order_events WHERE event_id > $1 ORDER BY event_id LIMIT $2"
)
_ACCOUNT_EVENTS_AFTER = (
    "SELECT event_id, account_id, body FROM order_events"
    " WHERE account_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3"
)

_DUE = "coalesce(e.lease_until_ms, e.next_attempt_ms)"
"""When a delivery in flight is due: its lease's end while leased (a lease is only taken on a due
delivery, so it ends after the next attempt was due), else its next attempt."""
_DUE_LEADS = (
    "SELECT e.delivery_id, e.account_id, w.url, w.secret FROM order_events AS e"
    " LEFT JOIN webhooks AS w ON w.account_id = e.account_id"
    f" WHERE e.state = {PENDING} AND e.delivery_id IS NOT NULL AND {_DUE} <= $1"
    " AND NOT EXISTS (SELECT 1 FROM order_events AS p"
    f" WHERE p.state = {PENDING} AND p.delivery_id = e.delivery_id AND p.event_id < e.event_id)"
    f" ORDER BY {_DUE}, e.event_id LIMIT $2 FOR UPDATE OF e SKIP LOCKED"
)
# Every event of the due deliveries whose leads the claim holds: taken over as they are (id,
# attempts), or ended as unsubscribed when the account has no webhook any more.
_TAKE_DUE = (
    "UPDATE order_events AS e SET"
    f" state = CASE WHEN d.subscribed THEN e.state ELSE {UNSUBSCRIBED} END,"
    " lease_owner = CASE WHEN d.subscribed THEN $3 END,"
    " lease_until_ms = CASE WHEN d.subscribed THEN $4::int8 END"
    " FROM unnest($1::text[], $2::bool[]) AS d (delivery_id, subscribed)"
    f" WHERE e.state = {PENDING} AND e.delivery_id = d.delivery_id"
    " RETURNING e.delivery_id, e.event_id, e.attempts, e.body, d.subscribed"
)
# The oldest new events, without locking them (see _START_NEW), but those another claim was found
# to hold.
_NEW_EVENTS = (
    "SELECT e.event_id, e.account_id, e.body, w.url, w.secret FROM order_events AS e"
    " LEFT JOIN webhooks AS w ON w.account_id = e.account_id"
    f" WHERE e.state = {PENDING} AND e.delivery_id IS NULL AND e.event_id <> ALL($1::int8[])"
    " ORDER BY e.event_id LIMIT $2"
)
# New events into deliveries (a delivery id), or unsubscribed (none): those of them that are still
# new and that no other claim holds; returns which.
_START_NEW = (
    "UPDATE order_events AS e SET"
    f" state = CASE WHEN d.delivery_id IS NULL THEN {UNSUBSCRIBED} ELSE {PENDING} END,"
    " delivery_id = d.delivery_id,"
    " next_attempt_ms = CASE WHEN d.delivery_id IS NOT NULL THEN $3::int8 END,"
    " lease_owner = CASE WHEN d.delivery_id IS NOT NULL THEN $4 END,"
    " lease_until_ms = CASE WHEN d.delivery_id IS NOT NULL THEN $5::int8 END"
    " FROM unnest($1::int8[], $2::text[]) AS d (event_id, delivery_id)"
    " WHERE e.event_id = d.event_id AND e.event_id IN (SELECT event_id FROM order_events"
    f" WHERE event_id = ANY($1::int8[]) AND state = {PENDING} AND delivery_id IS NULL"
    " FOR UPDATE SKIP LOCKED)"
    " RETURNING e.event_id"
)
# The events of a delivery the owner still holds, locked in id order (see the module's docstring).
# An attempt without an answer (a timeout, no connection) keeps the last answer's status and text.
_FINISH = (
    "UPDATE order_events AS e SET state = $3, http_status = coalesce($4, e.http_status),"
    " response_text = CASE WHEN $4::int4 IS NULL THEN e.response_text ELSE $5 END,"
    " next_attempt_ms = $6, attempts = e.attempts + 1, lease_owner = NULL, lease_until_ms = NULL"
    " FROM (SELECT event_id FROM order_events"
    f" WHERE state = {PENDING} AND delivery_id = $1 AND lease_owner = $2"
    " ORDER BY event_id FOR UPDATE) AS l"
    f" WHERE e.event_id = l.event_id AND e.state = {PENDING} AND e.lease_owner = $2"
)
_RELEASE = (
    "UPDATE order_events AS e SET lease_owner = NULL, lease_until_ms = NULL"
    " FROM (SELECT event_id FROM order_events"
    f" WHERE state = {PENDING} AND delivery_id IS NOT NULL AND lease_owner = $1"
    " ORDER BY event_id FOR UPDATE) AS l"
    f" WHERE e.event_id = l.event_id AND e.state = {PENDING} AND e.lease_owner = $1"
    " RETURNING e.delivery_id"
)
# One subquery per partial index, so that each reads only the pending events it holds.
_NEXT_DUE = (
    "SELECT least("
    f" (SELECT min(coalesce(lease_until_ms, next_attempt_ms)) FROM order_events"
    f" WHERE state = {PENDING} AND delivery_id IS NOT NULL),"
    f" (SELECT created_at_ms FROM order_events WHERE state = {PENDING} AND delivery_id IS NULL"
    " ORDER BY event_id LIMIT 1))"
)
_STATS = (
    "SELECT n.count + f.count, least(n.oldest, f.oldest) FROM"
    " (SELECT count(*), min(created_at_ms) AS oldest FROM order_events"
    f" WHERE state = {PENDING} AND delivery_id IS NULL) AS n,"
    " (SELECT count(*), min(created_at_ms) AS oldest FROM order_events"
    f" WHERE state = {PENDING} AND delivery_id IS NOT NULL) AS f"
)

_SET_WEBHOOK = (
    "INSERT INTO webhooks (account_id, url, secret, created_at_ms) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (account_id) DO UPDATE SET"
    " url = excluded.url, secret = excluded.secret, created_at_ms = excluded.created_at_ms"
)
_WEBHOOK = "SELECT account_id, url, secret, created_at_ms FROM webhooks WHERE account_id = $1"
_REMOVE_WEBHOOK = "DELETE FROM webhooks WHERE account_id = $1 RETURNING true"


def _count(status: str) -> int:
    """The row count of a command's status (`UPDATE 3`)."""
    return int(status.rsplit(" ", 1)[-1])


# --- the change's write ---------------------------------------------------------------------------


async def write_changes(
    connection: Any,
    deadline: float,
    writes: Sequence[RecordWrite],
    events: Sequence[ChangedEvent],
    *,
    now_ms: int,
    notice: str,
) -> None:
    """Inside the changes' transaction: the records' new status and body, and their events (with
    the outbox lock and the notification carrying `notice`), in one statement."""
    records = (
        [write.row_id for write in writes],
        [write.status for write in writes],
        [write.body for write in writes],
    )
    timeout = statement_timeout(deadline)
    if not events:
        if writes:
            await connection.execute(_UPDATE_RECORDS, *records, now_ms, timeout=timeout)
        return
    await connection.execute(
        WRITE_WITH_EVENTS,
        *records,
        now_ms,
        notice,
        [changed.account_id for changed in events],
        [changed.order_handle for changed in events],
        [changed.event.fulfillment_attempt for changed in events],
        [changed.event.value for changed in events],
        [changed.event.recorded_at_us for changed in events],
        [changed.event.body for changed in events],
        timeout=timeout,
    )


# --- the stream and the replay --------------------------------------------------------------------


async def last_event_id(connection: Any, deadline: float) -> int:
    last: int = await connection.fetchval(_LAST_EVENT_ID, timeout=statement_timeout(deadline))
    return last


async def events_after(
    connection: Any, deadline: float, after_id: int, limit: int, account_id: str | None
) -> list[StoredEvent]:
    if limit <= 0:
        return []
    timeout = statement_timeout(deadline)
    if account_id is None:
        rows = await connection.fetch(_EVENTS_AFTER, after_id, limit, timeout=timeout)
    else:
        rows = await connection.fetch(_ACCOUNT_EVENTS_AFTER, account_id, after_id, limit, timeout=timeout)
    return [StoredEvent(row[0], row[1], bytes(row[2])) for row in rows]


@lru_cache(maxsize=64)
def _replay_sql(
    *, values: bool, since: bool, before: bool, attempt: bool, after: bool, descending: bool
) -> str:
    """The replay's statement for the filters present (their values are parameters): one text per
    shape, so that each connection prepares each shape once and plans it for its own filters."""
    terms = ["account_id = $1", "order_handle = $2"]
    for present, term in (
        (values, "value = ANY({}::int4[])"),
        (since, "recorded_at_us >= {}::int8"),
        (before, "recorded_at_us < {}::int8"),
        (attempt, "fulfillment_attempt = {}::int4"),
        (after, ("event_id < {}::int8" if descending else "event_id > {}::int8")),
    ):
        if present:
            terms.append(term.format(f"${len(terms) + 1}"))
    return (
        "SELECT event_id, body, state, http_status, attempts, response_text FROM order_events"
        f" WHERE {' AND '.join(terms)} ORDER BY event_id {'DESC' if descending else 'ASC'}"
        f" LIMIT ${len(terms) + 1}"
    )


async def order_events(
    connection: Any, deadline: float, account_id: str, order_handle: str, query: EventQuery
) -> list[ReplayedEvent]:
    if query.limit <= 0:
        return []
    sql = _replay_sql(
        values=bool(query.values),
        since=query.from_us is not None,
        before=query.to_us is not None,
        attempt=query.fulfillment_attempt is not None,
        after=query.after_id is not None,
        descending=query.descending,
    )
    arguments: list[object] = [account_id, order_handle]
    if query.values:
        arguments.append(list(query.values))
    for given in (query.from_us, query.to_us, query.fulfillment_attempt, query.after_id):
        if given is not None:
            arguments.append(given)
    arguments.append(query.limit)
    rows = await connection.fetch(sql, *arguments, timeout=statement_timeout(deadline))
    return [ReplayedEvent.of_row(row) for row in rows]


# --- delivery -------------------------------------------------------------------------------------


async def claim_deliveries(
    connection: Any,
    deadline: float,
    owner: str,
    *,
    now_ms: int,
    lease_ms: int,
    max_deliveries: int,
    max_events: int,
) -> list[ClaimedDelivery]:
    """Inside a transaction: deliveries that are due (retries, and leases that ran out), then new
    ones of the oldest pending events, all leased to `owner`."""
    if max_deliveries <= 0 or max_events <= 0:
        return []
    until_ms = now_ms + lease_ms
    claimed = await _claim_due(
        connection, deadline, owner, now_ms=now_ms, until_ms=until_ms, most=max_deliveries
    )
    wanted = max_deliveries - len(claimed)
    if wanted > 0:
        claimed += await _claim_new(
            connection, deadline, owner, now_ms=now_ms, until_ms=until_ms, most=wanted, max_events=max_events
        )
    return claimed


async def _claim_due(
    connection: Any, deadline: float, owner: str, *, now_ms: int, until_ms: int, most: int
) -> list[ClaimedDelivery]:
    """Deliveries in flight that are due, taken over as they are (id, attempts, events)."""
    leads = await connection.fetch(_DUE_LEADS, now_ms, most, timeout=statement_timeout(deadline))
    if not leads:
        return []
    rows = await connection.fetch(
        _TAKE_DUE,
        [lead[0] for lead in leads],
        [lead[2] is not None for lead in leads],
        owner,
        until_ms,
        timeout=statement_timeout(deadline),
    )
    events: dict[str, list[tuple[int, int, bytes]]] = {}
    for delivery_id, event_id, attempts, body, subscribed in rows:
        if subscribed:
            events.setdefault(delivery_id, []).append((event_id, attempts, bytes(body)))
    claimed = []
    for delivery_id, account_id, url, secret in leads:
        taken = sorted(events.get(delivery_id, ()))
        if taken:
            claimed.append(
                ClaimedDelivery(
                    delivery_id,
                    account_id,
                    url,
                    secret,
                    taken[0][1],
                    tuple(event_id for event_id, _, _ in taken),
                    tuple(body for _, _, body in taken),
                )
            )
    return claimed


async def _claim_new(
    connection: Any,
    deadline: float,
    owner: str,
    *,
    now_ms: int,
    until_ms: int,
    most: int,
    max_events: int,
) -> list[ClaimedDelivery]:
    """New deliveries of the oldest pending events; those of accounts without a webhook are
    marked UNSUBSCRIBED on the way."""
    claimed: list[ClaimedDelivery] = []
    held_elsewhere: list[int] = []
    scanned = 0
    while len(claimed) < most and scanned < CLAIM_SCAN_ROWS:
        # Enough events to fill every delivery still wanted, even if each account has one.
        wanted = min((most - len(claimed)) * max_events, CLAIM_SCAN_ROWS - scanned)
        rows = await connection.fetch(
            _NEW_EVENTS, held_elsewhere, wanted, timeout=statement_timeout(deadline)
        )
        if not rows:
            break
        scanned += len(rows)
        groups = _group(rows, max_events)
        chosen = groups[: most - len(claimed)]
        event_ids = [row[0] for row in rows if row[3] is None]
        delivery_ids: list[str | None] = [None] * len(event_ids)
        for delivery in chosen:
            event_ids += delivery.event_ids
            delivery_ids += [delivery.delivery_id] * len(delivery.event_ids)
        # Only the events chosen are locked, so no claim holds events it leaves to the others.
        taken = {
            row[0]
            for row in await connection.fetch(
                _START_NEW,
                event_ids,
                delivery_ids,
                now_ms,
                owner,
                until_ms,
                timeout=statement_timeout(deadline),
            )
        }
        held_elsewhere += (event_id for event_id in event_ids if event_id not in taken)
        for delivery in chosen:
            kept = [
                (i, body) for i, body in zip(delivery.event_ids, delivery.bodies, strict=True) if i in taken
            ]
            if kept:
                ids, bodies = zip(*kept, strict=True)
                claimed.append(delivery._replace(event_ids=ids, bodies=bodies))
        if len(rows) < wanted and len(chosen) == len(groups) and len(taken) == len(event_ids):
            break  # every new event was seen, and all that were wanted were taken
    return claimed


def _group(rows: Sequence[Any], max_events: int) -> list[ClaimedDelivery]:
    """New deliveries of the events of subscribed accounts (`rows` of _NEW_EVENTS, in id order,
    with the account's webhook URL and secret, NULL without one)."""
    subscribed = [row for row in rows if row[3] is not None]
    return [
        ClaimedDelivery(
            uuid.uuid4().hex,
            group[0][1],
            group[0][3],
            group[0][4],
            0,
            tuple(row[0] for row in group),
            tuple(bytes(row[2]) for row in group),
        )
        for group in delivery_groups(subscribed, itemgetter(1), max_events)
    ]


async def finish_delivery(
    connection: Any, deadline: float, owner: str, delivery_id: str, outcome: DeliveryOutcome, *, now_ms: int
) -> bool:
    next_attempt_ms = outcome.next_attempt_at(now_ms)
    status = await connection.execute(
        _FINISH,
        delivery_id,
        owner,
        int(outcome.state),
        outcome.http_status,
        outcome.response_text,
        next_attempt_ms,
        timeout=statement_timeout(deadline),
    )
    return _count(status) > 0


async def release_deliveries(connection: Any, deadline: float, owner: str) -> int:
    rows = await connection.fetch(_RELEASE, owner, timeout=statement_timeout(deadline))
    return len({row[0] for row in rows})


async def next_delivery_due_ms(connection: Any, deadline: float) -> int | None:
    due: int | None = await connection.fetchval(_NEXT_DUE, timeout=statement_timeout(deadline))
    return due


async def outbox_stats(connection: Any, deadline: float) -> OutboxStats:
    pending, oldest = await connection.fetchrow(_STATS, timeout=statement_timeout(deadline))
    return OutboxStats(pending, oldest)


# --- subscriptions --------------------------------------------------------------------------------


async def set_webhook(
    connection: Any, deadline: float, account_id: str, url: str, secret: str, *, now_ms: int
) -> None:
    try:
        await connection.execute(
            _SET_WEBHOOK, account_id, url, secret, now_ms, timeout=statement_timeout(deadline)
        )
    except asyncpg.exceptions.ForeignKeyViolationError:
        raise NotFound("ACCOUNT_NOT_FOUND", f"no account {account_id!r}") from None


async def webhook(connection: Any, deadline: float, account_id: str) -> Webhook | None:
    row = await connection.fetchrow(_WEBHOOK, account_id, timeout=statement_timeout(deadline))
    return None if row is None else Webhook(*row)


async def remove_webhook(connection: Any, deadline: float, account_id: str) -> bool:
    removed = await connection.fetchval(_REMOVE_WEBHOOK, account_id, timeout=statement_timeout(deadline))
    return removed is not None
