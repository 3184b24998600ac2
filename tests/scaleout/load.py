"""REST load for the scale-out tests: requests spread over several front ends by a fixed number
of concurrent workers, every answer recorded with when it was sent and when it came back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.testing import basic

DEMO_AUTH = {"Authorization": basic("demo", "demo-secret")}
JSON = "application/json"
CLIENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any = None


@dataclass(frozen=True)
class Outcome:
    """One request and its answer: `status` is None when no HTTP answer came (`error` says why)."""

    request: Request
    front_end: int
    started: float
    finished: float
    status: int | None
    content_type: str | None = None
    body: Any = None
    error: str | None = None


@contextlib.asynccontextmanager
async def sessions(count: int, connections_each: int) -> AsyncIterator[list[aiohttp.ClientSession]]:
    """One client session per front end, each with at most `connections_each` connections."""
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    headers=DEMO_AUTH,
                    connector=aiohttp.TCPConnector(limit=connections_each),
                    timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
                )
            )
            for _ in range(count)
        ]
        yield opened


async def send(http: aiohttp.ClientSession, base_url: str, request: Request, front_end: int) -> Outcome:
    """Send one request; any answer, or the failure to get one, becomes an Outcome."""
    started = time.monotonic()
    data = None if request.body is None else orjson.dumps(request.body)
    headers = {} if data is None else {"Content-Type": JSON}
    try:
        async with http.request(request.method, base_url + request.path, data=data, headers=headers) as reply:
            raw = await reply.read()
            content_type = reply.headers.get("Content-Type", "").split(";")[0]
            body = orjson.loads(raw) if content_type == JSON else raw.decode(errors="replace")
            return Outcome(request, front_end, started, time.monotonic(), reply.status, content_type, body)
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as error:
        return Outcome(request, front_end, started, time.monotonic(), None, error=repr(error))


async def drive(
    requests: Iterator[Request],
    base_urls: Sequence[str],
    clients: Sequence[aiohttp.ClientSession],
    *,
    workers: int,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Send `requests` with `workers` concurrent workers until the iterator ends; request number n
    goes to front end n % len(base_urls), so consecutive requests go to different front ends."""
    outcomes: list[Outcome] = []
    numbered = enumerate(requests)

    async def worker() -> None:
        # One event loop thread: next() is never interleaved between workers.
        for number, request in numbered:
            front_end = number % len(base_urls)
            outcome = await send(clients[front_end], base_urls[front_end], request, front_end)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return outcomes


def cancel(handle: str) -> Request:
    return Request("POST", f"/orders/{handle}/cancel", {})


def get(handle: str) -> Request:
    return Request("GET", f"/orders/{handle}")


def track(handle: str) -> Request:
    body = {
        "worker_handle": "scaleout-worker",
        "track_mode": "on_time",
        "orders": [
            {
                "order_handle": handle,
                "destination": {"geometry": {"type": "Point", "coordinates": [-121.86, 37.33]}},
            }
        ],
    }
    return Request("POST", "/orders/track", body)
