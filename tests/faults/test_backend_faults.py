"""The REST front end when its gRPC backend fails: down (never started, or SIGKILLed) and slower
than the caller's deadline.

- Down: every cancel is answered 503 with the contract's error body and a message that names no
  address and no gRPC internals, at once (not after the call's 10 s deadline); the front end keeps
  trying to reconnect about every second, so when the server is back (on the same port) the same
  front end answers 200 again by itself, without a restart.
- Slow: with `Grpc-Timeout: 200m`, a backend whose store takes longer than that is answered 504
  within about the deadline, for both REST backends; the abandoned call is cancelled rather than
  left to change the order later, and the order is untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.store.sqlite import SqliteStore
from gateway.testing import GatewayStack, basic
from tests.faults.figures import Figures
from tests.faults.harness import FaultyStore, eventually, processes
from tests.faults.ledger import State, audit

DEMO_AUTH = {"Authorization": basic("demo", "demo-secret")}
DOWN_S = 5.0  # long enough that grpc's default reconnect back-off (1 s, 1.6 s, 2.56 s...) would show
FAST_503_S = 1.0  # the call's deadline is the default 10 s; a 503 must not wait for it
RECONNECT_GAP_S = 1.7  # the front end's longest reconnect back-off is 1 s, plus 20 % jitter and noise
RESUME_WITHIN_S = 3.0  # from the server's banner to the first 200
INTERNALS = ("127.0.0.1", "ipv4", "grpc", "tcp", "connect", "socket", "subchannel", "errno", "refused")
STALL_S = 2.0
DEADLINE_S = 0.2


def assert_backend_unavailable(status: int, headers: dict[str, str], raw: bytes, port: int) -> None:
    """A 503 with the contract's error body and a clear message that gives nothing away."""
    assert status == 503, raw
    assert headers["Content-Type"] == "application/json"
    assert headers.get("X-Request-ID")
    body = json.loads(raw)
    assert set(body) == {"detail", "message"}
    assert body["detail"] == {"reason": "BACKEND_UNAVAILABLE"}
    message = body["message"].lower()
    assert "unavailable" in message and "retry" in message
    for internal in (*INTERNALS, str(port)):
        assert internal not in message, f"{internal!r} in {body['message']!r}"


@dataclass
class FrontEnd:
    """An `http` front end whose backend is `127.0.0.1:port`, called by the test."""

    http: aiohttp.ClientSession
    url: str
    port: int
    figures: Figures

    async def cancel(self, handle: str) -> tuple[int, dict[str, str], bytes, float]:
        """Status, headers, raw body and how long the answer took."""
        started = time.monotonic()
        async with self.http.post(f"{self.url}/orders/{handle}/cancel", json={}) as response:
            raw = await response.read()
            return response.status, dict(response.headers), raw, time.monotonic() - started

    async def unavailable(self, handle: str) -> float:
        """Cancel `handle`: it must be a clean 503, and come at once; how long it took."""
        status, headers, raw, elapsed = await self.cancel(handle)
        assert_backend_unavailable(status, headers, raw, self.port)
        assert elapsed < FAST_503_S, f"503 after {elapsed:.2f} s"
        self.figures.timing("503 with the gRPC backend down", elapsed)
        return elapsed

    async def resumes(self, handle: str) -> None:
        """The backend is back: a cancel of `handle` answers 200 within RESUME_WITHIN_S."""
        back_at = time.monotonic()

        async def cancelled() -> dict[str, object] | None:
            status, headers, raw, _ = await self.cancel(handle)
            if status != 200:
                assert_backend_unavailable(status, headers, raw, self.port)
                return None
            body: dict[str, object] = json.loads(raw)
            return body

        body = await eventually(cancelled, within_s=RESUME_WITHIN_S)
        self.figures.timing("first 200 after the gRPC backend came back", time.monotonic() - back_at)
        assert body["status"] == "cancelled"


async def test_backend_down_is_503_at_once_and_the_front_end_resumes_by_itself(
    tmp_path: Path, figures: Figures
) -> None:
    # The port the front end is given holds a listener that takes each connection and drops it at
    # once (no HTTP/2): the backend is down, and every attempt to reconnect is seen.
    attempts: list[float] = []

    def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.transport.abort()

    listener = await asyncio.start_server(drop, "127.0.0.1", 0)
    port: int = listener.sockets[0].getsockname()[1]
    database = f"sqlite:///{tmp_path / 'orders.db'}"
    try:
        async with processes(tmp_path) as started, aiohttp.ClientSession(headers=DEMO_AUTH) as http:
            process = await started.start("http", "--http-port", "0", "--backend", f"127.0.0.1:{port}")
            front = FrontEnd(http, process.rest_url, port, figures)

            # Down: a clean 503 at once, every time.
            down_until, refused = time.monotonic() + DOWN_S, 0
            while time.monotonic() < down_until:
                await front.unavailable("order-3")
                refused += 1
            figures.fault("gRPC backend not running: REST cancel answered 503", refused)

            # All the while it kept trying to reconnect, never backing off longer than about a second.
            gaps = [b - a for a, b in itertools.pairwise(attempts)]
            gaps.append(time.monotonic() - attempts[-1])
            assert max(gaps) < RECONNECT_GAP_S, [round(g, 2) for g in gaps]

            # Back on the same port: the same front end answers 200 by itself.
            listener.close()
            await listener.wait_closed()
            server = await started.start("grpc", "--grpc-port", str(port), "--database", database, "--demo")
            await front.resumes("order-3")

            # Killed under the front end's feet: 503 at once again, then back after a restart.
            server.signal(signal.SIGKILL)
            assert server.wait(timeout=10) == -signal.SIGKILL
            for handle in ("order-4", "order-5"):
                await front.unavailable(handle)
            figures.fault("gRPC backend SIGKILLed: REST cancel answered 503", 2)
            await started.start("grpc", "--grpc-port", str(port), "--database", database, "--demo")
            await front.resumes("order-4")
            assert process.stop() == 0
            assert not [line for line in process.stderr_lines if '"level":"error"' in line]
    finally:
        listener.close()
    # Answered 200: cancelled; answered 503: untouched.
    result = audit(tmp_path / "orders.db", "demo", ["order-3", "order-4", "order-5"], {"order-3", "order-4"})
    figures.checked(3, result.bad)
    assert result.states == {
        "order-3": State.CANCELLED,
        "order-4": State.CANCELLED,
        "order-5": State.UNTOUCHED,
    }


@pytest.mark.parametrize("backend", ["in-process", "remote"])
async def test_backend_slower_than_the_deadline_is_504_and_leaves_the_order(
    tmp_path: Path, backend: str, figures: Figures
) -> None:
    store = FaultyStore(await SqliteStore.open(tmp_path / "gateway.db"))
    async with (
        GatewayStack.start(tmp_path, backend=backend, store=store) as stack,  # type: ignore[arg-type]
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
    ):
        store.stall_s = STALL_S
        started = time.monotonic()
        async with http.post(
            f"{stack.rest_url}/orders/order-3/cancel", json={}, headers={"Grpc-Timeout": "200m"}
        ) as response:
            body = await response.json()
            status = response.status
        elapsed = time.monotonic() - started
        figures.fault(f"backend slower than the deadline ({backend}): answered 504")
        figures.timing("504 with a 200 ms deadline", elapsed)
        assert status == 504, body
        assert body == {
            "detail": {"reason": "DEADLINE_EXCEEDED"},
            "message": "the order service did not answer within the deadline",
        }
        assert DEADLINE_S - 0.01 <= elapsed < DEADLINE_S + 0.8

        # The abandoned call was cancelled, not left to cancel the order after the 504.
        [stalled] = store.stalls
        assert await asyncio.wait_for(stalled, STALL_S + 5) == "cancelled"
        result = audit(stack.database_path, "demo", ["order-3"])
        figures.checked(1, result.bad)
        assert result.states == {"order-3": State.UNTOUCHED}

        # Once the backend is fast again, the same cancel goes through.
        store.stall_s = 0
        async with http.post(f"{stack.rest_url}/orders/order-3/cancel", json={}) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "cancelled"
