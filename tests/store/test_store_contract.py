"""The store contract (gateway.store.base.OrderStore), run unchanged against every store kind.

The store knows no order rules: it hands the records of a handle to a decision and writes what
the decision asks for. Most tests drive it with the service's own decisions (gateway.calls.orders),
a few with plain ones, to pin down what the store itself promises.

Each test gets an empty database of its own (see conftest.py). The last section holds
the few PostgreSQL-only checks: how server trouble turns into `Unavailable`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import socket
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial

import asyncpg
import pytest

from gateway.calls.orders import Rule, decide_change, decide_track
from gateway.domain import lifecycle
from gateway.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from gateway.domain.targets import OrderQuery, resolve_target
from gateway.protos import json_pb2, order_pb2, orders_service_pb2
from gateway.store.base import (
    Decision,
    HandleRow,
    Insertion,
    OrderStore,
    RecordWrite,
    StoredRecord,
)
from gateway.store.postgres import PostgresStore
from tests.store.conftest import ACME, RIVAL, StoreBackend, open_store

Status = order_pb2.OrderStatus
PICK = order_pb2.ORDER_TYPE_PICK
DROP = order_pb2.ORDER_TYPE_DROP
NOW_MS = 1_700_000_000_000


def soon(seconds: float = 20.0) -> float:
    """A deadline far enough for a busy CI machine, near enough to end a hung test."""
    return time.monotonic() + seconds


def route(*legs: str | tuple[str, int]) -> orders_service_pb2.TrackOrdersRequest:
    """A Track Orders request: a handle is a drop leg; (handle, type) names the leg's type."""
    request = orders_service_pb2.TrackOrdersRequest(
        worker_handle="worker-1", track_mode=order_pb2.TRACK_MODE_ON_TIME
    )
    for leg in legs:
        handle, order_type = (leg, DROP) if isinstance(leg, str) else leg
        request.orders.add(
            order_handle=handle,
            type=order_type,
            destination=order_pb2.Destination(geometry=order_pb2.Point(longitude=-122.4, latitude=37.8)),
        )
    return request


async def track(store: OrderStore, account_id: str, *legs: str | tuple[str, int]) -> list[order_pb2.Order]:
    """Track the legs as the service does: its decision builds them from what the store holds."""
    request = route(*legs)
    decide = partial(decide_track, request, NOW_MS, "route-1", lambda: "https://trck.at/t")
    handles = list(dict.fromkeys(o.order_handle for o in request.orders))
    return await store.track_orders(account_id, handles, decide, deadline=soon())


async def change(
    store: OrderStore, account_id: str, query: OrderQuery, rule: Rule, *, now_ms: int = NOW_MS + 1
) -> order_pb2.Order:
    """Change the record `query` names by `rule`, as the service does."""
    decide = partial(decide_change, rule, query, json_pb2.JsonObject(), now_ms, account_id=account_id)
    return await store.change_order(account_id, query.order_handle, decide, deadline=soon())


async def cancel(store: OrderStore, account_id: str, query: OrderQuery) -> order_pb2.Order:
    return await change(store, account_id, query, lifecycle.cancel)


async def get(store: OrderStore, account_id: str, query: OrderQuery) -> order_pb2.Order:
    records = await store.read_records(account_id, query.order_handle, deadline=soon())
    return order_pb2.Order.FromString(resolve_target(query, records).body)


def events(order: order_pb2.Order, kind: str) -> int:
    return sum(1 for event in order.timeline if event.WhichOneof("event") == kind)


def adding(key: str) -> Rule:
    """A rule that always changes the order: adds one metadata key, so a lost update shows as a
    missing key."""

    def add_key(order: order_pb2.Order, update: json_pb2.JsonObject, now_ms: int) -> bool:
        member = order.metadata.members.add(key=key)
        member.value.bool_value = True
        return True

    return add_key


def keys(order: order_pb2.Order) -> set[str]:
    return {member.key for member in order.metadata.members}


# --- reading and changing one record -------------------------------------------------------------


async def test_unknown_handle_has_no_records(store: OrderStore) -> None:
    assert await store.read_records(ACME, "nobody", deadline=soon()) == []
    shown: list[Sequence[StoredRecord]] = []

    def decide(records: Sequence[StoredRecord]) -> Decision[str]:
        shown.append(records)
        return Decision("nothing to do")

    assert await store.change_order(ACME, "nobody", decide, deadline=soon()) == "nothing to do"
    assert shown == [[]]
    with pytest.raises(NotFound):
        await get(store, ACME, OrderQuery("nobody"))
    with pytest.raises(NotFound):
        await cancel(store, ACME, OrderQuery("nobody"))


async def test_decision_sees_every_record_of_its_handle_and_writes_the_one_it_names(
    store: OrderStore, backend: StoreBackend
) -> None:
    pick, drop = await track(store, ACME, ("legs", PICK), ("legs", DROP))
    await track(store, ACME, "other")
    await track(store, RIVAL, "legs")
    read = await store.read_records(ACME, "legs", deadline=soon())
    assert sorted((r.type, r.type_index, r.fulfillment_attempt, r.status) for r in read) == [
        (PICK, 0, 0, Status.ORDER_STATUS_ONGOING),
        (DROP, 0, 0, Status.ORDER_STATUS_ONGOING),
    ]
    assert sorted(order_pb2.Order.FromString(r.body).type for r in read) == [PICK, DROP]
    shown: list[Sequence[StoredRecord]] = []
    written = drop.__deepcopy__()
    written.status = Status.ORDER_STATUS_DISABLED

    def decide(records: Sequence[StoredRecord]) -> Decision[int]:
        shown.append(list(records))
        [target] = [r for r in records if r.type == DROP]
        return Decision(
            target.row_id, RecordWrite(target.row_id, written.status, written.SerializeToString())
        )

    row_id = await store.change_order(ACME, "legs", decide, deadline=soon())
    assert sorted(shown[0]) == sorted(read)
    assert [r.row_id for r in read if r.type == DROP] == [row_id]
    assert await get(store, ACME, OrderQuery("legs", DROP)) == written
    assert await get(store, ACME, OrderQuery("legs", PICK)) == pick
    assert (await get(store, RIVAL, OrderQuery("legs"))).status == Status.ORDER_STATUS_ONGOING


async def test_tracked_orders_read_back_exactly(store: OrderStore) -> None:
    handle = "a/b ünïcödé 🚚 'quoted' %2F"
    [created] = await track(store, ACME, handle)
    assert (created.fulfillment_attempt, created.status) == (0, Status.ORDER_STATUS_ONGOING)
    assert await get(store, ACME, OrderQuery(handle)) == created
    assert await get(store, ACME, OrderQuery(handle, DROP, 0, 0)) == created
    with pytest.raises(NotFound):
        await get(store, ACME, OrderQuery(handle, PICK))
    with pytest.raises(NotFound):
        await get(store, ACME, OrderQuery(handle, fulfillment_attempt=1))


async def test_legs_of_a_handle_must_be_chosen(store: OrderStore) -> None:
    pick, drop, second_drop = await track(store, ACME, ("legs", PICK), ("legs", DROP), ("legs", DROP))
    assert [(o.type, o.type_index) for o in (pick, drop, second_drop)] == [(PICK, 0), (DROP, 0), (DROP, 1)]
    with pytest.raises(InvalidArgument) as ambiguous:
        await get(store, ACME, OrderQuery("legs"))
    assert ambiguous.value.reason == "AMBIGUOUS_ORDER"
    with pytest.raises(InvalidArgument):
        await cancel(store, ACME, OrderQuery("legs", DROP))
    assert await get(store, ACME, OrderQuery("legs", PICK)) == pick
    assert await get(store, ACME, OrderQuery("legs", DROP, 1)) == second_drop
    cancelled = await cancel(store, ACME, OrderQuery("legs", DROP, 1))
    assert cancelled.status == Status.ORDER_STATUS_CANCELLED
    assert (await get(store, ACME, OrderQuery("legs", DROP, 0))).status == Status.ORDER_STATUS_ONGOING


async def test_change_writes_one_atomic_change(store: OrderStore, backend: StoreBackend) -> None:
    await track(store, ACME, "h")
    before = await backend.raw_rows(ACME, "h")
    cancelled = await cancel(store, ACME, OrderQuery("h"))
    assert cancelled.status == Status.ORDER_STATUS_CANCELLED
    assert cancelled.cancelled_at.ToMilliseconds() == NOW_MS + 1
    assert events(cancelled, "order_cancelled") == 1
    assert await get(store, ACME, OrderQuery("h")) == cancelled
    [(attempt, status, updated_ms, body)] = await backend.raw_rows(ACME, "h")
    assert (attempt, status, body) == (0, Status.ORDER_STATUS_CANCELLED, cancelled.SerializeToString())
    assert updated_ms >= before[0][2]
    # Retried: the same order, nothing written, no second event; completing it is refused.
    after = await backend.raw_rows(ACME, "h")
    await asyncio.sleep(0.003)  # a write now would show in updated_at_ms
    assert await cancel(store, ACME, OrderQuery("h")) == cancelled
    assert await backend.raw_rows(ACME, "h") == after
    with pytest.raises(FailedPrecondition):
        await change(store, ACME, OrderQuery("h"), lifecycle.complete)
    assert await get(store, ACME, OrderQuery("h")) == cancelled


async def test_decision_without_a_write_writes_nothing(store: OrderStore, backend: StoreBackend) -> None:
    [created] = await track(store, ACME, "h")
    before = await backend.raw_rows(ACME, "h")
    await asyncio.sleep(0.003)  # a write now would show in updated_at_ms

    def decide(records: Sequence[StoredRecord]) -> Decision[str]:
        assert len(records) == 1
        return Decision("the answer")

    assert await store.change_order(ACME, "h", decide, deadline=soon()) == "the answer"
    assert await backend.raw_rows(ACME, "h") == before
    assert await get(store, ACME, OrderQuery("h")) == created


async def test_decision_that_raises_leaves_everything_untouched(
    store: OrderStore, backend: StoreBackend
) -> None:
    [created] = await track(store, ACME, "h")
    before = await backend.raw_rows(ACME, "h")
    await asyncio.sleep(0.003)

    def refuse(records: Sequence[StoredRecord]) -> Decision[None]:
        raise FailedPrecondition("REFUSED", "refused")

    with pytest.raises(FailedPrecondition) as refused:
        await store.change_order(ACME, "h", refuse, deadline=soon())
    assert refused.value.reason == "REFUSED"

    def refuse_after_looking(rows: Sequence[HandleRow]) -> Insertion[None]:
        raise AlreadyExists("REFUSED", "refused")

    with pytest.raises(AlreadyExists):
        await store.track_orders(ACME, ["h", "new"], refuse_after_looking, deadline=soon())
    assert await backend.raw_rows(ACME, "h") == before
    assert await backend.raw_rows(ACME, "new") == []
    assert await get(store, ACME, OrderQuery("h")) == created


# --- tracking -----------------------------------------------------------------------------------


async def test_track_sees_the_rows_of_its_handles(store: OrderStore) -> None:
    await track(store, ACME, "open")
    await track(store, ACME, "done")
    await cancel(store, ACME, OrderQuery("done"))
    await track(store, ACME, "done")
    await cancel(store, ACME, OrderQuery("done"))
    await track(store, ACME, "elsewhere")
    await track(store, RIVAL, "fresh")  # another account's handle is no row of ACME's
    seen: list[list[HandleRow]] = []

    def decide(rows: Sequence[HandleRow]) -> Insertion[str]:
        seen.append(list(rows))
        return Insertion("nothing new", [])

    assert await store.track_orders(ACME, ["open", "done", "fresh"], decide, deadline=soon()) == "nothing new"
    [rows] = seen
    assert sorted(rows) == [
        HandleRow("done", 0, Status.ORDER_STATUS_CANCELLED),
        HandleRow("done", 1, Status.ORDER_STATUS_CANCELLED),
        HandleRow("open", 0, Status.ORDER_STATUS_ONGOING),
    ]


async def test_terminal_handle_starts_next_attempt(store: OrderStore) -> None:
    [first] = await track(store, ACME, "h")
    await cancel(store, ACME, OrderQuery("h"))
    [second] = await track(store, ACME, "h")
    assert second.fulfillment_attempt == 1
    assert await get(store, ACME, OrderQuery("h")) == second
    assert (
        await get(store, ACME, OrderQuery("h", fulfillment_attempt=0))
    ).status == Status.ORDER_STATUS_CANCELLED
    # A change without an attempt names the latest one.
    assert (await cancel(store, ACME, OrderQuery("h"))).fulfillment_attempt == 1
    [third] = await track(store, ACME, "h")
    assert third.fulfillment_attempt == 2
    assert first.fulfillment_attempt == 0


async def test_open_handle_already_exists_and_nothing_is_written(store: OrderStore) -> None:
    await track(store, ACME, "h")
    with pytest.raises(AlreadyExists) as refused:
        await track(store, ACME, "new", "h")
    assert refused.value.reason == "ORDER_ALREADY_TRACKED"
    with pytest.raises(NotFound):
        await get(store, ACME, OrderQuery("new"))
    with pytest.raises(NotFound):
        await get(store, ACME, OrderQuery("h", fulfillment_attempt=1))


# --- accounts, ping, isolation -------------------------------------------------------------------


async def test_accounts(backend: StoreBackend) -> None:
    store = await backend.open()
    assert await store.account_secret_hash("nobody") is None
    assert await store.create_account("acct", b"first-hash") is True
    assert await store.create_account("acct", b"second-hash") is False
    assert await store.account_secret_hash("acct") == b"first-hash"


async def test_ping_answers(store: OrderStore) -> None:
    await store.ping()


async def test_accounts_never_see_each_others_orders(store: OrderStore) -> None:
    [ours] = await track(store, ACME, "shared")
    for query in (OrderQuery("shared"), OrderQuery("shared", DROP, 0, 0)):
        with pytest.raises(NotFound):
            await get(store, RIVAL, query)
        with pytest.raises(NotFound):
            await cancel(store, RIVAL, query)
    [theirs] = await track(store, RIVAL, "shared")
    assert theirs.fulfillment_attempt == 0
    await cancel(store, RIVAL, OrderQuery("shared"))
    assert await get(store, ACME, OrderQuery("shared")) == ours


# --- concurrency ---------------------------------------------------------------------------------


async def test_concurrent_cancels_add_exactly_one_event(store: OrderStore, backend: StoreBackend) -> None:
    await track(store, ACME, "hot")
    # Three stores on one database, as three processes would have.
    stores = [store, await backend.open(), await backend.open()]
    results = await asyncio.gather(*(cancel(stores[i % 3], ACME, OrderQuery("hot")) for i in range(50)))
    stored = await get(store, ACME, OrderQuery("hot"))
    assert events(stored, "order_cancelled") == 1
    assert all(result == stored for result in results)


async def test_concurrent_changes_lose_no_update(store: OrderStore, backend: StoreBackend) -> None:
    await track(store, ACME, "hot")
    stores = [store, await backend.open(), await backend.open()]
    await asyncio.gather(
        *(change(stores[i % 3], ACME, OrderQuery("hot"), adding(f"k{i}")) for i in range(40))
    )
    assert keys(await get(store, ACME, OrderQuery("hot"))) == {f"k{i}" for i in range(40)}


async def test_concurrent_tracks_of_a_new_handle_one_wins(store: OrderStore, backend: StoreBackend) -> None:
    stores = [store, await backend.open(), await backend.open()]
    outcomes = await asyncio.gather(
        *(track(stores[i % 3], ACME, "contested", f"own-{i}") for i in range(12)), return_exceptions=True
    )
    won = [o for o in outcomes if isinstance(o, list)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1, outcomes
    assert all(isinstance(error, AlreadyExists) for error in lost), lost
    [records] = won
    assert await get(store, ACME, OrderQuery("contested")) == records[0]
    with pytest.raises(NotFound):
        await get(store, ACME, OrderQuery("contested", fulfillment_attempt=1))
    # The losers wrote none of their other orders either.
    winner = records[1].order_handle
    for i in range(12):
        if f"own-{i}" != winner:
            with pytest.raises(NotFound):
                await get(store, ACME, OrderQuery(f"own-{i}"))


def _changes_in_another_process(kind: str, location: str, worker: int, count: int) -> None:
    """In a child process: `count` concurrent key-adding changes, then a cancel, on the shared order."""

    async def run() -> None:
        store = await open_store(kind, location)
        try:
            await asyncio.gather(
                *(change(store, ACME, OrderQuery("hot"), adding(f"w{worker}-{i}")) for i in range(count))
            )
            await cancel(store, ACME, OrderQuery("hot"))
        finally:
            await store.close()

    asyncio.run(run())


async def test_changes_from_many_processes_lose_nothing(store: OrderStore, backend: StoreBackend) -> None:
    await track(store, ACME, "hot")
    workers, count = 3, 15
    context = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool, _changes_in_another_process, backend.kind, backend.location, w, count
                )
                for w in range(workers)
            )
        )
    stored = await get(store, ACME, OrderQuery("hot"))
    assert keys(stored) == {f"w{w}-{i}" for w in range(workers) for i in range(count)}
    assert events(stored, "order_cancelled") == 1


# --- schema and durability -----------------------------------------------------------------------


async def test_migrations_are_idempotent_and_safe_in_parallel(backend: StoreBackend) -> None:
    first, second, third = await asyncio.gather(backend.open(), backend.open(), backend.open())
    await first.create_account(ACME, b"hash")
    await track(first, ACME, "h")
    fourth = await backend.open()
    assert (await get(fourth, ACME, OrderQuery("h"))).order_handle == "h"
    for opened in (second, third, fourth):
        await opened.ping()


async def test_reopened_store_sees_every_committed_change(store: OrderStore, backend: StoreBackend) -> None:
    await track(store, ACME, "a", ("b", PICK), ("b", DROP))
    cancelled = await cancel(store, ACME, OrderQuery("a"))
    [again] = await track(store, ACME, "a")
    await store.create_account("late", b"late-hash")
    reopened = await backend.reopen(store)
    assert await get(reopened, ACME, OrderQuery("a")) == again
    assert await get(reopened, ACME, OrderQuery("a", fulfillment_attempt=0)) == cancelled
    assert (await get(reopened, ACME, OrderQuery("b", PICK))).status == Status.ORDER_STATUS_ONGOING
    assert await reopened.account_secret_hash("late") == b"late-hash"


# --- PostgreSQL only: server trouble becomes Unavailable -----------------------------------------


@pytest.mark.postgres
async def test_postgres_unreachable_is_unavailable_without_the_password() -> None:
    with pytest.raises(Unavailable) as unreachable:
        await PostgresStore.open(
            f"postgresql://gateway:hunter2-secret@127.0.0.1:{_closed_port()}/orders", connect_timeout_s=2
        )
    message = str(unreachable.value)
    assert "127.0.0.1" in message
    assert "hunter2" not in message
    with pytest.raises(Unavailable) as malformed:
        await PostgresStore.open("postgresql://gateway:hunter2-secret@127.0.0.1:notaport/orders")
    assert "hunter2" not in str(malformed.value)
    assert malformed.value.__cause__ is None


def _database_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


async def _admin(admin_dsn: str, sql: str, *args: object) -> object:
    """One statement on a connection of its own, outside any store."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


@pytest.fixture
async def pg_store(postgres_database: str) -> AsyncIterator[PostgresStore]:
    """A PostgreSQL store on a fresh database with the ACME account; closed afterwards."""
    store = await PostgresStore.open(postgres_database, min_size=3, max_size=3)
    try:
        await store.create_account(ACME, b"hash")
        yield store
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_recovers_when_its_connections_are_cut(
    pg_store: PostgresStore, postgres_dsn: str, postgres_database: str
) -> None:
    await track(pg_store, ACME, "h")
    killed = await _admin(
        postgres_dsn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
        _database_name(postgres_database),
    )
    assert killed == 3
    # Every pooled connection is dead now: each call starts again on a new one.
    await pg_store.ping()
    assert (await cancel(pg_store, ACME, OrderQuery("h"))).status == Status.ORDER_STATUS_CANCELLED
    assert await pg_store.account_secret_hash(ACME) == b"hash"


@pytest.mark.postgres
async def test_postgres_vanished_database_fails_fast(
    pg_store: PostgresStore, postgres_dsn: str, postgres_database: str
) -> None:
    await _admin(postgres_dsn, f"DROP DATABASE {_database_name(postgres_database)} WITH (FORCE)")
    started = time.monotonic()
    with pytest.raises(Unavailable) as gone:
        await get(pg_store, ACME, OrderQuery("h"))
    assert time.monotonic() - started < 3.0  # not the call's whole 20 s deadline
    assert gone.value.reason == "STORE_UNAVAILABLE"
    assert "127.0.0.1" not in str(gone.value)  # the API caller learns nothing of the server
    with pytest.raises(Unavailable) as ping:
        await pg_store.ping()
    assert "127.0.0.1" in str(ping.value)  # the operator learns which server


@pytest.mark.postgres
async def test_postgres_locked_row_past_the_deadline_is_unavailable(
    pg_store: PostgresStore, postgres_database: str
) -> None:
    [created] = await track(pg_store, ACME, "h")
    holder = await asyncpg.connect(postgres_database)
    try:
        async with holder.transaction():
            # Another process holds the row: the change waits for it only until its deadline.
            await holder.execute("SELECT 1 FROM orders WHERE order_handle = 'h' FOR UPDATE")
            decide = partial(
                decide_change,
                lifecycle.cancel,
                OrderQuery("h"),
                json_pb2.JsonObject(),
                NOW_MS,
                account_id=ACME,
            )
            started = time.monotonic()
            with pytest.raises(Unavailable) as busy:
                await pg_store.change_order(ACME, "h", decide, deadline=time.monotonic() + 0.3)
            assert time.monotonic() - started < 2.0
            assert busy.value.reason == "STORE_BUSY"
    finally:
        await holder.close()
    assert await get(pg_store, ACME, OrderQuery("h")) == created
    assert (await cancel(pg_store, ACME, OrderQuery("h"))).status == Status.ORDER_STATUS_CANCELLED


@pytest.mark.postgres
async def test_postgres_read_only_server_fails_ping(postgres_database: str) -> None:
    name = _database_name(postgres_database)
    await (await PostgresStore.open(postgres_database)).close()  # migrated while writable
    await _admin(postgres_database, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    store = await PostgresStore.open(postgres_database)
    try:
        with pytest.raises(Unavailable) as read_only:
            await store.ping()
        assert read_only.value.reason == "STORE_READ_ONLY"
        assert name in str(read_only.value)
        with pytest.raises(Unavailable):
            await store.create_account(ACME, b"hash")
    finally:
        await store.close()


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
