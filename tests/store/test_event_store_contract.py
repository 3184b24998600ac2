"""The event store contract (gateway.store.events.EventStore), run unchanged against every store kind.

A change that changes an order writes its event in its own transaction; the outbox is read by the
watch (`events_after`), the replay (`order_events`) and the delivery worker, which leases deliveries
(`claim_deliveries`), records their outcome (`finish_delivery`) or gives them back
(`release_deliveries`). Subscriptions are one webhook per account.

Each test gets an empty database of its own with the accounts ACME and RIVAL (see conftest.py). The
last section holds the few SQLite-only checks: that the outbox's queries use its indexes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from functools import partial
from typing import Protocol, cast

import pytest

from gateway.calls.orders import Rule, decide_change, decide_track
from gateway.domain import lifecycle
from gateway.domain.errors import FailedPrecondition, NotFound
from gateway.domain.targets import OrderQuery
from gateway.protos import events_pb2, json_pb2, order_pb2
from gateway.store import sqlite_events
from gateway.store.base import Decision, OrderStore, StoredRecord
from gateway.store.events import (
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryState,
    EventQuery,
    EventStore,
    EventWrite,
    OutboxStats,
)
from tests.store.conftest import ACME, RIVAL, StoreBackend
from tests.store.test_store_contract import route, soon

Status = order_pb2.OrderStatus
CANCELLED = Status.ORDER_STATUS_CANCELLED
COMPLETED = Status.ORDER_STATUS_COMPLETED
DISABLED = Status.ORDER_STATUS_DISABLED
NOW_MS = 1_700_000_000_000
LEASE_MS = 30_000
OWNER_A = "host-a:1:aaaa"
OWNER_B = "host-b:2:bbbb"


class Store(OrderStore, EventStore, Protocol):
    """What every store kind is: orders and, over the same database, their events."""


@pytest.fixture
def events(store: OrderStore) -> Store:
    return cast(Store, store)


async def open_events(backend: StoreBackend) -> Store:
    """Another store on the same database, as another process would open it."""
    return cast(Store, await backend.open())


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def metadata(**members: str) -> json_pb2.JsonObject:
    update = json_pb2.JsonObject()
    for key, text in members.items():
        update.members.add(key=key).value.string_value = text
    return update


async def track(store: Store, account_id: str, *handles: str) -> list[order_pb2.Order]:
    """Open drop orders, on a device and with metadata, as the service tracks them."""
    request = route(*handles)
    request.device_id = "device-1"
    for order in request.orders:
        order.metadata.CopyFrom(metadata(tracked="yes"))
    decide = partial(decide_track, request, NOW_MS, "route-1", lambda: "https://trck.at/t")
    return await store.track_orders(account_id, list(dict.fromkeys(handles)), decide, deadline=soon())


async def change(
    store: Store,
    account_id: str,
    query: OrderQuery,
    rule: Rule = lifecycle.cancel,
    *,
    now_ms: int = NOW_MS + 1,
    update: json_pb2.JsonObject | None = None,
) -> order_pb2.Order:
    """Change the record `query` names by `rule`, as the service does (its event included)."""
    decide = partial(
        decide_change, rule, query, update or json_pb2.JsonObject(), now_ms, account_id=account_id
    )
    return await store.change_order(account_id, query.order_handle, decide, deadline=soon())


async def cancelled(store: Store, account_id: str, *handles: str, now_ms: int = NOW_MS + 1) -> None:
    """Track and cancel each handle in turn: one event each, in this order."""
    for handle in handles:
        await track(store, account_id, handle)
        await change(store, account_id, OrderQuery(handle), now_ms=now_ms)


async def all_events(store: Store, account_id: str | None = None) -> list[events_pb2.OrderEvent]:
    stored = await store.events_after(0, limit=10_000, account_id=account_id)
    return [events_pb2.OrderEvent.FromString(event.body) for event in stored]


def handles_of(bodies: Sequence[bytes]) -> list[str]:
    return [events_pb2.OrderEvent.FromString(body).data.order_handle for body in bodies]


async def replay(
    store: Store, account_id: str, handle: str, query: EventQuery | None = None
) -> list[tuple[int, str, int]]:
    """(value, handle-in-body, fulfillment attempt) of each replayed event, in the replay's order."""
    found = await store.order_events(account_id, handle, query or EventQuery(), deadline=soon())
    out = []
    for event in found:
        body = events_pb2.OrderEvent.FromString(event.body)
        out.append((body.data.value, body.data.order_handle, body.data.fulfillment_attempt))
    return out


async def subscribe(store: Store, *accounts: str) -> None:
    for account_id in accounts:
        await store.set_webhook(account_id, f"https://{account_id}.example/hook", f"whsec_{account_id}")


async def claim(
    store: Store,
    owner: str = OWNER_A,
    *,
    now_ms: int = NOW_MS,
    lease_ms: int = LEASE_MS,
    max_deliveries: int = 10,
    max_events: int = 100,
) -> list[ClaimedDelivery]:
    return await store.claim_deliveries(
        owner, now_ms=now_ms, lease_ms=lease_ms, max_deliveries=max_deliveries, max_events=max_events
    )


async def delivery_of(
    store: Store, account_id: str, handle: str
) -> tuple[DeliveryState, int | None, int, str | None]:
    """(state, http status, retry count, response text) of the handle's one event."""
    [event] = await store.order_events(account_id, handle, EventQuery(), deadline=soon())
    return event.state, event.http_status, event.retry_count, event.response_text


DELIVERED = DeliveryOutcome(DeliveryState.DELIVERED, 200, "ok")


# --- writing events with changes -----------------------------------------------------------------


async def test_a_change_writes_one_event_that_tells_what_was_committed(events: Store) -> None:
    assert await events.last_event_id() == 0
    assert await events.events_after(0, limit=10) == []
    await subscribe(events, ACME)  # its event waits to be delivered
    [tracked] = await track(events, ACME, "h")
    assert await events.last_event_id() == 0  # a track writes no event
    stored = await change(events, ACME, OrderQuery("h"), now_ms=NOW_MS + 5, update=metadata(reason="gone"))
    [written] = await events.events_after(0, limit=10)
    assert written.account_id == ACME
    assert await events.last_event_id() == written.event_id > 0
    event = events_pb2.OrderEvent.FromString(written.body)
    assert (event.account_id, event.type, event.version) == (ACME, "order", "3.0.0")
    assert event.recorded_at.ToMicroseconds() == (NOW_MS + 5) * 1_000
    assert event.device_id == stored.device_id == "device-1"
    assert (event.data.value, event.data.status) == (CANCELLED, CANCELLED)
    assert event.data.order_handle == "h"
    assert event.data.metadata == stored.metadata  # as stored after the change: both keys
    assert {m.key for m in event.data.metadata.members} == {"tracked", "reason"}
    assert (event.data.fulfillment_attempt, event.data.type, event.data.type_index) == (
        tracked.fulfillment_attempt,
        tracked.type,
        tracked.type_index,
    )
    [replayed] = await events.order_events(ACME, "h", EventQuery(), deadline=soon())
    assert replayed.event_id == written.event_id
    assert replayed.body == written.body
    assert (replayed.state, replayed.http_status, replayed.retry_count, replayed.response_text) == (
        DeliveryState.PENDING,
        None,
        0,
        None,
    )


async def test_a_repeat_or_a_refused_change_writes_no_event(events: Store) -> None:
    await cancelled(events, ACME, "h")
    last = await events.last_event_id()
    # Cancelling a cancelled order changes nothing: no second event.
    assert (await change(events, ACME, OrderQuery("h"))).status == CANCELLED
    # Completing it is refused: nothing written.
    with pytest.raises(FailedPrecondition):
        await change(events, ACME, OrderQuery("h"), lifecycle.complete)
    assert await events.last_event_id() == last
    assert len(await all_events(events)) == 1


async def test_a_decision_that_raises_or_writes_nothing_leaves_no_event(events: Store) -> None:
    await track(events, ACME, "h")

    def refuse(records: Sequence[StoredRecord]) -> Decision[None]:
        raise FailedPrecondition("REFUSED", "refused")

    with pytest.raises(FailedPrecondition):
        await events.change_order(ACME, "h", refuse, deadline=soon())
    event = EventWrite(
        0, CANCELLED, NOW_MS * 1_000, events_pb2.OrderEvent(account_id=ACME).SerializeToString()
    )

    def event_without_write(records: Sequence[StoredRecord]) -> Decision[str]:
        return Decision("no write", None, event)

    assert await events.change_order(ACME, "h", event_without_write, deadline=soon()) == "no write"
    assert await events.last_event_id() == 0


async def test_in_one_batch_only_the_changes_that_commit_leave_events(events: Store) -> None:
    """Concurrent changes share a transaction where the store groups them; those refused leave no
    event, and the others keep theirs."""
    handles = [f"h{i}" for i in range(12)]
    for handle in handles:
        await track(events, ACME, handle)
    await change(events, ACME, OrderQuery("h0"), lifecycle.complete)
    outcomes = await asyncio.gather(
        *(change(events, ACME, OrderQuery(h)) for h in handles),  # h0 is refused: completed
        *(change(events, ACME, OrderQuery("h0")) for _ in range(3)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, FailedPrecondition) for o in outcomes) == 4
    written = await all_events(events)
    assert sorted((e.data.order_handle, e.data.value) for e in written) == sorted(
        [("h0", COMPLETED)] + [(h, CANCELLED) for h in handles[1:]]
    )


async def test_event_ids_ascend_in_commit_order(events: Store, backend: StoreBackend) -> None:
    """A reader that follows the outbox while three stores write never sees an id below one it
    has read appear later: it ends up with every event, each once, in id order."""
    stores = [events, await open_events(backend), await open_events(backend)]
    handles = [f"h{i}" for i in range(60)]
    for handle in handles:
        await track(events, ACME, handle)
    followed: list[int] = []
    writing = True

    async def follow() -> None:
        for _ in range(10_000):  # far more reads than the writers need; a stuck cursor ends here
            finished = not writing  # then every change has committed: read to the end
            page = await stores[2].events_after(followed[-1] if followed else 0, limit=7)
            followed.extend(e.event_id for e in page)
            if finished and not page:
                return
            await asyncio.sleep(0)  # let the writers go on
        pytest.fail("the reader never reached the end of the outbox")

    reader = asyncio.create_task(follow())
    await asyncio.gather(*(change(stores[i % 3], ACME, OrderQuery(h)) for i, h in enumerate(handles)))
    writing = False
    await reader
    everything = await events.events_after(0, limit=1000)
    assert followed == [e.event_id for e in everything]
    assert followed == sorted(set(followed))
    assert sorted(handles_of([e.body for e in everything])) == sorted(handles)
    # One after another, each change's event comes after every event committed before it.
    before = await events.last_event_id()
    await cancelled(stores[1], ACME, "later-1")
    await cancelled(stores[0], ACME, "later-2")
    tail = await events.events_after(before, limit=10)
    assert handles_of([e.body for e in tail]) == ["later-1", "later-2"]
    assert before < tail[0].event_id < tail[1].event_id


async def test_events_after_by_account_and_page(events: Store) -> None:
    await cancelled(events, ACME, "a1")
    await cancelled(events, RIVAL, "r1")
    await cancelled(events, ACME, "a2", "a3")
    every = await events.events_after(0, limit=100)
    assert [e.account_id for e in every] == [ACME, RIVAL, ACME, ACME]
    assert handles_of([e.body for e in every]) == ["a1", "r1", "a2", "a3"]
    ours = await events.events_after(0, limit=100, account_id=ACME)
    assert handles_of([e.body for e in ours]) == ["a1", "a2", "a3"]
    assert all(e.account_id == ACME for e in ours)
    theirs = await events.events_after(0, limit=100, account_id=RIVAL)
    assert handles_of([e.body for e in theirs]) == ["r1"]
    # Pages: after an id, at most `limit`.
    assert await events.events_after(0, limit=2) == every[:2]
    assert await events.events_after(every[1].event_id, limit=100) == every[2:]
    assert await events.events_after(every[0].event_id, limit=1, account_id=ACME) == [ours[1]]
    assert await events.events_after(every[-1].event_id, limit=100) == []
    assert await events.events_after(0, limit=100, account_id="nobody") == []


# --- the replay ----------------------------------------------------------------------------------


async def _history(store: Store, account_id: str) -> None:
    """Events of handle "h" at three attempts: cancelled (attempt 0, at NOW+10), completed
    (attempt 1, at NOW+20), disabled (attempt 2, at NOW+30); and one of another handle."""
    await track(store, account_id, "h")
    await change(store, account_id, OrderQuery("h"), now_ms=NOW_MS + 10)
    await track(store, account_id, "h")
    await change(store, account_id, OrderQuery("h"), lifecycle.complete, now_ms=NOW_MS + 20)
    await track(store, account_id, "h")
    await change(store, account_id, OrderQuery("h"), lifecycle.disable, now_ms=NOW_MS + 30)
    await cancelled(store, account_id, "other", now_ms=NOW_MS + 15)


async def test_replay_filters(events: Store) -> None:
    await _history(events, RIVAL)  # the same handle in another account: never seen by ACME
    await _history(events, ACME)
    c, d, x = (CANCELLED, "h", 0), (COMPLETED, "h", 1), (DISABLED, "h", 2)
    assert await replay(events, ACME, "h") == [x, d, c]  # newest first by default
    assert await replay(events, ACME, "h", EventQuery(descending=False)) == [c, d, x]
    assert await replay(events, ACME, "h", EventQuery(values=(CANCELLED,))) == [c]
    assert await replay(events, ACME, "h", EventQuery(values=(CANCELLED, DISABLED))) == [x, c]
    assert await replay(events, ACME, "h", EventQuery(from_us=(NOW_MS + 20) * 1_000)) == [x, d]
    assert await replay(events, ACME, "h", EventQuery(to_us=(NOW_MS + 20) * 1_000)) == [c]  # before
    window = EventQuery(from_us=(NOW_MS + 11) * 1_000, to_us=(NOW_MS + 31) * 1_000)
    assert await replay(events, ACME, "h", window) == [x, d]
    assert await replay(events, ACME, "h", EventQuery(fulfillment_attempt=1)) == [d]
    assert await replay(events, ACME, "h", EventQuery(fulfillment_attempt=3)) == []
    assert await replay(events, ACME, "h", EventQuery(limit=2)) == [x, d]
    assert await replay(events, ACME, "other") == [(CANCELLED, "other", 0)]
    assert await replay(events, ACME, "nothing") == []
    assert await replay(events, "nobody", "h") == []
    combined = EventQuery(values=(COMPLETED, DISABLED), fulfillment_attempt=2, from_us=NOW_MS * 1_000)
    assert await replay(events, ACME, "h", combined) == [x]


async def test_replay_pages_both_ways_within_the_account(events: Store) -> None:
    await _history(events, ACME)
    await _history(events, RIVAL)  # written later: higher ids, interleaving nothing of ACME's
    for descending in (True, False):
        pages: list[list[int]] = []
        after: int | None = None
        for _ in range(5):  # two pages and the empty end; a cursor that goes nowhere stops here
            query = EventQuery(after_id=after, descending=descending, limit=2)
            page = await events.order_events(ACME, "h", query, deadline=soon())
            if not page:
                break
            pages.append([e.event_id for e in page])
            after = page[-1].event_id
        ids = [i for page in pages for i in page]
        every = [
            e.event_id
            for e in await events.order_events(ACME, "h", EventQuery(descending=descending), deadline=soon())
        ]
        assert [len(page) for page in pages] == [2, 1]
        assert ids == every == sorted(every, reverse=descending)
        theirs = await events.order_events(RIVAL, "h", EventQuery(), deadline=soon())
        assert not set(ids) & {e.event_id for e in theirs}
    # A cursor from another account's event pages nothing of that account into ours.
    [rival_newest, *_] = await events.order_events(RIVAL, "h", EventQuery(), deadline=soon())
    from_theirs = EventQuery(after_id=rival_newest.event_id, descending=True)
    assert {e.event_id for e in await events.order_events(ACME, "h", from_theirs, deadline=soon())} <= set(
        ids
    )


# --- listeners -----------------------------------------------------------------------------------


async def test_listeners_hear_of_commits_that_wrote_events(events: Store, backend: StoreBackend) -> None:
    other = await open_events(backend)
    await track(events, ACME, "h")
    seen: list[asyncio.Task[list[int]]] = []
    heard = asyncio.Event()

    async def read_elsewhere() -> list[int]:
        return [e.event_id for e in await other.events_after(0, limit=10)]

    def listener() -> None:
        # Called on the event loop (ensure_future needs it), after the commit: another
        # connection already sees the event.
        seen.append(asyncio.ensure_future(read_elsewhere()))
        heard.set()

    events.on_events_committed(listener)
    await change(events, ACME, OrderQuery("h"))
    await asyncio.wait_for(heard.wait(), 10)
    [written] = await events.events_after(0, limit=10)
    assert await seen[0] == [written.event_id]


async def test_deliveries_pending_is_heard_after_a_commit_with_an_event_to_deliver(
    events: Store,
) -> None:
    await subscribe(events, ACME)
    await track(events, ACME, "h")
    heard = asyncio.Event()
    events.on_deliveries_pending(heard.set)
    await change(events, ACME, OrderQuery("h"))
    await asyncio.wait_for(heard.wait(), 10)


# --- delivery ------------------------------------------------------------------------------------


async def test_claims_group_new_events_per_account_oldest_first(events: Store) -> None:
    await subscribe(events, ACME, RIVAL)
    await cancelled(events, ACME, "a1", "a2")
    await cancelled(events, RIVAL, "r1")
    await cancelled(events, ACME, "a3")
    await cancelled(events, RIVAL, "r2")
    every = {e.event_id: e for e in await events.events_after(0, limit=100)}
    claimed = await claim(events, max_events=2)
    assert [(d.account_id, handles_of(d.bodies)) for d in claimed] == [
        (ACME, ["a1", "a2"]),
        (RIVAL, ["r1", "r2"]),
        (ACME, ["a3"]),
    ]
    for delivery in claimed:
        assert (delivery.url, delivery.secret) == (
            f"https://{delivery.account_id}.example/hook",
            f"whsec_{delivery.account_id}",
        )
        assert delivery.attempts == 0
        assert len(delivery.delivery_id) == 32
        assert int(delivery.delivery_id, 16) >= 0
        assert list(delivery.event_ids) == sorted(delivery.event_ids)
        assert [every[i].body for i in delivery.event_ids] == list(delivery.bodies)
        assert all(every[i].account_id == delivery.account_id for i in delivery.event_ids)
    assert len({d.delivery_id for d in claimed}) == 3
    # Everything is leased now: another process gets nothing until a lease runs out.
    assert await claim(events, OWNER_B) == []
    assert await claim(events, OWNER_B, now_ms=NOW_MS + LEASE_MS - 1) == []


async def test_claims_respect_their_bounds(events: Store) -> None:
    await subscribe(events, ACME, RIVAL)
    await cancelled(events, ACME, "a1", "a2", "a3")
    await cancelled(events, RIVAL, "r1")
    [first] = await claim(events, max_deliveries=1, max_events=2)
    assert handles_of(first.bodies) == ["a1", "a2"]
    [second, third] = await claim(events, max_deliveries=5, max_events=2)
    assert [handles_of(d.bodies) for d in (second, third)] == [["a3"], ["r1"]]
    assert await claim(events, max_deliveries=5) == []


async def test_finish_records_the_outcome_and_only_the_owner_may(events: Store) -> None:
    await subscribe(events, ACME)
    await cancelled(events, ACME, "h")
    [delivery] = await claim(events)
    assert await events.finish_delivery(OWNER_B, delivery.delivery_id, DELIVERED) is False
    assert await events.finish_delivery(OWNER_A, "no-such-delivery", DELIVERED) is False
    assert await delivery_of(events, ACME, "h") == (DeliveryState.PENDING, None, 0, None)
    assert await events.finish_delivery(OWNER_A, delivery.delivery_id, DELIVERED) is True
    assert await delivery_of(events, ACME, "h") == (DeliveryState.DELIVERED, 200, 0, "ok")
    # Ended: nobody finishes it again, and it is never claimed again.
    assert await events.finish_delivery(OWNER_A, delivery.delivery_id, DELIVERED) is False
    assert await claim(events, now_ms=NOW_MS + 10 * LEASE_MS) == []
    assert (await events.outbox_stats()).pending == 0


async def test_a_retry_keeps_its_delivery_id_and_counts_attempts(events: Store) -> None:
    await subscribe(events, ACME)
    await cancelled(events, ACME, "h")
    [first] = await claim(events, OWNER_A)
    retry_at = NOW_MS + 20_000
    retry = DeliveryOutcome(DeliveryState.PENDING, 500, "boom", retry_at)
    assert await events.finish_delivery(OWNER_A, first.delivery_id, retry) is True
    assert await delivery_of(events, ACME, "h") == (DeliveryState.PENDING, 500, 0, "boom")
    assert await claim(events, OWNER_B, now_ms=retry_at - 1) == []
    [second] = await claim(events, OWNER_B, now_ms=retry_at)
    assert (second.delivery_id, second.event_ids, second.bodies) == (
        first.delivery_id,
        first.event_ids,
        first.bodies,
    )
    assert second.attempts == 1
    # No answer this time (a timeout): the last answer's status and text stay.
    unanswered = DeliveryOutcome(DeliveryState.PENDING, None, None, retry_at + 20_000)
    assert await events.finish_delivery(OWNER_B, second.delivery_id, unanswered) is True
    assert await delivery_of(events, ACME, "h") == (DeliveryState.PENDING, 500, 1, "boom")
    [third] = await claim(events, OWNER_A, now_ms=retry_at + 20_000)
    assert (third.delivery_id, third.attempts) == (first.delivery_id, 2)
    failed = DeliveryOutcome(DeliveryState.FAILED, 503, "unavailable")
    assert await events.finish_delivery(OWNER_A, third.delivery_id, failed) is True
    assert await delivery_of(events, ACME, "h") == (DeliveryState.FAILED, 503, 2, "unavailable")
    assert await claim(events, now_ms=retry_at + 10 * LEASE_MS) == []


async def test_a_rejected_delivery_ends(events: Store) -> None:
    await subscribe(events, ACME)
    await cancelled(events, ACME, "h")
    [delivery] = await claim(events)
    rejected = DeliveryOutcome(DeliveryState.REJECTED, 404, "no such hook")
    assert await events.finish_delivery(OWNER_A, delivery.delivery_id, rejected) is True
    assert await delivery_of(events, ACME, "h") == (DeliveryState.REJECTED, 404, 0, "no such hook")
    assert await claim(events, now_ms=NOW_MS + 10 * LEASE_MS) == []


async def test_a_lease_that_runs_out_is_taken_over_as_it_was(events: Store) -> None:
    await subscribe(events, ACME)
    await cancelled(events, ACME, "h1", "h2")
    [held] = await claim(events, OWNER_A)
    [taken] = await claim(events, OWNER_B, now_ms=NOW_MS + LEASE_MS)
    assert (taken.delivery_id, taken.attempts, taken.event_ids, taken.bodies) == (
        held.delivery_id,
        0,
        held.event_ids,
        held.bodies,
    )
    # The first owner's lease is gone: its outcome is not recorded, the new owner's is.
    assert await events.finish_delivery(OWNER_A, held.delivery_id, DELIVERED) is False
    assert await delivery_of(events, ACME, "h1") == (DeliveryState.PENDING, None, 0, None)
    rejected = DeliveryOutcome(DeliveryState.REJECTED, 410, "gone")
    assert await events.finish_delivery(OWNER_B, held.delivery_id, rejected) is True
    assert await delivery_of(events, ACME, "h2") == (DeliveryState.REJECTED, 410, 0, "gone")


async def test_released_deliveries_are_claimed_again_at_once(events: Store) -> None:
    await subscribe(events, ACME, RIVAL)
    await cancelled(events, ACME, "a1")
    await cancelled(events, RIVAL, "r1")
    held = await claim(events, OWNER_A)
    assert await events.release_deliveries(OWNER_B) == 0
    assert await events.release_deliveries(OWNER_A) == 2
    assert await events.release_deliveries(OWNER_A) == 0
    again = await claim(events, OWNER_B)
    assert sorted((d.event_ids, d.delivery_id, d.attempts) for d in again) == sorted(
        (d.event_ids, d.delivery_id, 0) for d in held
    )
    # Released without an attempt: nothing recorded.
    assert await delivery_of(events, ACME, "a1") == (DeliveryState.PENDING, None, 0, None)


async def test_due_retries_are_claimed_before_new_events(events: Store) -> None:
    await subscribe(events, ACME, RIVAL)
    await cancelled(events, ACME, "old-1")
    await cancelled(events, RIVAL, "old-2")
    old = await claim(events)
    for delivery in old:
        retry = DeliveryOutcome(DeliveryState.PENDING, 502, "bad gateway", NOW_MS + 1_000)
        assert await events.finish_delivery(OWNER_A, delivery.delivery_id, retry)
    await cancelled(events, ACME, "new")
    # Both retries are due: one claim takes no more than it may, each takes retries first.
    [first] = await claim(events, OWNER_B, now_ms=NOW_MS + 1_000, max_deliveries=1)
    [second] = await claim(events, OWNER_B, now_ms=NOW_MS + 1_000, max_deliveries=1)
    assert sorted((d.delivery_id, d.attempts) for d in (first, second)) == sorted(
        (d.delivery_id, 1) for d in old
    )
    [third] = await claim(events, OWNER_B, now_ms=NOW_MS + 1_000)
    assert (third.attempts, handles_of(third.bodies)) == (0, ["new"])


async def test_events_of_accounts_without_a_webhook_are_unsubscribed(events: Store) -> None:
    await subscribe(events, ACME)
    await cancelled(events, RIVAL, "r1")
    await cancelled(events, ACME, "a1")
    await cancelled(events, RIVAL, "r2")
    # Written so, before any claim: only ACME's event waits in the outbox.
    assert (await delivery_of(events, RIVAL, "r1"))[0] == DeliveryState.UNSUBSCRIBED
    assert (await events.outbox_stats()).pending == 1
    [delivery] = await claim(events)
    assert (delivery.account_id, handles_of(delivery.bodies)) == (ACME, ["a1"])
    for handle in ("r1", "r2"):
        assert await delivery_of(events, RIVAL, handle) == (DeliveryState.UNSUBSCRIBED, None, 0, None)
    # Subscribing afterwards does not bring them back.
    await subscribe(events, RIVAL)
    assert await claim(events, OWNER_B) == []
    # A delivery whose account unsubscribed before its retry is not sent again.
    retry = DeliveryOutcome(DeliveryState.PENDING, 500, "boom", NOW_MS + 1_000)
    assert await events.finish_delivery(OWNER_A, delivery.delivery_id, retry)
    assert await events.remove_webhook(ACME) is True
    assert await claim(events, now_ms=NOW_MS + 1_000) == []
    assert (await delivery_of(events, ACME, "a1"))[0] == DeliveryState.UNSUBSCRIBED
    assert await events.outbox_stats() == OutboxStats(0, None)


async def test_a_claim_sends_to_the_webhook_as_it_is_now(events: Store) -> None:
    await subscribe(events, ACME)
    await cancelled(events, ACME, "h")
    [first] = await claim(events)
    retry = DeliveryOutcome(DeliveryState.PENDING, 500, "boom", NOW_MS + 1_000)
    assert await events.finish_delivery(OWNER_A, first.delivery_id, retry)
    await events.set_webhook(ACME, "https://new.example/hook", "whsec_new")
    [second] = await claim(events, now_ms=NOW_MS + 1_000)
    assert (second.delivery_id, second.url, second.secret) == (
        first.delivery_id,
        "https://new.example/hook",
        "whsec_new",
    )


async def test_concurrent_claims_never_share_a_delivery(events: Store, backend: StoreBackend) -> None:
    await subscribe(events, ACME, RIVAL)
    for i in range(30):
        await cancelled(events, ACME if i % 3 else RIVAL, f"h{i}")
    stores = [events, await open_events(backend), await open_events(backend)]
    rounds = await asyncio.gather(
        *(claim(stores[i % 3], f"owner-{i}", max_deliveries=2, max_events=3) for i in range(12))
    )
    claimed = [d for found in rounds for d in found]
    event_ids = [i for d in claimed for i in d.event_ids]
    assert len({d.delivery_id for d in claimed}) == len(claimed)
    assert len(event_ids) == len(set(event_ids))
    assert sorted(event_ids) == [e.event_id for e in await events.events_after(0, limit=100)]


async def test_next_delivery_due_and_outbox_stats(events: Store) -> None:
    assert await events.next_delivery_due_ms() is None
    assert await events.outbox_stats() == OutboxStats(0, None)
    await subscribe(events, ACME)
    before = wall_ms()
    await cancelled(events, ACME, "h1", "h2")
    after = wall_ms()
    # A new event is due at once.
    due = await events.next_delivery_due_ms()
    assert due is not None
    assert due <= wall_ms()
    stats = await events.outbox_stats()
    assert stats.pending == 2
    assert stats.oldest_pending_ms is not None
    assert before <= stats.oldest_pending_ms <= after
    now = wall_ms()
    [delivery] = await claim(events, now_ms=now, lease_ms=LEASE_MS)
    # Leased: due when the lease runs out.
    assert await events.next_delivery_due_ms() == now + LEASE_MS
    assert (await events.outbox_stats()).pending == 2
    retry = DeliveryOutcome(DeliveryState.PENDING, 500, "boom", now + 5_000)
    assert await events.finish_delivery(OWNER_A, delivery.delivery_id, retry)
    assert await events.next_delivery_due_ms() == now + 5_000
    await cancelled(events, ACME, "h3")  # a new event: due before the retry
    due = await events.next_delivery_due_ms()
    assert due is not None
    assert due <= wall_ms()
    assert (await events.outbox_stats()).pending == 3
    retried, new = await claim(events, now_ms=now + 5_000)
    assert (retried.delivery_id, handles_of(new.bodies)) == (delivery.delivery_id, ["h3"])
    for claimed in (retried, new):
        assert await events.finish_delivery(OWNER_A, claimed.delivery_id, DELIVERED)
    assert await events.next_delivery_due_ms() is None
    assert await events.outbox_stats() == OutboxStats(0, None)


# --- subscriptions -------------------------------------------------------------------------------


async def test_webhooks_set_replace_show_remove(events: Store) -> None:
    assert await events.webhook(ACME) is None
    before = wall_ms()
    await events.set_webhook(ACME, "https://acme.example/hook", "whsec_one")
    after = wall_ms()
    hook = await events.webhook(ACME)
    assert hook is not None
    assert hook[:3] == (ACME, "https://acme.example/hook", "whsec_one")
    assert before <= hook.created_at_ms <= after
    await events.set_webhook(ACME, "http://acme.example:8080/other", "whsec_two")
    replaced = await events.webhook(ACME)
    assert replaced is not None
    assert replaced[:3] == (ACME, "http://acme.example:8080/other", "whsec_two")
    assert await events.webhook(RIVAL) is None  # one account's subscription is its own
    assert await events.remove_webhook(ACME) is True
    assert await events.webhook(ACME) is None
    assert await events.remove_webhook(ACME) is False
    assert await events.remove_webhook("nobody") is False


async def test_a_webhook_needs_an_existing_account(events: Store) -> None:
    with pytest.raises(NotFound) as unknown:
        await events.set_webhook("nobody", "https://x.example/hook", "whsec_x")
    assert unknown.value.reason == "ACCOUNT_NOT_FOUND"
    assert await events.webhook("nobody") is None


async def test_events_and_webhooks_survive_a_reopen(events: Store, backend: StoreBackend) -> None:
    await subscribe(events, ACME)
    await cancelled(events, ACME, "h")
    [delivery] = await claim(events)
    written = await events.events_after(0, limit=10)
    hook = await events.webhook(ACME)
    reopened = cast(Store, await backend.reopen(events))
    assert await reopened.events_after(0, limit=10) == written
    assert await reopened.webhook(ACME) == hook
    [taken] = await claim(reopened, OWNER_B, now_ms=NOW_MS + LEASE_MS)
    assert taken.delivery_id == delivery.delivery_id


# --- SQLite only: the outbox's queries use its indexes, and wake-ups it can spare ----------------


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_sqlite_wakes_no_delivery_for_an_account_without_a_webhook(events: Store) -> None:
    """The delivery worker is not woken by a commit that has nothing for it to send."""
    await track(events, RIVAL, "r")
    await track(events, ACME, "a")
    woken: list[str] = []
    committed = asyncio.Event()
    events.on_deliveries_pending(lambda: woken.append("delivery"))
    events.on_events_committed(committed.set)
    await change(events, RIVAL, OrderQuery("r"))
    # The listeners of one commit are called in one round of the loop, before this task resumes.
    await asyncio.wait_for(committed.wait(), 10)
    assert woken == []
    await subscribe(events, ACME)
    committed.clear()
    await change(events, ACME, OrderQuery("a"))
    await asyncio.wait_for(committed.wait(), 10)
    assert woken == ["delivery"]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_sqlite_outbox_queries_use_their_indexes(backend: StoreBackend, events: Store) -> None:
    """A full scan of the outbox would grow with every event ever written."""
    statements = [
        sqlite_events.INSERT_EVENT,
        sqlite_events._ACCOUNT_EVENTS_AFTER,
        sqlite_events._DUE_DELIVERIES,
        sqlite_events._DELIVERY_EVENTS,
        sqlite_events._NEW_EVENTS,
        sqlite_events._FINISH_ANSWERED,
        sqlite_events._FIRST_NEW,
        sqlite_events._FIRST_DUE,
        sqlite_events._PENDING_COUNT,
        sqlite_events._replay_sql(2, since=True, before=True, attempt=True, after=True, descending=True),
        sqlite_events._replay_sql(0, since=False, before=False, attempt=False, after=False, descending=False),
    ]
    with sqlite3.connect(backend.location) as db:
        for sql in statements:
            marks = sql.count("?")
            plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", (0,) * marks))
            assert "SCAN order_events" not in plan or "USING INDEX" in plan, (sql, plan)
            if not sql.startswith("INSERT"):
                assert "order_events_" in plan or "PRIMARY KEY" in plan, (sql, plan)
