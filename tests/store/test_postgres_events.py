"""The PostgreSQL outbox where one process cannot show it: what the shared suite
(test_event_store_contract.py) leaves out because it needs several pools, several processes'
worth of stores, or the server itself.

- Claims by two stores at once: no delivery to both, every event claimed once.
- A lease that runs out is taken over, with the same delivery id and attempts.
- Event ids in commit order under concurrent writers on two pools, and the outbox lock that makes
  it so (a second event waits for the first one's COMMIT; a change without an event does not).
- Notifications between stores, the listening connection's reconnection after the server ended
  it, and its end at `close()`.
- Group commit: concurrent changes share a transaction, each decision on its own; an order held
  by another transaction holds up no other change; and the round trips a change costs, counted
  on the wire.

Every test has a database of its own (`postgres_database`); a store opened here stands for a
gateway process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial

import asyncpg
import pytest

from gateway.calls.orders import decide_change
from gateway.domain import lifecycle
from gateway.domain.errors import FailedPrecondition, NotFound, Unavailable
from gateway.domain.targets import OrderQuery
from gateway.protos import events_pb2, json_pb2, order_pb2
from gateway.store import postgres_events
from gateway.store.base import Decision, StoredRecord
from gateway.store.events import ClaimedDelivery, DeliveryOutcome, DeliveryState, EventQuery, OutboxStats
from gateway.store.postgres import PostgresStore
from tests.store.test_store_contract import NOW_MS, change, soon, track

pytestmark = pytest.mark.postgres

ACME = "acme"
RIVAL = "rival"
QUIET = "quiet"
"""An account without a webhook."""
LEASE_MS = 30_000
WAIT_S = 20.0
"""How long a test waits for something that must happen before it fails instead of hanging."""
LISTEN_APPLICATION = "hypertrack-gateway listen"
WRITERS = 8
ROUND = 40

Status = order_pb2.OrderStatus
OpenStore = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def open_store(postgres_database: str) -> AsyncIterator[OpenStore]:
    """Opens stores on the test's database (or on `dsn`), as gateway processes would; each is closed
    at the end. The first one creates the accounts ACME, RIVAL and QUIET."""
    opened: list[PostgresStore] = []

    async def opener(dsn: str = postgres_database, **options: int) -> PostgresStore:
        store = await PostgresStore.open(dsn, **options)
        if not opened:
            for account_id in (ACME, RIVAL, QUIET):
                await store.create_account(account_id, b"hash")
        opened.append(store)
        return store

    try:
        yield opener
    finally:
        for store in reversed(opened):
            await store.close()


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def cancel(store: PostgresStore, account_id: str, handle: str) -> order_pb2.Order:
    return await change(store, account_id, OrderQuery(handle), lifecycle.cancel)


async def tracked(store: PostgresStore, account_id: str, handles: Sequence[str]) -> None:
    """Open orders for `handles`, a route of at most 50 at a time."""
    for start in range(0, len(handles), 50):
        await track(store, account_id, *handles[start : start + 50])


def handle_of(body: bytes) -> str:
    return events_pb2.OrderEvent.FromString(body).data.order_handle


async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll the database until `condition` holds: the server's own state (its locks, its backends)
    has no event to await."""
    async with asyncio.timeout(WAIT_S):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- claims by several processes -------------------------------------------------------------------


async def test_two_stores_claiming_at_once_share_every_event_once(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    for account_id in (ACME, RIVAL):
        await first.set_webhook(account_id, f"https://{account_id}.example/hook", f"whsec_{account_id}")
    handles = {account_id: [f"{account_id}-{i}" for i in range(40)] for account_id in (ACME, RIVAL, QUIET)}
    for account_id, names in handles.items():
        await tracked(first, account_id, names)
    # Cancelled through both stores at once, the accounts' events interleaved.
    await asyncio.gather(
        *(
            cancel((first, second)[i % 2], account_id, name)
            for i, (account_id, name) in enumerate(
                (account_id, name)
                for position in range(40)
                for account_id, names in handles.items()
                for name in names[position : position + 1]
            )
        )
    )

    async def drain(store: PostgresStore, owner: str) -> list[ClaimedDelivery]:
        """Claim and deliver until a claim finds nothing."""
        got: list[ClaimedDelivery] = []
        while found := await store.claim_deliveries(
            owner, now_ms=NOW_MS, lease_ms=LEASE_MS, max_deliveries=3, max_events=4
        ):
            got += found
            for delivery in found:
                delivered = DeliveryOutcome(DeliveryState.DELIVERED, 200, "ok")
                assert await store.finish_delivery(owner, delivery.delivery_id, delivered)
        return got

    rounds = await asyncio.gather(
        *(drain(store, f"owner-{i}") for i, store in enumerate([first, second] * 3))
    )
    claimed = [delivery for found in rounds for delivery in found]
    assert len({delivery.delivery_id for delivery in claimed}) == len(claimed)
    event_ids = [event_id for delivery in claimed for event_id in delivery.event_ids]
    assert len(event_ids) == len(set(event_ids))
    stored = await first.events_after(0, limit=1000)
    subscribed = [event for event in stored if event.account_id != QUIET]
    assert sorted(event_ids) == [event.event_id for event in subscribed]
    for delivery in claimed:
        assert 1 <= len(delivery.event_ids) <= 4
        assert list(delivery.event_ids) == sorted(delivery.event_ids)
        assert delivery.url == f"https://{delivery.account_id}.example/hook"
        assert {handle_of(body).split("-")[0] for body in delivery.bodies} == {delivery.account_id}
    for name in handles[QUIET]:
        [replayed] = await first.order_events(QUIET, name, EventQuery(), deadline=soon())
        assert replayed.state == DeliveryState.UNSUBSCRIBED
    assert await first.outbox_stats() == OutboxStats(0, None)


async def test_a_lease_that_ran_out_is_taken_over_by_another_store(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    await first.set_webhook(ACME, "https://acme.example/hook", "whsec_acme")
    await tracked(first, ACME, ["h1", "h2"])
    for handle in ("h1", "h2"):
        await cancel(first, ACME, handle)
    [held] = await first.claim_deliveries("a", now_ms=NOW_MS, lease_ms=1_000, max_deliveries=5, max_events=5)
    # Within the lease nobody else gets it.
    assert (
        await second.claim_deliveries(
            "b", now_ms=NOW_MS + 999, lease_ms=1_000, max_deliveries=5, max_events=5
        )
        == []
    )
    assert await second.next_delivery_due_ms() == NOW_MS + 1_000
    # Once it ran out (the first process died, say), the second takes it over as it was.
    [taken] = await second.claim_deliveries(
        "b", now_ms=NOW_MS + 1_000, lease_ms=1_000, max_deliveries=5, max_events=5
    )
    assert (taken.delivery_id, taken.attempts, taken.event_ids, taken.bodies) == (
        held.delivery_id,
        0,
        held.event_ids,
        held.bodies,
    )
    # The first process's late answer is refused; nothing it says is written.
    late = DeliveryOutcome(DeliveryState.DELIVERED, 200, "ok")
    assert await first.finish_delivery("a", held.delivery_id, late) is False
    assert await first.release_deliveries("a") == 0
    retry = DeliveryOutcome(DeliveryState.PENDING, 503, "busy", NOW_MS + 5_000)
    assert await second.finish_delivery("b", taken.delivery_id, retry) is True
    [again] = await first.claim_deliveries(
        "a", now_ms=NOW_MS + 5_000, lease_ms=1_000, max_deliveries=5, max_events=5
    )
    assert (again.delivery_id, again.attempts) == (held.delivery_id, 1)


# --- ids in commit order ---------------------------------------------------------------------------


async def test_event_ids_follow_commit_order_under_writers_on_several_pools(open_store: OpenStore) -> None:
    # Each store a process of its own, with its pool: waves of cancels through all of them at once,
    # a transaction or two of each store in flight, their COMMITs racing. (Without the outbox lock
    # the watcher misses events here on nearly every run.)
    writers = [await open_store() for _ in range(WRITERS)]
    reader = await open_store(min_size=1, max_size=1)
    handles = [f"h{i}" for i in range(400)]
    await tracked(writers[0], ACME, handles)
    seen: list[int] = []
    writing = True

    async def follow() -> None:
        """A watcher: reads past its cursor, over and over, while the writers write."""
        cursor = 0
        while True:
            last_round = not writing  # a read that starts after the last commit sees all of them
            found = await reader.events_after(cursor, limit=1000)
            if found:
                seen.extend(event.event_id for event in found)
                cursor = found[-1].event_id
            elif last_round:
                return

    async def write() -> None:
        nonlocal writing
        try:
            for start in range(0, len(handles), ROUND):
                wave = handles[start : start + ROUND]
                await asyncio.gather(*(cancel(writers[i % WRITERS], ACME, h) for i, h in enumerate(wave)))
        finally:
            writing = False

    await asyncio.gather(follow(), write())
    everything = [event.event_id for event in await reader.events_after(0, limit=1000)]
    assert len(everything) == len(handles)
    # An event committed after the watcher passed its id would be missing here.
    assert seen == everything


async def test_an_event_waits_for_the_outbox_lock_from_insert_to_commit(
    open_store: OpenStore, postgres_database: str
) -> None:
    store = await open_store()
    await tracked(store, ACME, ["first", "second", "done"])
    await cancel(store, ACME, "done")
    [done] = await store.events_after(0, limit=10)
    async with connected(postgres_database) as other:
        [row_id] = [r[0] for r in await other.fetch("SELECT id FROM orders WHERE order_handle = 'first'")]
        transaction = other.transaction()
        await transaction.start()
        # Another process's change, its event inserted (its id drawn) but not yet committed.
        await other.execute(
            postgres_events.WRITE_WITH_EVENTS,
            [row_id],
            [int(Status.ORDER_STATUS_CANCELLED)],
            [b"body"],
            NOW_MS,
            "another process",
            [ACME],
            ["first"],
            [0],
            [int(Status.ORDER_STATUS_CANCELLED)],
            [NOW_MS * 1000],
            [events_pb2.OrderEvent(data=events_pb2.OrderEventData(order_handle="first")).SerializeToString()],
        )
        # A change without an event does not take the lock: cancelling a cancelled order answers.
        assert (await cancel(store, ACME, "done")).status == Status.ORDER_STATUS_CANCELLED
        # A change with an event waits for it, with its order row locked and decided already.
        second = asyncio.ensure_future(cancel(store, ACME, "second"))

        async def waiting_for_the_outbox() -> bool:
            # A one-number advisory key shows as its high half (classid) and low half (objid).
            return bool(
                await other.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND ((classid::int8 << 32) | objid::int8) = $1",
                    postgres_events.OUTBOX_LOCK_KEY,
                )
            )

        await wait_until(waiting_for_the_outbox)
        assert not second.done()
        # The first event is not committed, the second not even inserted: a watcher sees neither.
        assert [e.event_id for e in await store.events_after(0, limit=10)] == [done.event_id]
        await transaction.commit()
    await second
    events = await store.events_after(0, limit=10)
    assert [handle_of(e.body) for e in events] == ["done", "first", "second"]
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)


# --- notifications ---------------------------------------------------------------------------------


class Woken:
    """A listener that counts its calls and lets a test await the next one."""

    def __init__(self) -> None:
        self.calls = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self._event.set()

    async def next(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self._event.wait()
        self._event.clear()


async def listening_backends(dsn: str, database: str) -> list[int]:
    async with connected(dsn) as admin:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
            " AND query ILIKE 'LISTEN%'",
            database,
            LISTEN_APPLICATION,
        )
    return [row[0] for row in rows]


def database_of(dsn: str) -> str:
    return urllib.parse.urlsplit(dsn).path.lstrip("/")


async def test_another_store_hears_of_each_commit_that_wrote_events(
    open_store: OpenStore, postgres_database: str
) -> None:
    writer, watcher = await open_store(), await open_store()
    await tracked(writer, ACME, ["h1", "h2"])
    woken = Woken()
    watcher.on_events_committed(woken)
    database = database_of(postgres_database)

    async def one_listening() -> bool:
        return len(await listening_backends(postgres_database, database)) == 1

    await wait_until(one_listening)
    await cancel(writer, ACME, "h1")
    await woken.next()
    assert [handle_of(e.body) for e in await watcher.events_after(0, limit=10)] == ["h1"]
    await cancel(writer, ACME, "h2")
    await woken.next()
    assert [handle_of(e.body) for e in await watcher.events_after(0, limit=10)] == ["h1", "h2"]


async def test_the_listening_connection_comes_back_after_the_server_ended_it(
    open_store: OpenStore, postgres_database: str
) -> None:
    writer, watcher = await open_store(), await open_store()
    await tracked(writer, ACME, ["h"])
    woken = Woken()
    watcher.on_events_committed(woken)
    database = database_of(postgres_database)
    pids: list[int] = []

    async def listening() -> bool:
        pids[:] = await listening_backends(postgres_database, database)
        return len(pids) == 1

    await wait_until(listening)
    [ended] = pids
    async with connected(postgres_database) as admin:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", ended)
    # Reconnected, it wakes the listeners once: what was committed meanwhile is read now.
    await woken.next()
    await wait_until(listening)
    assert pids != [ended]
    await cancel(writer, ACME, "h")
    await woken.next()
    assert [handle_of(e.body) for e in await watcher.events_after(0, limit=10)] == ["h"]
    await watcher.close()

    async def none_listening() -> bool:
        return not await listening_backends(postgres_database, database)

    await wait_until(none_listening)


# --- group commit ----------------------------------------------------------------------------------


async def test_concurrent_changes_share_a_transaction_each_deciding_on_its_own(open_store: OpenStore) -> None:
    store = await open_store()
    await tracked(store, ACME, [f"h{i}" for i in range(10)] + ["twice"])

    def refuse(records: Sequence[StoredRecord]) -> Decision[str]:
        raise FailedPrecondition("REFUSED", "refused")

    calls: list[Awaitable[object]] = [cancel(store, ACME, f"h{i}") for i in range(10)]
    calls += [cancel(store, ACME, "twice") for _ in range(5)]
    calls += [cancel(store, ACME, "unknown")]
    calls += [store.change_order(ACME, "h0", refuse, deadline=soon())]
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert all(
        isinstance(a, order_pb2.Order) and a.status == Status.ORDER_STATUS_CANCELLED for a in answers[:15]
    )
    assert isinstance(answers[15], NotFound)
    assert isinstance(answers[16], FailedPrecondition)
    events = await store.events_after(0, limit=100)
    # One event per order changed: the repeated cancels of one order in one batch made one.
    assert sorted(handle_of(e.body) for e in events) == sorted([f"h{i}" for i in range(10)] + ["twice"])


async def test_racing_cancels_in_and_across_stores_make_one_event_per_order(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(3)]
    handles = [f"h{i}" for i in range(60)]
    await tracked(stores[0], ACME, handles)
    # Each order cancelled twice by each store at once: repeats within a batch, and batches of
    # several processes holding one another's orders (changed alone, after their batch).
    answers = await asyncio.gather(
        *(cancel(store, ACME, handle) for handle in handles for store in stores for _ in range(2))
    )
    assert {order.status for order in answers} == {Status.ORDER_STATUS_CANCELLED}
    events = await stores[0].events_after(0, limit=1000)
    assert sorted(handle_of(event.body) for event in events) == sorted(handles)


async def test_an_order_held_elsewhere_holds_up_no_other_change(
    open_store: OpenStore, postgres_database: str
) -> None:
    store = await open_store()
    await tracked(store, ACME, ["held", "free-1", "free-2"])
    async with connected(postgres_database) as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM orders WHERE order_handle = 'held' FOR UPDATE")
        decide = partial(
            decide_change,
            lifecycle.cancel,
            OrderQuery("held"),
            json_pb2.JsonObject(),
            NOW_MS,
            account_id=ACME,
        )
        # Submitted together, the three go in one batch.
        stuck = asyncio.ensure_future(
            store.change_order(ACME, "held", decide, deadline=time.monotonic() + 2.0)
        )
        free = await asyncio.gather(
            asyncio.ensure_future(cancel(store, ACME, "free-1")),
            asyncio.ensure_future(cancel(store, ACME, "free-2")),
        )
        # Answered while the other order is still held.
        assert [order.status for order in free] == [Status.ORDER_STATUS_CANCELLED] * 2
        assert not stuck.done()
        with pytest.raises(Unavailable) as busy:
            await stuck
        assert busy.value.reason == "STORE_BUSY"
    assert (await cancel(store, ACME, "held")).status == Status.ORDER_STATUS_CANCELLED


class RoundTrips:
    """A TCP proxy in front of the server that counts round trips: each ends with exactly one
    ReadyForQuery message from the server (a simple query, or an extended-protocol Sync)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.count = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._target)
        pumps = [
            asyncio.ensure_future(self._pump(client_reader, server_writer, count=False)),
            asyncio.ensure_future(self._pump(server_reader, client_writer, count=True)),
        ]
        self._pumps.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_writer, server_writer):
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool) -> None:
        pending = b""
        while data := await reader.read(65536):
            writer.write(data)
            if count:
                # Server messages: a type byte, then a length that counts itself.
                pending += data
                while len(pending) >= 5:
                    length = int.from_bytes(pending[1:5], "big")
                    if len(pending) < 1 + length:
                        break
                    self.count += pending[0] == ord("Z")
                    pending = pending[1 + length :]
            await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in self._pumps:
            pump.cancel()


async def test_a_change_costs_four_round_trips_and_concurrent_changes_share_them(
    open_store: OpenStore, postgres_database: str
) -> None:
    parts = urllib.parse.urlsplit(postgres_database)
    proxy = RoundTrips(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    try:
        await open_store()  # the accounts
        proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}", query="sslmode=disable")
        store = await open_store(urllib.parse.urlunsplit(proxied), min_size=1, max_size=1)
        handles = [f"h{i}" for i in range(42)]
        await tracked(store, ACME, handles)
        # The first use of each statement on the connection prepares it: not counted.
        await cancel(store, ACME, "h40")
        await asyncio.gather(cancel(store, ACME, "h41"), cancel(store, ACME, "h40"))

        before = proxy.count
        await cancel(store, ACME, "h0")
        alone = proxy.count - before
        # BEGIN, the records locked, the record and its event written, COMMIT.
        assert alone == 4

        before = proxy.count
        await asyncio.gather(*(cancel(store, ACME, handle) for handle in handles[1:21]))
        together = proxy.count - before
        assert together == 4
        assert len(await store.events_after(0, limit=100)) == 23
    finally:
        await proxy.close()
