"""The delivery worker: sends the outbox's events to each account's webhook, as the contract says.

Each process that owns a store runs one. It claims due deliveries from the store under a lease
(several processes on one database share the work, and a process that dies leaves its deliveries
to the others once the lease runs out), POSTs each as a signed JSON array of its events, and tells
the store what came of it. The store keeps every delivery's state; the worker keeps the policy:
2xx delivers, 4xx rejects (the partner said no: asking again would get the same answer), anything
else (5xx, 3xx, a timeout, no connection) is tried again `retries` times, `retry_interval_s` apart,
then the delivery has failed.

The worker never stands in a call's way: a commit only wakes it (`wake`, which the store calls
after a commit that wrote events to deliver), and it reads the outbox on its own time. It sleeps until the
store says the next delivery is due, a commit wakes it, or `poll_interval_s` passes (a commit in
another process sharing the database may wake nobody here).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import aiohttp
import orjson

from gateway.events.signing import SIGNATURE_HEADER, signature_header
from gateway.jsonmap import encode
from gateway.protos import events_pb2
from gateway.store.base import now_ms
from gateway.store.events import ClaimedDelivery, DeliveryOutcome, DeliveryState, EventStore

log = logging.getLogger(__name__)

USER_AGENT = "hypertrack-gateway"
DELIVERY_ID_HEADER = "X-HyperTrack-Delivery-Id"
RESPONSE_TEXT_CHARS = 1000
"""How much of a receiver's answer is kept (the replay's `delivery_http_response_text`)."""
_RESPONSE_BYTES = 4 * RESPONSE_TEXT_CHARS
"""Read at most this much of an answer: enough for its first characters in any UTF-8."""
MIN_WAIT_S = 0.05
"""The shortest sleep between two claims: a delivery the store calls due that another process
claimed first must not make this one spin."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How the outbox is delivered. The defaults are the contract's."""

    retries: int = 3
    """Attempts after the first, for an answer that is neither 2xx nor 4xx, or none at all."""
    retry_interval_s: float = 20.0
    """Seconds between an attempt that failed and the next."""
    timeout_s: float = 10.0
    """Seconds a receiver has to answer a POST, from the connection to the end of its answer."""
    batch_size: int = 100
    """Events of one account in one POST at most."""
    lease_s: float = 60.0
    """Seconds a claimed delivery is this process's alone. Longer than `timeout_s`, so no other
    process takes over a POST in flight; a process that dies holds its deliveries that long."""
    concurrency: int = 8
    """Deliveries in flight at once (of different accounts, or batches of one)."""
    poll_interval_s: float = 2.0
    """The longest sleep between two looks at the outbox (for commits of other processes)."""
    gather_s: float = 0.05
    """After a claim that left nothing new behind, the shortest time before the next: under load
    commits come every few milliseconds, and the events of that time then share one claim and
    their account's POSTs rather than each commit making its own. A backlog is claimed at once."""

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be at least 0")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        if self.gather_s < 0:
            raise ValueError("gather_s must be at least 0")
        if min(self.retry_interval_s, self.timeout_s, self.poll_interval_s) <= 0:
            raise ValueError("retry_interval_s, timeout_s and poll_interval_s must be positive")
        if self.lease_s <= self.timeout_s:
            raise ValueError("lease_s must be longer than timeout_s, or a POST in flight could be taken over")


class DeliveryObserver(Protocol):
    """What the worker reports, for metrics (gateway/observability/metrics.py)."""

    def webhook_attempted(self, result: str) -> None:
        """An attempt ended: `2xx`, `3xx`, `4xx`, `5xx`, `other` (a status), `timeout` or `error`."""

    def webhook_ended(self, outcome: str) -> None:
        """A delivery ended: `delivered`, `rejected` or `failed`."""


class Attempt(NamedTuple):
    """What one POST came to: the receiver's status and the start of its answer, or the error."""

    status: int | None
    text: str | None
    error: str | None = None
    """Why there is no status: `timeout`, or the kind of connection error (never the URL)."""

    @property
    def result(self) -> str:
        """The attempt's metric label."""
        if self.status is None:
            return "timeout" if self.error == "timeout" else "error"
        if 200 <= self.status < 600:
            return f"{self.status // 100}xx"
        return "other"


ENDED = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.REJECTED: "rejected",
    DeliveryState.FAILED: "failed",
}


def outcome_of(
    attempt: Attempt, attempts_before: int, settings: WebhookSettings, now_ms: int
) -> DeliveryOutcome:
    """What `attempt` (after `attempts_before` others of the same delivery) makes of the delivery."""
    status = attempt.status
    if status is not None and 200 <= status < 300:
        state = DeliveryState.DELIVERED
    elif status is not None and 400 <= status < 500:
        state = DeliveryState.REJECTED
    elif attempts_before < settings.retries:
        next_attempt_ms = now_ms + round(settings.retry_interval_s * 1000)
        return DeliveryOutcome(DeliveryState.PENDING, status, attempt.text, next_attempt_ms)
    else:
        state = DeliveryState.FAILED
    return DeliveryOutcome(state, status, attempt.text)


def delivery_body(bodies: tuple[bytes, ...]) -> bytes:
    """The POST's body: the events as the contract's JSON array, oldest first (the claim's order)."""
    return orjson.dumps([encode(events_pb2.OrderEvent.FromString(body)) for body in bodies])


def origin(url: str) -> str:
    """`scheme://host:port` of `url`: what a log line may say of a partner's URL (its path and
    query may carry a token, its user part a password)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{host}:{port}"


def _error_kind(error: BaseException) -> str:
    """A connection error in words that cannot carry the URL: its type and the system's reason."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return type(error).__name__


async def _start_of_answer(response: aiohttp.ClientResponse) -> str | None:
    """The first characters of the receiver's answer; what arrived of it if it broke off."""
    data = b""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        while len(data) < _RESPONSE_BYTES:
            chunk = await response.content.read(_RESPONSE_BYTES - len(data))
            if not chunk:
                break
            data += chunk
    return data.decode("utf-8", errors="replace")[:RESPONSE_TEXT_CHARS]


def new_owner() -> str:
    """A lease owner unique to this process: host, pid, and a random part (a pid comes back)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class DeliveryWorker:
    """Delivers `store`'s outbox; `start` on the event loop, `stop` before the store closes."""

    def __init__(
        self,
        store: EventStore,
        settings: WebhookSettings,
        *,
        observer: DeliveryObserver | None = None,
        owner: str | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._settings = settings
        self._observer = observer
        self.owner = owner or new_owner()
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._settings.concurrency),
            headers={"User-Agent": USER_AGENT},
            # One session serves every account: no partner's cookie may reach another.
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
        )
        self._store.on_deliveries_pending(self.wake)
        self._loop = asyncio.create_task(self._run(), name="webhook delivery")

    def wake(self) -> None:
        """Look at the outbox now (events were committed)."""
        self._wake.set()

    async def stop(self, grace_s: float) -> None:
        """Claim no more; let the POSTs in flight finish within `grace_s`, then give the store back
        what is still held, unsent, for another process or the next start to send."""
        deadline = time.monotonic() + grace_s
        self._stopping.set()
        self._wake.set()
        if self._loop is not None:
            # It ends once the store call it may be in returns; one that hangs is cut off.
            done, _ = await asyncio.wait([self._loop], timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                self._loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop
        tasks = list(self._in_flight.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        try:
            released = await self._store.release_deliveries(self.owner)
        except Exception:
            # The leases run out on their own; another process or the next start sends them.
            log.exception("webhook delivery: could not release the deliveries held at shutdown")
        else:
            if released:
                log.info("webhook delivery: released unsent deliveries", extra={"deliveries": released})
        if self._session is not None:
            await self._session.close()

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self._wake.clear()
            claimed_at = loop.time()
            drained = False
            try:
                wait_s, drained = await self._claim_and_schedule()
            except Exception:
                # A database that is down must not end delivery for the life of the process.
                log.exception("webhook delivery: the store failed; trying again later")
                wait_s = self._settings.poll_interval_s
            if self._stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()
            rest = claimed_at + self._settings.gather_s - loop.time() if drained else 0.0
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(rest):
                        await self._stopping.wait()

    async def _claim_and_schedule(self) -> tuple[float, bool]:
        """Claim what is due, as far as there is room; how long to sleep before looking again, and
        whether the claim took everything there was to take."""
        settings = self._settings
        room = settings.concurrency - len(self._in_flight)
        if room <= 0:
            return settings.poll_interval_s, False  # a finished delivery wakes the loop
        claimed = await self._store.claim_deliveries(
            self.owner,
            now_ms=self._clock(),
            lease_ms=round(settings.lease_s * 1000),
            max_deliveries=room,
            max_events=settings.batch_size,
        )
        for delivery in claimed:
            if self._stopping.is_set():
                break  # released by `stop`
            if delivery.delivery_id in self._in_flight:
                continue  # its lease ran out mid-POST and came back here: the POST goes on
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook {delivery.delivery_id}")
            self._in_flight[delivery.delivery_id] = task
            task.add_done_callback(functools.partial(self._finished, delivery.delivery_id))
        if len(claimed) >= room:
            full = len(self._in_flight) >= settings.concurrency
            return (settings.poll_interval_s if full else 0.0), False
        due_ms = await self._store.next_delivery_due_ms()
        if due_ms is None:
            return settings.poll_interval_s, True
        return min(settings.poll_interval_s, max(MIN_WAIT_S, (due_ms - self._clock()) / 1000)), True

    def _finished(self, delivery_id: str, _: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        self._wake.set()  # room for another

    # --- one delivery ---------------------------------------------------------------------------

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        try:
            body = delivery_body(delivery.bodies)
            attempt = await self._post(delivery, body)
            outcome = outcome_of(attempt, delivery.attempts, self._settings, self._clock())
            if self._observer is not None:
                self._observer.webhook_attempted(attempt.result)
            if outcome.state is not DeliveryState.DELIVERED:
                self._log_failure(delivery, attempt, outcome)
            if not await self._store.finish_delivery(self.owner, delivery.delivery_id, outcome):
                log.warning(
                    "webhook delivery: the lease ran out before the outcome was recorded; another"
                    " process sends it again",
                    extra={"delivery_id": delivery.delivery_id},
                )
                return
            ended = ENDED.get(outcome.state)
            if ended is not None and self._observer is not None:
                self._observer.webhook_ended(ended)
        except Exception:
            # Not recorded: the lease runs out and the delivery is sent again (at least once).
            log.exception("webhook delivery failed unexpectedly", extra={"delivery_id": delivery.delivery_id})

    async def _post(self, delivery: ClaimedDelivery, body: bytes) -> Attempt:
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            DELIVERY_ID_HEADER: delivery.delivery_id,
            SIGNATURE_HEADER: signature_header(delivery.secret, body),
        }
        try:
            async with self._session.post(
                delivery.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return Attempt(response.status, await _start_of_answer(response))
        except TimeoutError:
            return Attempt(None, None, "timeout")
        except (aiohttp.ClientError, OSError) as error:
            return Attempt(None, None, _error_kind(error))

    def _log_failure(self, delivery: ClaimedDelivery, attempt: Attempt, outcome: DeliveryOutcome) -> None:
        """One warning per attempt that did not deliver: what, to whom, why, and what comes next."""
        if outcome.state is DeliveryState.PENDING:
            then = f"retry in {self._settings.retry_interval_s:g} s"
        else:
            then = ENDED[outcome.state]
        log.warning(
            "webhook delivery attempt not delivered",
            extra={
                "delivery_id": delivery.delivery_id,
                "event_ids": list(delivery.event_ids),
                "account_id": delivery.account_id,
                "url": origin(delivery.url),
                "attempt": delivery.attempts + 1,
                "http_status": attempt.status,
                "error": attempt.error,
                "then": then,
            },
        )
