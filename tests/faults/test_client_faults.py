"""REST clients that go away mid-request: headers cut off, half a body (sized or chunked), the whole
request sent and the connection closed before the answer (at once, or while the call is in the
backend), with a FIN or a reset, one at a time and many at once.

Each leaves no error noise (no log record at WARNING or above, from any logger), no task behind
(the event loop's tasks come back to what the running server had before), and a server that keeps
serving; a cancel whose client went away either happened in full or not at all, and one whose
body never arrived did not happen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.demo import DEMO_ACCOUNT
from gateway.protos import order_pb2, orders_service_pb2
from gateway.seed import seed_orders
from gateway.store.sqlite import SqliteStore
from gateway.testing import GatewayStack, basic
from tests.faults.figures import Figures
from tests.faults.harness import FaultyStore, no_tasks_beyond, task_census
from tests.faults.ledger import State, audit

BACKENDS = ["in-process", "remote"]
AUTH = basic("demo", "demo-secret")
SETTLE_S = 10.0
IN_BACKEND_S = 0.2  # how long each change takes in the store, so that a client can leave mid-call
MANY = 60
NORMAL_ALONGSIDE = 20


def head(handle: str, rest: str) -> bytes:
    return (
        f"POST /orders/{handle}/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n{rest}"
    ).encode()


@dataclass(frozen=True)
class Disconnect:
    """One way to leave: what is sent before leaving, and whether the cancel may have happened."""

    name: str
    request: Callable[[str], bytes]
    body_complete: bool  # the whole request was sent: the cancel may have happened
    mid_call: bool = False  # leave only once the call has reached the store


DISCONNECTS = [
    Disconnect("headers cut off", lambda h: head(h, "Content-Type: appl"), body_complete=False),
    Disconnect(
        "half a body",
        lambda h: head(h, 'Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{"metadata": {"n'),
        body_complete=False,
    ),
    Disconnect(
        "half a chunked body",
        lambda h: head(
            h, 'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{"metadata": {"n'
        ),
        body_complete=False,
    ),
    Disconnect(
        "whole request, answer not read",
        lambda h: head(h, "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"),
        body_complete=True,
    ),
    Disconnect(
        "whole request, gone while the call is in the backend",
        lambda h: head(h, "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"),
        body_complete=True,
        mid_call=True,
    ),
]
BODY_CUT = [d for d in DISCONNECTS if d.name in ("half a body", "half a chunked body")]


async def leave(port: int, disconnect: Disconnect, handle: str, *, reset: bool, store: FaultyStore) -> None:
    """Connect, send `disconnect`'s bytes, and go: a FIN, or a reset (`reset`)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(disconnect.request(handle))
    await writer.drain()
    if disconnect.mid_call:
        await asyncio.wait_for(store.reached(handle).wait(), timeout=5)
    if reset:
        writer.transport.abort()
    else:
        writer.close()
    await writer.wait_closed()


@dataclass
class Server:
    stack: GatewayStack
    store: FaultyStore

    @property
    def port(self) -> int:
        return self.stack.rest_server.port

    def client_closed_count(self) -> int:
        """REST requests answered 499 (client closed request), from the metrics."""
        return sum(
            int(float(line.rpartition(" ")[2]))
            for line in self.stack.metrics.exposition()[0].decode().splitlines()
            if line.startswith("http_server_request_duration_seconds_count{")
            and 'http_response_status_code="499"' in line
        )


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    """The gateway (REST backend by parameter) with MANY seeded open orders, each change taking
    IN_BACKEND_S in the store."""
    store = FaultyStore(await SqliteStore.open(tmp_path / "gateway.db"))
    async with GatewayStack.start(tmp_path, backend=request.param, store=store) as stack:
        await seed_orders(stack.store, DEMO_ACCOUNT, MANY + NORMAL_ALONGSIDE, "load-")
        store.stall_s = IN_BACKEND_S
        yield Server(stack, store)


async def still_serves(server: Server, handle: str) -> None:
    async with (
        aiohttp.ClientSession(headers=server.stack.rest_auth()) as http,
        http.post(f"{server.stack.rest_url}/orders/{handle}/cancel", json={}) as response,
    ):
        assert response.status == 200
        assert (await response.json())["status"] == "cancelled"


def warnings_and_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
@pytest.mark.parametrize("disconnect", DISCONNECTS, ids=lambda d: d.name.replace(" ", "-"))
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
async def test_a_client_leaving_mid_request_leaves_no_trace(
    server: Server, disconnect: Disconnect, reset: bool, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    caplog.set_level(logging.WARNING)
    baseline = task_census()

    await leave(server.port, disconnect, "load-0", reset=reset, store=server.store)
    figures.fault(f"client disconnected mid-request: {disconnect.name}")

    await no_tasks_beyond(baseline, within_s=SETTLE_S)
    # A client gone before its body arrived is counted as 499 (client closed request), not as a
    # failure; one gone after it was read was answered as usual, to no one.
    assert server.client_closed_count() == (1 if disconnect in BODY_CUT else 0)
    assert warnings_and_errors(caplog) == []
    await still_serves(server, "load-1")

    result = audit(server.stack.database_path, DEMO_ACCOUNT, ["load-0"])
    figures.checked(1, result.bad)
    assert result.bad == 0, result.describe()
    if not disconnect.body_complete:
        assert result.states == {"load-0": State.UNTOUCHED}


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
async def test_many_clients_leaving_at_once_while_others_are_served(
    server: Server, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    caplog.set_level(logging.WARNING)
    baseline = task_census()
    leavers = [f"load-{i}" for i in range(MANY)]
    served = [f"load-{i}" for i in range(MANY, MANY + NORMAL_ALONGSIDE)]
    plan = [(h, DISCONNECTS[i % len(DISCONNECTS)], i % 2 == 1) for i, h in enumerate(leavers)]

    async def served_cancel(http: aiohttp.ClientSession, handle: str) -> int:
        async with http.post(f"{server.stack.rest_url}/orders/{handle}/cancel", json={}) as response:
            assert (await response.json())["status"] == "cancelled"
            return response.status

    async with aiohttp.ClientSession(headers=server.stack.rest_auth()) as http:
        results = await asyncio.gather(
            *(leave(server.port, d, h, reset=r, store=server.store) for h, d, r in plan),
            *(served_cancel(http, h) for h in served),
        )
    assert results[len(plan) :] == [200] * len(served)
    for _, disconnect, _ in plan:
        figures.fault(f"client disconnected mid-request: {disconnect.name}")
    figures.cancels(len(served))

    await no_tasks_beyond(baseline, within_s=SETTLE_S)
    assert server.client_closed_count() == sum(1 for _, d, _ in plan if d in BODY_CUT)
    assert warnings_and_errors(caplog) == []
    await still_serves(server, served[0])

    result = audit(server.stack.database_path, DEMO_ACCOUNT, leavers + served, set(served))
    figures.checked(len(leavers) + len(served), result.bad)
    assert result.bad == 0, result.describe()
    for handle, disconnect, _ in plan:
        if not disconnect.body_complete:
            assert result.states[handle] is State.UNTOUCHED, (handle, disconnect.name)


@pytest.mark.parametrize("server", ["in-process"], indirect=True)
async def test_a_grpc_client_cancelling_mid_call_leaves_no_trace(
    server: Server, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    caplog.set_level(logging.WARNING)
    baseline = task_census()
    stub = server.stack.stub()
    requests = [orders_service_pb2.CancelOrderRequest(order_handle=f"load-{i}") for i in range(MANY)]
    calls = [stub.CancelOrder(r, metadata=server.stack.grpc_auth(), timeout=10) for r in requests]
    for request in requests:
        await asyncio.wait_for(server.store.reached(request.order_handle).wait(), timeout=10)
    for call in calls:
        call.cancel()
    for call in calls:
        with pytest.raises(asyncio.CancelledError):
            await call
    figures.fault("gRPC client cancelled its call while it was in the store", len(calls))

    await no_tasks_beyond(baseline, within_s=SETTLE_S)
    assert warnings_and_errors(caplog) == []
    result = audit(server.stack.database_path, DEMO_ACCOUNT, [r.order_handle for r in requests])
    figures.checked(len(requests), result.bad)
    assert result.bad == 0, result.describe()
    figures.tally("gRPC calls cancelled in the store: orders left untouched", result.count(State.UNTOUCHED))
    reply = await stub.CancelOrder(requests[0], metadata=server.stack.grpc_auth(), timeout=10)
    assert reply.order.status == order_pb2.ORDER_STATUS_CANCELLED
