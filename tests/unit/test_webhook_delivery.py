"""The delivery worker's policy and manners against a real receiver, over a small in-memory outbox
(the real stores' delivery is covered by tests/e2e/test_webhooks_delivery.py and
tests/faults/test_webhook_faults.py): what it POSTs, what each answer makes of the delivery, what
it logs, how it stops."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from gateway.calls.events import order_event
from gateway.events.delivery import (
    Attempt,
    DeliveryWorker,
    WebhookSettings,
    origin,
    outcome_of,
)
from gateway.events.signing import signature_header, verify
from gateway.observability.metrics import Metrics
from gateway.protos import order_pb2
from gateway.store.events import (
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryState,
    OutboxStats,
    Webhook,
)
from tests.webhook_receiver import WebhookReceiver, webhook_receiver

SECRET = "whsec_test-secret"
FAST = WebhookSettings(retries=2, retry_interval_s=0.05, timeout_s=1.0, lease_s=5.0, poll_interval_s=0.2)


# --- an outbox in memory ------------------------------------------------------------------------


@dataclass
class _Delivery:
    account_id: str
    event_ids: tuple[int, ...]
    bodies: tuple[bytes, ...]
    attempts: int = 0
    state: DeliveryState = DeliveryState.PENDING
    next_attempt_ms: int = 0
    owner: str | None = None
    lease_until_ms: int = 0
    outcomes: list[DeliveryOutcome] = field(default_factory=list)


@dataclass
class MemoryOutbox:
    """The EventStore's delivery side, in memory, as its docstrings say it behaves."""

    webhooks: dict[str, Webhook] = field(default_factory=dict)
    new_events: list[tuple[int, str, bytes]] = field(default_factory=list)
    deliveries: dict[str, _Delivery] = field(default_factory=dict)
    listeners: list[Callable[[], None]] = field(default_factory=list)
    fail_claims: int = 0
    released: int = 0
    _next_event_id: int = 1
    claimed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by every claim."""

    def subscribe(self, account_id: str, url: str) -> None:
        self.webhooks[account_id] = Webhook(account_id, url, SECRET, 0)

    def commit_event(self, account_id: str, handle: str = "order-1") -> int:
        order = order_pb2.Order(order_handle=handle, status=order_pb2.ORDER_STATUS_CANCELLED)
        event = order_event(account_id, order, 1_700_000_000_000_000, 1_700_000_000_000_001)
        event_id = self._next_event_id
        self._next_event_id += 1
        self.new_events.append((event_id, account_id, event.SerializeToString()))
        for listener in self.listeners:
            listener()
        return event_id

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    def on_deliveries_pending(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    async def claim_deliveries(
        self, owner: str, *, now_ms: int, lease_ms: int, max_deliveries: int, max_events: int
    ) -> list[ClaimedDelivery]:
        self.claimed.set()
        if self.fail_claims:
            self.fail_claims -= 1
            raise OSError("the database is down")
        claimed = []
        for delivery_id, d in self.deliveries.items():
            if len(claimed) == max_deliveries:
                break
            due = d.state is DeliveryState.PENDING and d.next_attempt_ms <= now_ms
            if due and (d.owner is None or d.lease_until_ms <= now_ms):
                claimed.append(delivery_id)
        while self.new_events and len(claimed) < max_deliveries:
            account = self.new_events[0][1]
            batch = [e for e in self.new_events if e[1] == account][:max_events]
            self.new_events = [e for e in self.new_events if e not in batch]
            if account not in self.webhooks:
                continue  # UNSUBSCRIBED
            delivery_id = f"d{len(self.deliveries) + 1}"
            self.deliveries[delivery_id] = _Delivery(
                account, tuple(e[0] for e in batch), tuple(e[2] for e in batch)
            )
            claimed.append(delivery_id)
        out = []
        for delivery_id in claimed:
            d = self.deliveries[delivery_id]
            d.owner, d.lease_until_ms = owner, now_ms + lease_ms
            hook = self.webhooks[d.account_id]
            out.append(
                ClaimedDelivery(
                    delivery_id, d.account_id, hook.url, hook.secret, d.attempts, d.event_ids, d.bodies
                )
            )
        return out

    async def finish_delivery(self, owner: str, delivery_id: str, outcome: DeliveryOutcome) -> bool:
        d = self.deliveries[delivery_id]
        if d.owner != owner:
            return False
        d.attempts += 1
        d.state = outcome.state
        d.next_attempt_ms = outcome.next_attempt_ms or 0
        d.owner = None
        d.outcomes.append(outcome)
        return True

    async def release_deliveries(self, owner: str) -> int:
        mine = [d for d in self.deliveries.values() if d.owner == owner]
        for d in mine:
            d.owner = None
        self.released += len(mine)
        return len(mine)

    async def next_delivery_due_ms(self) -> int | None:
        now = time.time_ns() // 1_000_000
        due = [now for _ in self.new_events[:1]]
        for d in self.deliveries.values():
            if d.state is DeliveryState.PENDING:
                due.append(d.lease_until_ms if d.owner is not None else d.next_attempt_ms)
        return min(due, default=None)

    async def outbox_stats(self) -> OutboxStats:
        pending = len(self.new_events) + sum(
            len(d.event_ids) for d in self.deliveries.values() if d.state is DeliveryState.PENDING
        )
        return OutboxStats(pending, 1_000 if pending else None)

    def ended(self, state: DeliveryState) -> list[_Delivery]:
        return [d for d in self.deliveries.values() if d.state is state]


@dataclass
class Running:
    outbox: MemoryOutbox
    receiver: WebhookReceiver
    worker: DeliveryWorker
    metrics: Metrics


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async with webhook_receiver() as receiver:
        outbox = MemoryOutbox()
        outbox.subscribe("acme", receiver.url)
        metrics = Metrics()
        worker = DeliveryWorker(outbox, FAST, observer=metrics, owner="test-owner")  # type: ignore[arg-type]
        worker.start()
        try:
            yield Running(outbox, receiver, worker, metrics)
        finally:
            await worker.stop(0.5)


async def until_ended(outbox: MemoryOutbox, count: int, *, within_s: float = 10.0) -> None:
    """Wait for `count` deliveries to end (the worker records them after the receiver's answer)."""
    deadline = time.monotonic() + within_s
    while sum(d.state is not DeliveryState.PENDING for d in outbox.deliveries.values()) < count:
        assert time.monotonic() < deadline, f"not within {within_s} s: {outbox.deliveries}"
        await asyncio.sleep(0.01)


def metric(metrics: Metrics, name: str, labels: tuple[str, ...]) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and tuple(sample.labels.values()) == labels:
                return float(sample.value)
    return 0.0


# --- the signature -------------------------------------------------------------------------------


def test_a_signature_verifies_only_with_its_secret_body_and_time() -> None:
    body = b'[{"type":"order"}]'
    header = signature_header(SECRET, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify("whsec_other", header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)  # stale: a replay
    for malformed in ("", "v1=00", "t=x,v1=00", "t=1700000000", "t=1700000000,v1=é"):
        assert not verify(SECRET, malformed, body, now=1_700_000_000)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b"[]"
    expected = hmac.new(SECRET.encode(), b"1700000000.[]", hashlib.sha256).hexdigest()
    assert signature_header(SECRET, body, timestamp=1_700_000_000) == f"t=1700000000,v1={expected}"


# --- the policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "before", "state"),
    [
        (Attempt(200, "ok"), 0, DeliveryState.DELIVERED),
        (Attempt(204, ""), 3, DeliveryState.DELIVERED),
        (Attempt(400, "bad"), 0, DeliveryState.REJECTED),
        (Attempt(410, "gone"), 0, DeliveryState.REJECTED),
        (Attempt(500, "oops"), 0, DeliveryState.PENDING),
        (Attempt(302, ""), 1, DeliveryState.PENDING),
        (Attempt(None, None, "timeout"), 1, DeliveryState.PENDING),
        (Attempt(None, None, "ClientConnectorError"), 2, DeliveryState.FAILED),
        (Attempt(503, "busy"), 2, DeliveryState.FAILED),
    ],
)
def test_what_an_answer_makes_of_a_delivery(attempt: Attempt, before: int, state: DeliveryState) -> None:
    outcome = outcome_of(attempt, before, FAST, now_ms=1_000)
    assert outcome.state is state
    assert (outcome.http_status, outcome.response_text) == (attempt.status, attempt.text)
    assert outcome.next_attempt_ms == (1_050 if state is DeliveryState.PENDING else None)


def test_settings_refuse_a_lease_a_post_could_outlive() -> None:
    with pytest.raises(ValueError, match="lease_s must be longer than timeout_s"):
        WebhookSettings(timeout_s=10, lease_s=10)


def test_a_log_line_names_only_the_urls_origin() -> None:
    assert origin("https://user:pw@hooks.example.com/p/a?token=s3cret") == "https://hooks.example.com:443"
    assert origin("http://[::1]:8080/x") == "http://[::1]:8080"
    assert origin("http://127.0.0.1/x#frag") == "http://127.0.0.1:80"


# --- the worker, against a real receiver ---------------------------------------------------------


async def test_a_delivery_is_a_signed_json_array_with_its_id(running: Running) -> None:
    # Both committed before the worker runs again: one delivery of the two.
    first = running.outbox.commit_event("acme", "order-1")
    second = running.outbox.commit_event("acme", "order-2")
    [request] = await running.receiver.until_count(1)
    await until_ended(running.outbox, 1)
    assert request.method == "POST" and request.path == "/hooks/orders?token=abc"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "hypertrack-gateway"
    assert request.signed_by(SECRET)
    [delivered] = running.outbox.ended(DeliveryState.DELIVERED)
    assert running.outbox.deliveries[request.delivery_id] is delivered
    events = request.events
    assert [e["data"]["order_handle"] for e in events] == ["order-1", "order-2"]
    assert {e["type"] for e in events} == {"order"} and {e["data"]["value"] for e in events} == {"cancelled"}
    assert {e["account_id"] for e in events} == {"acme"}
    assert delivered.event_ids == (first, second)
    assert delivered.outcomes[0].response_text == "ok"


async def test_pending_events_of_one_account_go_in_one_post_oldest_first() -> None:
    async with webhook_receiver() as receiver:
        outbox = MemoryOutbox()
        outbox.subscribe("acme", receiver.url)
        ids = [outbox.commit_event("acme", f"order-{i}") for i in range(5)]
        worker = DeliveryWorker(outbox, dataclasses.replace(FAST, batch_size=3))  # type: ignore[arg-type]
        worker.start()
        try:
            await receiver.until_count(2)
            await until_ended(outbox, 2)
        finally:
            await worker.stop(0.5)
    bodies = sorted((r.events for r in receiver.requests), key=len, reverse=True)
    assert [[e["data"]["order_handle"] for e in body] for body in bodies] == [
        ["order-0", "order-1", "order-2"],
        ["order-3", "order-4"],
    ]
    assert sorted(i for d in outbox.deliveries.values() for i in d.event_ids) == ids


async def test_commits_soon_after_a_claim_that_took_everything_share_the_next_one() -> None:
    async with webhook_receiver() as receiver:
        outbox = MemoryOutbox()
        outbox.subscribe("acme", receiver.url)
        worker = DeliveryWorker(outbox, dataclasses.replace(FAST, gather_s=0.5))  # type: ignore[arg-type]
        worker.start()
        try:
            await outbox.claimed.wait()  # its first claim found the outbox empty
            for i in range(3):
                outbox.commit_event("acme", f"order-{i}")  # each commit wakes the worker
                await asyncio.sleep(0.02)  # commits some milliseconds apart, as under load
            await until_ended(outbox, 1)
        finally:
            await worker.stop(0.5)
    [post] = receiver.requests
    assert [e["data"]["order_handle"] for e in post.events] == ["order-0", "order-1", "order-2"]


async def test_deliveries_of_different_accounts_run_at_once() -> None:
    async with webhook_receiver() as receiver:
        outbox = MemoryOutbox()
        for account in ("acme", "globex"):
            outbox.subscribe(account, receiver.url)
        receiver.statuses = [None, None]  # both held: the second arrives while the first waits
        outbox.commit_event("acme")
        outbox.commit_event("globex")
        worker = DeliveryWorker(outbox, FAST)  # type: ignore[arg-type]
        worker.start()
        try:
            await receiver.until(lambda r: r.held == 2)
            receiver.release()
            await until_ended(outbox, 2)
        finally:
            await worker.stop(0.5)
    assert {r.events[0]["account_id"] for r in receiver.requests} == {"acme", "globex"}


async def test_500_then_200_is_the_same_delivery_twice(running: Running) -> None:
    running.receiver.statuses = [500]
    running.outbox.commit_event("acme")
    first, second = await running.receiver.until_count(2)
    await until_ended(running.outbox, 1)
    assert first.delivery_id == second.delivery_id and first.body == second.body
    [delivery] = running.outbox.ended(DeliveryState.DELIVERED)
    assert [o.state for o in delivery.outcomes] == [DeliveryState.PENDING, DeliveryState.DELIVERED]
    assert delivery.outcomes[0].http_status == 500
    assert metric(running.metrics, "hypertrack_gateway_webhook_attempts_total", ("5xx",)) == 1
    assert metric(running.metrics, "hypertrack_gateway_webhook_attempts_total", ("2xx",)) == 1
    assert metric(running.metrics, "hypertrack_gateway_webhook_deliveries_total", ("delivered",)) == 1


async def test_a_4xx_ends_the_delivery_without_a_retry(running: Running) -> None:
    running.receiver.statuses = [422]
    running.outbox.commit_event("acme")
    await running.receiver.until_count(1)
    await until_ended(running.outbox, 1)
    [delivery] = running.outbox.ended(DeliveryState.REJECTED)
    assert delivery.attempts == 1 and delivery.outcomes[0].http_status == 422
    running.outbox.commit_event("acme", "order-2")  # the worker is still at work: a new event goes
    await running.receiver.until_count(2)
    first, second = running.receiver.requests
    assert first.delivery_id != second.delivery_id
    assert metric(running.metrics, "hypertrack_gateway_webhook_deliveries_total", ("rejected",)) == 1


async def test_a_redirect_is_not_followed_but_retried(running: Running) -> None:
    running.receiver.statuses = [302, 302, 302]
    running.receiver.answer_text = "moved"
    running.outbox.commit_event("acme")
    await running.receiver.until_count(3)
    await until_ended(running.outbox, 1)
    [delivery] = running.outbox.ended(DeliveryState.FAILED)
    assert delivery.attempts == 3  # the first and FAST's 2 retries
    assert {r.path for r in running.receiver.requests} == {"/hooks/orders?token=abc"}
    assert metric(running.metrics, "hypertrack_gateway_webhook_deliveries_total", ("failed",)) == 1


async def test_no_answer_is_retried_then_failed_and_each_attempt_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = dataclasses.replace(FAST, timeout_s=0.2, lease_s=1.0, retry_interval_s=0.05)
    async with webhook_receiver() as receiver:
        receiver.default_status = None  # never answers
        outbox = MemoryOutbox()
        outbox.webhooks["acme"] = Webhook("acme", receiver.url.replace("http://", "http://u:pw@"), SECRET, 0)
        event_id = outbox.commit_event("acme")
        worker = DeliveryWorker(outbox, settings)  # type: ignore[arg-type]
        with caplog.at_level(logging.WARNING, logger="gateway.events.delivery"):
            worker.start()
            try:
                await receiver.until_count(3)
                await until_ended(outbox, 1)
            finally:
                await worker.stop(0.5)
    [delivery] = outbox.ended(DeliveryState.FAILED)
    assert delivery.attempts == 3 and [o.http_status for o in delivery.outcomes] == [None] * 3
    assert len(receiver.requests) == 3
    lines = [r for r in caplog.records if r.name == "gateway.events.delivery"]
    assert [r.levelno for r in lines] == [logging.WARNING] * 3
    assert [(r.attempt, r.then) for r in lines] == [
        (1, "retry in 0.05 s"),
        (2, "retry in 0.05 s"),
        (3, "failed"),
    ]  # type: ignore[attr-defined]
    for record in lines:
        fields = record.__dict__
        assert fields["event_ids"] == [event_id] and fields["account_id"] == "acme"
        assert fields["error"] == "timeout" and fields["delivery_id"] == receiver.requests[0].delivery_id
        assert fields["url"] == receiver.url.split("/hooks")[0]
        text = record.getMessage() + repr(fields)
        assert SECRET not in text and "pw" not in text and "token" not in text


async def test_a_refused_connection_is_retried(running: Running) -> None:
    running.outbox.webhooks["acme"] = Webhook("acme", "http://127.0.0.1:9/nothing-listens", SECRET, 0)
    running.outbox.commit_event("acme")
    await until_ended(running.outbox, 1)
    [delivery] = running.outbox.ended(DeliveryState.FAILED)
    assert delivery.attempts == 3 and delivery.outcomes[-1].http_status is None
    assert metric(running.metrics, "hypertrack_gateway_webhook_attempts_total", ("error",)) == 3


async def test_only_the_start_of_an_answer_is_kept(running: Running) -> None:
    running.receiver.answer_text = "é" * 5000
    running.outbox.commit_event("acme")
    await until_ended(running.outbox, 1)
    [delivery] = running.outbox.ended(DeliveryState.DELIVERED)
    assert delivery.outcomes[0].response_text == "é" * 1000


async def test_a_store_that_fails_does_not_end_delivery(running: Running) -> None:
    running.outbox.fail_claims = 2
    running.outbox.commit_event("acme")
    await running.receiver.until_count(1)
    await until_ended(running.outbox, 1)
    assert running.outbox.ended(DeliveryState.DELIVERED)


async def test_stop_lets_a_post_finish_within_the_grace() -> None:
    async with webhook_receiver() as receiver:
        outbox = MemoryOutbox()
        outbox.subscribe("acme", receiver.url)
        receiver.statuses = [None]
        outbox.commit_event("acme")
        worker = DeliveryWorker(outbox, FAST)  # type: ignore[arg-type]
        worker.start()
        await receiver.until(lambda r: r.held == 1)
        stopping = asyncio.create_task(worker.stop(5.0))
        await asyncio.sleep(0)  # the worker has stopped claiming; the POST is still held
        outbox.commit_event("acme", "order-2")
        receiver.release()
        await stopping
    assert len(receiver.requests) == 1  # nothing claimed after the stop
    [delivery] = outbox.ended(DeliveryState.DELIVERED)
    assert delivery.attempts == 1 and outbox.released == 0


async def test_stop_releases_a_post_the_grace_did_not_see_answered() -> None:
    async with webhook_receiver() as receiver:
        outbox = MemoryOutbox()
        outbox.subscribe("acme", receiver.url)
        receiver.default_status = None
        outbox.commit_event("acme")
        worker = DeliveryWorker(outbox, FAST)  # type: ignore[arg-type]
        worker.start()
        await receiver.until(lambda r: r.held == 1)
        await worker.stop(0.1)
        [delivery] = outbox.deliveries.values()
        # Given back without an attempt counted: another process, or the next start, sends it.
        assert (delivery.state, delivery.owner, delivery.attempts) == (DeliveryState.PENDING, None, 0)
        assert outbox.released == 1 and worker.in_flight == 0


async def test_the_metrics_show_the_outbox_and_the_watchers() -> None:
    outbox = MemoryOutbox()
    metrics = Metrics()
    metrics.watch_outbox(outbox.outbox_stats)
    metrics.watch_watchers(lambda: 3)
    text = (await metrics.scrape())[0].decode()
    assert "hypertrack_gateway_webhook_outbox_pending_events 0.0" in text
    assert "hypertrack_gateway_webhook_outbox_oldest_pending_age_seconds 0.0" in text
    assert "hypertrack_gateway_event_watchers 3.0" in text
    outbox.subscribe("acme", "http://127.0.0.1:9/")
    outbox.commit_event("acme")
    text = (await metrics.scrape())[0].decode()
    assert "hypertrack_gateway_webhook_outbox_pending_events 1.0" in text
    [age] = [
        line for line in text.splitlines() if line.startswith("hypertrack_gateway_webhook_outbox_oldest")
    ]
    assert float(age.split()[1]) > 1_000_000  # written at 1,000 ms after the epoch


async def test_a_slow_outbox_does_not_hold_up_the_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.observability.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "OUTBOX_READ_TIMEOUT_S", 0.05)
    never = asyncio.Event()

    async def stuck() -> OutboxStats:
        await never.wait()
        raise AssertionError("unreachable")

    metrics = Metrics()
    metrics.watch_outbox(stuck)
    text = (await asyncio.wait_for(metrics.scrape(), 5))[0].decode()
    assert "# TYPE hypertrack_gateway_webhook_outbox_pending_events gauge" in text
    assert "hypertrack_gateway_webhook_outbox_pending_events 0" not in text  # never read: no sample


def test_across_workers_the_outbox_is_the_answering_workers_reading_and_watchers_add_up() -> None:
    from gateway.observability.metrics import merge

    def families(pending: float, watchers: float) -> list[dict[str, object]]:
        return [
            {"name": name, "type": "gauge", "help": "", "samples": [[name, {}, value]]}
            for name, value in (
                ("hypertrack_gateway_webhook_outbox_pending_events", pending),
                ("hypertrack_gateway_event_watchers", watchers),
            )
        ]

    # The answering worker's snapshot comes first; another's is older (the outbox has since emptied).
    merged = {m.name: m.samples[0].value for m in merge([(families(0, 2), True), (families(40, 3), True)])}
    assert merged == {
        "hypertrack_gateway_webhook_outbox_pending_events": 0,
        "hypertrack_gateway_event_watchers": 5,
    }
