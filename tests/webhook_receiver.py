"""A partner's webhook receiver for tests: a real aiohttp server on 127.0.0.1 that records every
request and answers as the test scripts it (a status per request in turn, or no answer at all
until released). Tests wait on what arrived, never on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.events.signing import verify


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    arrived: float
    """time.monotonic() when the whole request had arrived."""

    @property
    def delivery_id(self) -> str:
        return self.headers["X-HyperTrack-Delivery-Id"]

    @property
    def events(self) -> list[dict[str, Any]]:
        events = orjson.loads(self.body)
        assert isinstance(events, list), events
        return events

    def signed_by(self, secret: str) -> bool:
        return verify(secret, self.headers.get("X-HyperTrack-Signature", ""), self.body)


@dataclass
class WebhookReceiver:
    """`url` takes POSTs; `requests` is everything that arrived, in order.

    `statuses` are the answers to the next requests, in turn (then `default_status`); a status of
    None holds that request unanswered until `release()` (or forever: a receiver that never
    answers)."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int | None] = field(default_factory=list)
    default_status: int | None = 200
    answer_text: str = "ok"
    held: int = 0
    """Requests waiting unanswered now."""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(request.method, request.path_qs, request.headers, body, time.monotonic())
        status = self.statuses.pop(0) if self.statuses else self.default_status
        async with self._changed:
            self.requests.append(received)
            if status is None:
                self.held += 1
            self._changed.notify_all()
        if status is None:
            try:
                await self._released.wait()
            finally:
                async with self._changed:
                    self.held -= 1
                    self._changed.notify_all()
            status = 200
        return web.Response(status=status, text=self.answer_text)

    def release(self) -> None:
        """Answer every held request (200), and those held from now on at once."""
        self._released.set()

    async def until(self, check: Callable[[WebhookReceiver], bool], *, within_s: float = 20.0) -> None:
        """Wait until `check(self)` holds, re-checked at each request; fail after `within_s`."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: check(self)), within_s)
            except TimeoutError:
                raise AssertionError(f"not within {within_s} s; received {self.describe()}") from None

    async def until_count(self, count: int, *, within_s: float = 20.0) -> list[Received]:
        await self.until(lambda r: len(r.requests) >= count, within_s=within_s)
        return self.requests[:count]

    def by_delivery(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = {}
        for request in self.requests:
            grouped.setdefault(request.delivery_id, []).append(request)
        return grouped

    def describe(self) -> str:
        return f"{len(self.requests)} requests: " + ", ".join(
            f"{r.method} {r.path} {r.headers.get('X-HyperTrack-Delivery-Id')}" for r in self.requests[:10]
        )


@contextlib.asynccontextmanager
async def webhook_receiver(path: str = "/hooks/orders?token=abc") -> AsyncIterator[WebhookReceiver]:
    """A receiver listening on a free loopback port; its URL ends in `path`."""
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}{path}"
    try:
        yield receiver
    finally:
        receiver.release()
        await runner.cleanup()
