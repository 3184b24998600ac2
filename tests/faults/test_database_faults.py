"""The database busy: another connection holds SQLite's write lock (`BEGIN IMMEDIATE` on the same
file, as another gateway process or an operator's shell would) while a cancel arrives.

- Held past the deadline: the cancel keeps retrying for about its deadline (`Grpc-Timeout: 300m`),
  then answers 503 `STORE_BUSY`, through both REST backends, and UNAVAILABLE with ErrorInfo
  `STORE_BUSY` over gRPC; the order is untouched, and the cancel goes through once the lock is gone.
- Let go within the deadline: the waiting cancel goes through (200), once.
- PostgreSQL, a row held `FOR UPDATE` past the deadline: the same 503 is expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest

from gateway.protos import order_pb2, orders_service_pb2
from gateway.rpc.status import ERROR_DOMAIN, details_from_metadata, error_info
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from gateway.testing import GatewayStack
from tests.faults.figures import Figures
from tests.faults.harness import FaultyStore
from tests.faults.ledger import State, audit

BACKENDS = ["in-process", "remote"]
SHORT_DEADLINE = "300m"
# The cancel must have retried for most of its 300 ms, and must not have hung on much past it.
BUSY_MIN_S, BUSY_MAX_S = 0.2, 1.5
HOLD_S = 0.5  # how long the other writer keeps the lock when it lets go within the deadline
LONG_DEADLINE = "5S"
STORE_BUSY_BODY = {
    "detail": {"reason": "STORE_BUSY"},
    "message": "the database stayed busy until the deadline; retry later",
}


@contextlib.contextmanager
def write_locked(database: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock until the block ends (or it lets go)."""
    locker = sqlite3.connect(database, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        yield locker
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()


async def post_cancel(
    http: aiohttp.ClientSession, url: str, handle: str, deadline: str
) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    async with http.post(
        f"{url}/orders/{handle}/cancel", json={}, headers={"Grpc-Timeout": deadline}
    ) as response:
        return response.status, await response.json(), time.monotonic() - started


@pytest.mark.parametrize("backend", BACKENDS)
async def test_locked_database_is_retried_until_the_deadline_then_503(
    tmp_path: Path, backend: str, figures: Figures
) -> None:
    handles = ["order-3", "order-4", "order-5"]
    async with (
        GatewayStack.start(tmp_path, backend=backend) as stack,  # type: ignore[arg-type]
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
    ):
        with write_locked(stack.database_path):
            for handle in handles:
                status, body, elapsed = await post_cancel(http, stack.rest_url, handle, SHORT_DEADLINE)
                figures.fault(f"database write-locked past the deadline ({backend}): answered 503")
                figures.timing("503 STORE_BUSY with a 300 ms deadline", elapsed)
                assert status == 503, body
                assert body == STORE_BUSY_BODY
                assert BUSY_MIN_S <= elapsed <= BUSY_MAX_S, f"503 after {elapsed:.3f} s"

        result = audit(stack.database_path, "demo", handles)
        figures.checked(len(handles), result.bad)
        assert result.states == dict.fromkeys(handles, State.UNTOUCHED)

        # The lock is gone: the same cancel goes through.
        status, body, _ = await post_cancel(http, stack.rest_url, "order-3", LONG_DEADLINE)
        assert status == 200 and body["status"] == "cancelled"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_lock_let_go_within_the_deadline_lets_the_waiting_cancel_through(
    tmp_path: Path, backend: str, figures: Figures
) -> None:
    store = FaultyStore(await SqliteStore.open(tmp_path / "gateway.db"))
    async with (
        GatewayStack.start(tmp_path, backend=backend, store=store) as stack,  # type: ignore[arg-type]
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
    ):
        with write_locked(stack.database_path) as locker:
            store.changes_started.clear()
            cancel = asyncio.create_task(post_cancel(http, stack.rest_url, "order-3", LONG_DEADLINE))
            # The change has found the database locked and is retrying; the other writer keeps
            # the lock a while longer, then commits.
            await asyncio.wait_for(store.changes_started.wait(), timeout=5)
            held_from = time.monotonic()
            await asyncio.sleep(HOLD_S)
            locker.execute("COMMIT")
            status, body, _ = await asyncio.wait_for(cancel, timeout=10)
            waited = time.monotonic() - held_from
        figures.fault(f"database write-locked for {HOLD_S} s within the deadline ({backend}): answered 200")
        figures.timing("cancel that waited out a 0.5 s write lock", waited)
        assert status == 200, body
        assert body["status"] == "cancelled"
        assert HOLD_S <= waited < 5.0

        result = audit(stack.database_path, "demo", ["order-3"], {"order-3"})
        figures.checked(1, result.bad)
        assert result.states == {"order-3": State.CANCELLED}


async def test_locked_database_over_grpc_is_unavailable_with_store_busy(
    tmp_path: Path, figures: Figures
) -> None:
    async with GatewayStack.start(tmp_path) as stack:
        stub = stack.stub()
        request = orders_service_pb2.CancelOrderRequest(order_handle="order-3")
        with write_locked(stack.database_path):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.CancelOrder(request, metadata=stack.grpc_auth(), timeout=0.3)
            elapsed = time.monotonic() - started
        figures.fault("database write-locked past the deadline (gRPC): UNAVAILABLE")
        figures.timing("UNAVAILABLE STORE_BUSY with a 300 ms deadline (gRPC)", elapsed)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
        info = error_info(details_from_metadata(failed.value.trailing_metadata()))
        assert info is not None
        assert (info.reason, info.domain) == ("STORE_BUSY", ERROR_DOMAIN)
        assert BUSY_MIN_S <= elapsed <= BUSY_MAX_S, f"UNAVAILABLE after {elapsed:.3f} s"

        result = audit(stack.database_path, "demo", ["order-3"])
        figures.checked(1, result.bad)
        assert result.states == {"order-3": State.UNTOUCHED}
        reply = await stub.CancelOrder(request, metadata=stack.grpc_auth(), timeout=5)
        assert reply.order.status == order_pb2.ORDER_STATUS_CANCELLED


@pytest.mark.postgres
async def test_postgres_row_locked_past_the_deadline_is_503(
    tmp_path: Path, postgres_database: str, figures: Figures
) -> None:
    store = await PostgresStore.open(postgres_database)
    async with (
        GatewayStack.start(tmp_path, store=store) as stack,
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
    ):
        handles = ["order-3", "order-4", "order-5"]
        answers = []
        holder = await asyncpg.connect(postgres_database)
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM orders WHERE order_handle = ANY($1::text[]) FOR UPDATE", handles
                )
                for handle in handles:
                    answers.append(await post_cancel(http, stack.rest_url, handle, SHORT_DEADLINE))
        finally:
            await holder.close()
        for status, _, _ in answers:
            figures.fault(f"PostgreSQL row locked past the deadline: answered {status}")
        for status, body, elapsed in answers:
            assert BUSY_MIN_S <= elapsed <= BUSY_MAX_S, f"answered after {elapsed:.3f} s"
            assert status == 503, body
            # The same answer as SQLite's, in PostgreSQL's words: the lock wait ran out of time.
            assert body["detail"] == STORE_BUSY_BODY["detail"]
            assert body["message"].endswith("before the deadline; retry later")
