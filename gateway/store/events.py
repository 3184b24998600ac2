"""The event side of a store: the outbox of order events, their delivery, and webhook subscriptions.

An event is written by `OrderStore.change_order` in the same transaction as the change it tells
of (the decision's `event`, see base.py), so a change that rolls back leaves none, and one that
commits is in the outbox for good. Each event gets an `event_id`: the order in which events were
committed in this database, across every process that writes to it (a watcher's cursor and the
replay's order rely on it: an id is never taken by a transaction that commits after one with a
higher id).

Delivery to an account's webhook goes through leases, so that several processes on one database
share the work and never send the same delivery at once: `claim_deliveries` takes due deliveries
for `lease_ms`, `finish_delivery` records the outcome, and a lease that runs out (its process died)
lets another process take the delivery over, with the same delivery id and attempt count.

The store knows no delivery policy (retries, intervals): the delivery worker decides and tells it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

R = TypeVar("R")

CLAIM_SCAN_ROWS = 10_000
"""New events a claim reads at most: events of accounts without a webhook are marked as it goes and
do not fill deliveries, and one claim must not hold its transaction (nor, on SQLite, the writer and
the event loop) for long."""


class EventWrite(NamedTuple):
    """An event a change writes with itself: the columns its replay filters on, and its body."""

    fulfillment_attempt: int
    value: int
    """The change's `OrderStatus` (cancelled, completed, disabled): the event's `data.value`."""
    recorded_at_us: int
    """When the change happened, in microseconds since the epoch."""
    body: bytes
    """The serialized `OrderEvent` message."""


class StoredEvent(NamedTuple):
    """One event of the outbox, as a watcher reads it."""

    event_id: int
    account_id: str
    body: bytes


class DeliveryState(enum.IntEnum):
    """Where an event's delivery stands (stored as the number)."""

    PENDING = 0
    """Not yet sent, or to be sent again."""
    DELIVERED = 1
    """The receiver answered 2xx."""
    REJECTED = 2
    """The receiver answered 4xx: delivery ended, as the contract says, and is not retried."""
    FAILED = 3
    """Every attempt failed (5xx, timeout, no connection)."""
    UNSUBSCRIBED = 4
    """The account had no webhook when the event was written, or none any more when it came to be
    sent: nothing was sent."""


class ReplayedEvent(NamedTuple):
    """One event of an order as the replay reads it: its body and what became of its delivery."""

    event_id: int
    body: bytes
    state: DeliveryState
    http_status: int | None
    """The receiver's last answer's status; None when it never answered."""
    retry_count: int
    """Attempts after the first."""
    response_text: str | None
    """The start of the receiver's last answer; None when it never answered."""

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> ReplayedEvent:
        """From the outbox's columns (id, body, state, http status, attempts, response text), where
        the attempts count the first one too."""
        event_id, body, state, http_status, attempts, text = row
        return cls(event_id, bytes(body), DeliveryState(state), http_status, max(attempts - 1, 0), text)


class EventQuery(NamedTuple):
    """Which events of one order handle a replay reads, and in which order."""

    values: tuple[int, ...] = ()
    """Only these `data.value`s (OrderStatus numbers); empty: all."""
    from_us: int | None = None
    """Only events recorded at or after this instant (microseconds since the epoch)."""
    to_us: int | None = None
    """Only events recorded before this instant."""
    fulfillment_attempt: int | None = None
    after_id: int | None = None
    """Only events past this one in the sort order: ids above it ascending, below it descending."""
    descending: bool = True
    limit: int = 50


class Webhook(NamedTuple):
    """An account's subscription: where its events go and the key that signs them."""

    account_id: str
    url: str
    secret: str
    """The signing secret as it was printed to the account's owner: HMAC-SHA256 takes its UTF-8
    bytes as the key. The store keeps it because signing needs it; nothing else of it is kept."""
    created_at_ms: int


class ClaimedDelivery(NamedTuple):
    """A delivery a process holds the lease of: one POST of one account's events, oldest first."""

    delivery_id: str
    """The same on every attempt of this delivery, whichever process makes it."""
    account_id: str
    url: str
    secret: str
    attempts: int
    """Attempts already made (0 for a new delivery)."""
    event_ids: tuple[int, ...]
    bodies: tuple[bytes, ...]
    """The serialized `OrderEvent`s, in `event_ids` order."""


class DeliveryOutcome(NamedTuple):
    """What an attempt of a delivery came to, for `finish_delivery`."""

    state: DeliveryState
    """DELIVERED, REJECTED or FAILED end it; PENDING asks for another attempt at `next_attempt_ms`."""
    http_status: int | None
    response_text: str | None
    next_attempt_ms: int | None = None

    def next_attempt_at(self, now_ms: int) -> int | None:
        """When the delivery is due again: `next_attempt_ms`, or now for a PENDING outcome without one."""
        if self.state == DeliveryState.PENDING and self.next_attempt_ms is None:
            return now_ms
        return self.next_attempt_ms


class OutboxStats(NamedTuple):
    """The outbox at a glance, for metrics."""

    pending: int
    """Events not yet delivered, rejected, failed or found unsubscribed."""
    oldest_pending_ms: int | None
    """When the oldest of them was written (epoch milliseconds); None when none is."""


class EventStore(Protocol):
    """The outbox, its delivery leases, and subscriptions, over the same database as the orders."""

    # The stream and the replay.

    async def last_event_id(self) -> int:
        """The highest event id committed so far (0 when there is none)."""
        ...

    async def events_after(
        self, after_id: int, *, limit: int, account_id: str | None = None
    ) -> list[StoredEvent]:
        """Committed events with ids above `after_id`, ascending, at most `limit`; of one account
        when `account_id` is given."""
        ...

    async def order_events(
        self, account_id: str, order_handle: str, query: EventQuery, *, deadline: float
    ) -> list[ReplayedEvent]:
        """The events of one order handle of the account that `query` selects, in its order."""
        ...

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the event loop, without arguments) after each commit that wrote
        events, in this process and, where the database can tell, in others sharing it. A wake-up
        only: the listener reads what is new with `events_after`."""
        ...

    def on_deliveries_pending(self, listener: Callable[[], None]) -> None:
        """Call `listener` as `on_events_committed` does, after commits that wrote events to
        deliver (of accounts with a webhook): the delivery worker's wake-up. A store that cannot
        tell may call it after every commit that wrote events."""
        ...

    # Delivery.

    async def claim_deliveries(
        self,
        owner: str,
        *,
        now_ms: int,
        lease_ms: int,
        max_deliveries: int,
        max_events: int,
    ) -> list[ClaimedDelivery]:
        """Lease up to `max_deliveries` due deliveries to `owner` until `now_ms + lease_ms`.

        Due: a delivery whose `next_attempt_ms` has come and whose lease, if any, has run out;
        then new pending events, oldest first, grouped by account into new deliveries of at most
        `max_events` events each. Events of an account without a webhook are marked
        UNSUBSCRIBED on the way and not returned. Two processes claiming at once never get the
        same delivery.
        """
        ...

    async def finish_delivery(self, owner: str, delivery_id: str, outcome: DeliveryOutcome) -> bool:
        """Record an attempt's outcome and let the lease go (the attempt count grows by one).
        False, and nothing written, when `owner` no longer holds the lease (it ran out and
        another process took the delivery over)."""
        ...

    async def release_deliveries(self, owner: str) -> int:
        """Let go of every lease `owner` holds without counting an attempt (at shutdown, for
        deliveries not sent); returns how many deliveries were released."""
        ...

    async def next_delivery_due_ms(self) -> int | None:
        """When the earliest pending delivery that is not leased becomes due (epoch
        milliseconds; possibly in the past), or the earliest lease expiry of a leased one,
        whichever is sooner; None when nothing is pending."""
        ...

    async def outbox_stats(self) -> OutboxStats: ...

    # Subscriptions: one webhook per account.

    async def set_webhook(self, account_id: str, url: str, secret: str) -> None:
        """Subscribe the account, replacing its webhook if it had one. Raises NotFound when the
        account does not exist."""
        ...

    async def webhook(self, account_id: str) -> Webhook | None: ...

    async def remove_webhook(self, account_id: str) -> bool:
        """False when the account had no webhook."""
        ...


def delivery_groups(rows: Iterable[R], account_of: Callable[[R], str], max_events: int) -> list[list[R]]:
    """New events (`rows`, in id order) as new deliveries: grouped by account, at most `max_events`
    in each, oldest first within each, and the groups ordered by their oldest event."""
    groups: list[list[R]] = []
    open_group: dict[str, list[R]] = {}
    for row in rows:
        account_id = account_of(row)
        group = open_group.get(account_id)
        if group is None or len(group) == max_events:
            group = open_group[account_id] = []
            groups.append(group)
        group.append(row)
    return groups
