"""WatchOrderEvents over real gRPC: from now, from a cursor, resumed across disconnects during a load
with every event seen once in commit order, a watcher that stops reading cut off with
RESOURCE_EXHAUSTED, another account's events never seen, the end at shutdown, grpcurl by
reflection, and on PostgreSQL the commits of another process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.assembly import assemble
from gateway.demo import DEMO_ACCOUNT, DEMO_SECRET
from gateway.events.hub import OVERFLOWED, SHUTTING_DOWN, WatchSettings
from gateway.jsonmap import encode
from gateway.protos import SERVICE_NAME, orders_service_pb2
from gateway.rpc.status import details_from_metadata, error_of
from gateway.rpc.stubs import orders_service_grpc
from gateway.seed import seed_orders
from gateway.settings import StoreSettings
from gateway.testing import GatewayStack, basic, stack_settings
from tests.faults.harness import eventually
from tests.gotools import find_go_tool

Watch = orders_service_pb2.WatchOrderEventsRequest
Event = orders_service_pb2.WatchOrderEventsResponse
CONCURRENT_CANCELS = 1000
RESUME_EVERY = 150
"""Events a watcher reads before it drops the stream and resumes from its last cursor."""


def cancel(handle: str) -> orders_service_pb2.CancelOrderRequest:
    return orders_service_pb2.CancelOrderRequest(order_handle=handle)


async def opened(
    stub: orders_service_grpc.OrdersServiceStub, auth: Any, cursor: str = ""
) -> grpc.aio.UnaryStreamCall[Watch, Event]:
    """A watch whose headers have arrived: from then on nothing committed can be missed."""
    call = stub.WatchOrderEvents(Watch(cursor=cursor), metadata=auth)
    await call.initial_metadata()
    return call


async def read(call: grpc.aio.UnaryStreamCall[Watch, Event], count: int) -> list[Event]:
    return [await call.read() for _ in range(count)]  # type: ignore[misc]


async def read_all(call: grpc.aio.UnaryStreamCall[Watch, Event], into: list[Event]) -> None:
    """Every event of the stream into `into`, until it ends (raised, for a watch)."""
    while True:
        into.append(await call.read())  # type: ignore[arg-type]


def handles(events: list[Event]) -> list[str]:
    return [e.event.data.order_handle for e in events]


def reason_of(failure: grpc.aio.AioRpcError) -> str:
    return error_of(failure.code(), details_from_metadata(failure.trailing_metadata())).reason


async def test_a_watch_from_now_sees_what_is_committed_after_it(grpc_stack: GatewayStack) -> None:
    stub = grpc_stack.stub()
    auth = grpc_stack.grpc_auth()
    await stub.CancelOrder(cancel("order-1"), metadata=auth)  # before the watch: not sent
    call = await opened(stub, auth)
    await stub.CancelOrder(cancel("order-3"), metadata=auth)
    await stub.CompleteOrder(orders_service_pb2.CompleteOrderRequest(order_handle="order-4"), metadata=auth)
    events = await read(call, 2)
    assert handles(events) == ["order-3", "order-4"]
    assert [e.event.data.value for e in events] == [8, 7]  # cancelled, completed
    assert int(events[0].cursor) < int(events[1].cursor)
    # The event is the one the replay shows.
    replayed = await stub.ListOrderWebhooks(
        orders_service_pb2.ListOrderWebhooksRequest(order_handle="order-3"), metadata=auth
    )
    assert encode(events[0].event).items() <= encode(replayed.webhooks[0]).items()  # type: ignore[union-attr]
    call.cancel()


async def test_a_watch_from_a_cursor_catches_up_then_goes_live(grpc_stack: GatewayStack) -> None:
    stub = grpc_stack.stub()
    auth = grpc_stack.grpc_auth()
    first = await opened(stub, auth)
    for handle in ("order-1", "order-3", "order-4"):
        await stub.CancelOrder(cancel(handle), metadata=auth)
    seen = await read(first, 3)
    first.cancel()
    # While nobody watches.
    await stub.DisableOrder(orders_service_pb2.DisableOrderRequest(order_handle="order-5"), metadata=auth)
    await stub.CancelOrder(cancel("order-5"), metadata=auth)
    resumed = await opened(stub, auth, cursor=seen[0].cursor)
    backlog = await read(resumed, 4)
    assert handles(backlog) == ["order-3", "order-4", "order-5", "order-5"]
    assert [e.cursor for e in backlog[:2]] == [e.cursor for e in seen[1:]]
    await seed_orders(grpc_stack.store, grpc_stack.account_id, 1, "new-")
    await stub.CancelOrder(cancel("new-0"), metadata=auth)
    (live,) = await read(resumed, 1)
    assert live.event.data.order_handle == "new-0"
    assert int(live.cursor) > int(backlog[-1].cursor)
    resumed.cancel()


@pytest.mark.parametrize("cursor", ["x", "-1", "01", "1e3", "99999999999"])
async def test_a_cursor_the_stream_did_not_send_is_an_invalid_argument(
    grpc_stack: GatewayStack, cursor: str
) -> None:
    call = grpc_stack.stub().WatchOrderEvents(Watch(cursor=cursor), metadata=grpc_stack.grpc_auth())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    error = error_of(raised.value.code(), details_from_metadata(raised.value.trailing_metadata()))
    assert [v.field for v in error.violations] == ["cursor"]  # type: ignore[attr-defined]


async def test_a_watch_needs_credentials(grpc_stack: GatewayStack) -> None:
    call = grpc_stack.stub().WatchOrderEvents(Watch(), metadata=grpc_stack.grpc_auth(secret="wrong"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_resumed_across_disconnects_during_a_load_every_event_once_in_commit_order(
    tmp_path: Path,
) -> None:
    async with GatewayStack.start(tmp_path) as stack:
        await seed_orders(stack.store, stack.account_id, CONCURRENT_CANCELS, "load-")
        other_id, other_secret = await stack.create_account("acme")
        await seed_orders(stack.store, other_id, 200, "theirs-")
        other_auth = stack.grpc_auth(other_id, other_secret)
        auth = stack.grpc_auth()
        stub = stack.stub()
        received: list[Event] = []
        disconnects = 0
        cut_off: list[str] = []  # the reasons of streams the server ended
        # From the start of the outbox (the seeding wrote no event), so that a watcher cut off
        # before its first event still has a cursor to resume from.
        first = await opened(stub, auth, cursor="0")

        async def watcher() -> None:
            nonlocal disconnects
            call = first
            while len(received) < CONCURRENT_CANCELS:
                try:
                    received.append(await call.read())  # type: ignore[arg-type]
                    if len(received) % RESUME_EVERY:
                        continue
                    disconnects += 1  # gone on purpose, as a client that lost its network
                except grpc.aio.AioRpcError as failure:
                    cut_off.append(reason_of(failure))
                call.cancel()
                call = await opened(stub, auth, cursor=received[-1].cursor if received else "0")
            call.cancel()

        watching = asyncio.create_task(watcher())
        semaphore = asyncio.Semaphore(50)

        async def cancel_as(handle: str, metadata: Any) -> None:
            async with semaphore:
                await stub.CancelOrder(cancel(handle), metadata=metadata)

        await asyncio.gather(
            *(cancel_as(f"load-{i}", auth) for i in range(CONCURRENT_CANCELS)),
            *(cancel_as(f"theirs-{i}", other_auth) for i in range(200)),
        )
        await asyncio.wait_for(watching, 60)

        assert disconnects == CONCURRENT_CANCELS // RESUME_EVERY
        # Too slow for the load is the one end a watcher may meet besides its own.
        assert set(cut_off) <= {OVERFLOWED}
        cursors = [int(e.cursor) for e in received]
        assert cursors == sorted(set(cursors)), "each event once, in commit order"
        assert sorted(handles(received)) == sorted(f"load-{i}" for i in range(CONCURRENT_CANCELS))
        assert {e.event.account_id for e in received} == {stack.account_id}
        # Commit order is the store's: the account's events as it numbered them.
        committed = await stack.server.hub.source.events_after(  # type: ignore[union-attr]
            0, limit=10 * CONCURRENT_CANCELS, account_id=stack.account_id
        )
        assert cursors == [e.event_id for e in committed]
        assert stack.server.hub.watchers == 0  # type: ignore[union-attr]


async def test_a_watcher_that_stops_reading_is_cut_off_and_resumes(tmp_path: Path) -> None:
    count = 200
    async with GatewayStack.start(tmp_path, watch=WatchSettings(queue_size=16, batch_size=8)) as stack:
        hub = stack.server.hub
        assert hub is not None
        await seed_orders(stack.store, stack.account_id, count, "load-")
        auth = stack.grpc_auth()
        stub = stack.stub()
        # The slow watcher's connection takes little ahead of what it reads (no window growth), so
        # the server's writes to it wait on it, as they would on a slow network or client.
        slow_channel = grpc.aio.insecure_channel(
            stack.grpc_target, options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        )
        slow_stub = orders_service_grpc.OrdersServiceStub(slow_channel)  # type: ignore[no-untyped-call]
        try:
            slow = await opened(slow_stub, auth)
            keeping_up = await opened(stub, auth)
            kept: list[Event] = []

            async def keep_up() -> None:
                while len(kept) < count:
                    kept.append(await keeping_up.read())  # type: ignore[arg-type]

            reader = asyncio.create_task(keep_up())
            for i in range(count):  # one after the other: a watcher that reads keeps up
                await stub.CancelOrder(cancel(f"load-{i}"), metadata=auth)
            await asyncio.wait_for(reader, 30)
            assert handles(kept) == [f"load-{i}" for i in range(count)]
            # The slow watcher was let go on the server while it read nothing.
            assert hub.watchers == 1
            got: list[Event] = []
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await read_all(slow, got)
            assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert reason_of(raised.value) == OVERFLOWED
            assert 0 < len(got) < count
            assert handles(got) == [f"load-{i}" for i in range(len(got))]
            # It resumes from its last cursor, and misses nothing.
            resumed = await opened(slow_stub, auth, cursor=got[-1].cursor)
            rest = await read(resumed, count - len(got))
            assert handles(got + rest) == [f"load-{i}" for i in range(count)]
            resumed.cancel()
            keeping_up.cancel()
        finally:
            await slow_channel.close()


async def test_another_accounts_watch_sees_none_of_this_ones_events(grpc_stack: GatewayStack) -> None:
    other_id, other_secret = await grpc_stack.create_account("acme")
    stub = grpc_stack.stub()
    theirs = await opened(stub, grpc_stack.grpc_auth(other_id, other_secret), cursor="0")
    for handle in ("order-1", "order-3"):
        await stub.CancelOrder(cancel(handle), metadata=grpc_stack.grpc_auth())
    await seed_orders(grpc_stack.store, other_id, 1, "their-")
    await stub.CancelOrder(cancel("their-0"), metadata=grpc_stack.grpc_auth(other_id, other_secret))
    # Its first event is its own: the demo account's two, committed before, were skipped.
    (first,) = await read(theirs, 1)
    assert (first.event.account_id, first.event.data.order_handle) == ("acme", "their-0")
    theirs.cancel()


async def test_a_watch_ends_with_unavailable_when_the_server_stops(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as exits:
        stack = await exits.enter_async_context(GatewayStack.start(tmp_path))
        call = await opened(stack.stub(), stack.grpc_auth())
        reading = asyncio.ensure_future(call.read())
        await stack.server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await reading
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason_of(raised.value) == SHUTTING_DOWN


# --- grpcurl ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpcurl() -> Path:
    return find_go_tool("grpcurl")


async def json_objects(stream: asyncio.StreamReader, count: int) -> AsyncIterator[dict[str, Any]]:
    """The first `count` JSON objects of a stream of them (grpcurl prints one per message)."""
    decoder = json.JSONDecoder()
    buffer = ""
    while count:
        chunk = await stream.read(4096)
        assert chunk, f"the stream ended before {count} more objects: {buffer!r}"
        buffer += chunk.decode()
        while count:
            text = buffer.lstrip()
            try:
                value, end = decoder.raw_decode(text)
            except json.JSONDecodeError:
                break
            buffer = text[end:]
            count -= 1
            yield value


async def test_grpcurl_watches_by_reflection(grpc_stack: GatewayStack, grpcurl: Path) -> None:
    stub = grpc_stack.stub()
    auth = grpc_stack.grpc_auth()
    await stub.CancelOrder(cancel("order-1"), metadata=auth)
    process = await asyncio.create_subprocess_exec(
        str(grpcurl),
        "-plaintext",
        "-H",
        f"authorization: {basic(grpc_stack.account_id, grpc_stack.secret)}",
        "-d",
        json.dumps({"cursor": "0"}),
        grpc_stack.grpc_target,
        f"{SERVICE_NAME}/WatchOrderEvents",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        objects = json_objects(process.stdout, 2)
        async with asyncio.timeout(30):
            backlog = await anext(objects)  # from the store: committed before grpcurl came
            await stub.CancelOrder(cancel("order-3"), metadata=auth)
            live = await anext(objects)
        assert backlog["cursor"] == "1"
        assert backlog["event"]["data"]["order_handle"] == "order-1"
        assert live["event"]["data"]["order_handle"] == "order-3"
        assert live["event"]["account_id"] == grpc_stack.account_id
        assert live["event"]["data"]["value"] == "ORDER_STATUS_CANCELLED"
    finally:
        process.terminate()
        await process.wait()


async def test_the_watcher_gauge_follows_the_streams(grpc_stack: GatewayStack) -> None:
    hub = grpc_stack.server.hub
    assert hub is not None
    calls = [await opened(grpc_stack.stub(), grpc_stack.grpc_auth()) for _ in range(3)]
    assert hub.watchers == 3
    for call in calls:
        call.cancel()

    async def gone() -> bool | None:
        return True if hub.watchers == 0 else None

    await eventually(gone, within_s=10)
    scraped, _ = grpc_stack.server.metrics.exposition()
    assert b"hypertrack_gateway_event_watchers 0.0" in scraped


# --- PostgreSQL: the commits of another process --------------------------------------------------------


async def test_a_watch_on_one_process_sees_the_commits_of_another_on_postgresql(
    tmp_path: Path, postgres_database: str
) -> None:
    settings = dataclasses.replace(
        stack_settings(tmp_path), mode="grpc", store=StoreSettings(postgres_database, demo=True)
    )
    async with contextlib.AsyncExitStack() as exits:
        watched = await assemble(settings)
        exits.push_async_callback(watched.stop)
        writer = await assemble(settings)
        exits.push_async_callback(writer.stop)
        assert writer.store is not None
        await seed_orders(writer.store, DEMO_ACCOUNT, 300, "load-")
        auth = (("authorization", basic(DEMO_ACCOUNT, DEMO_SECRET)),)
        watch_channel = grpc.aio.insecure_channel(f"127.0.0.1:{watched.grpc_port}")
        exits.push_async_callback(watch_channel.close)
        write_channel = grpc.aio.insecure_channel(f"127.0.0.1:{writer.grpc_port}")
        exits.push_async_callback(write_channel.close)
        call = await opened(orders_service_grpc.OrdersServiceStub(watch_channel), auth)  # type: ignore[no-untyped-call]
        writer_stub = orders_service_grpc.OrdersServiceStub(write_channel)  # type: ignore[no-untyped-call]
        semaphore = asyncio.Semaphore(30)

        async def cancel_there(handle: str) -> None:
            async with semaphore:
                await writer_stub.CancelOrder(cancel(handle), metadata=auth)

        await asyncio.gather(*(cancel_there(f"load-{i}") for i in range(300)))
        received = await asyncio.wait_for(read(call, 300), 60)
        cursors = [int(e.cursor) for e in received]
        assert cursors == sorted(set(cursors))
        assert sorted(handles(received)) == sorted(f"load-{i}" for i in range(300))
        call.cancel()
