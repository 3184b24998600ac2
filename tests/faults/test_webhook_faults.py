"""Webhook delivery when things go wrong: a receiver that fails, refuses, never answers; a server
SIGKILLed between the commit and the delivery; two gRPC processes sharing one PostgreSQL outbox.

Intervals are the settings' (a fraction of a second here, 20 s in production); every wait is on
what the receiver got or what the store records, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.assembly import open_store
from gateway.events.delivery import WebhookSettings
from gateway.store.events import DeliveryState, EventQuery, ReplayedEvent
from gateway.testing import GatewayStack, basic
from tests.faults.figures import Figures
from tests.faults.harness import EPHEMERAL_PORTS, cancel_load, cli, eventually, processes, seeded_database
from tests.webhook_receiver import WebhookReceiver, webhook_receiver

SECRET = "whsec_faults-signing-secret"
QUICK = WebhookSettings(retries=2, retry_interval_s=0.2, timeout_s=0.5, lease_s=2.0, poll_interval_s=0.5)


@pytest.fixture(params=["in-process", "remote"])
async def quick_stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """The whole gateway with QUICK's retries."""
    async with GatewayStack.start(tmp_path, backend=request.param, webhooks=QUICK) as running:
        yield running


@contextlib.asynccontextmanager
async def subscribed(stack: GatewayStack) -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as receiver:
        await stack.store.set_webhook(stack.account_id, receiver.url, SECRET)
        yield receiver


async def cancel(http: aiohttp.ClientSession, stack: GatewayStack, handle: str) -> None:
    async with http.post(
        f"{stack.rest_url}/orders/{handle}/cancel", json={}, headers=stack.rest_auth()
    ) as response:
        assert response.status == 200, await response.text()


async def settled(stack: GatewayStack, handle: str) -> ReplayedEvent:
    """The handle's one event, once its delivery has ended."""

    async def ended() -> ReplayedEvent | None:
        events = await stack.store.order_events(
            stack.account_id, handle, EventQuery(), deadline=time.monotonic() + 5
        )
        assert len(events) <= 1, events
        return events[0] if events and events[0].state is not DeliveryState.PENDING else None

    event: ReplayedEvent = await eventually(ended, within_s=20)
    return event


async def rest_replay(
    http: aiohttp.ClientSession, stack: GatewayStack, handle: str
) -> list[dict[str, object]]:
    """GET /orders/{handle}/webhooks: what the partner's own replay shows."""
    async with http.get(f"{stack.rest_url}/orders/{handle}/webhooks", headers=stack.rest_auth()) as response:
        assert response.status == 200, await response.text()
        webhooks: list[dict[str, object]] = (await response.json())["webhooks"]
        return webhooks


async def test_500_then_200_sends_the_same_delivery_twice_then_it_is_delivered(
    quick_stack: GatewayStack, http: aiohttp.ClientSession, figures: Figures
) -> None:
    async with subscribed(quick_stack) as receiver:
        receiver.statuses = [500]
        await cancel(http, quick_stack, "order-3")
        first, second = await receiver.until_count(2)
        event = await settled(quick_stack, "order-3")
    figures.fault("webhook receiver answering 500 once")
    assert first.delivery_id == second.delivery_id
    assert first.body == second.body and first.signed_by(SECRET) and second.signed_by(SECRET)
    assert (event.state, event.http_status, event.retry_count) == (DeliveryState.DELIVERED, 200, 1)
    assert len(receiver.requests) == 2


async def test_a_4xx_ends_the_delivery(
    quick_stack: GatewayStack, http: aiohttp.ClientSession, figures: Figures
) -> None:
    async with subscribed(quick_stack) as receiver:
        receiver.statuses = [410]
        receiver.answer_text = "no such hook"
        await cancel(http, quick_stack, "order-3")
        await receiver.until_count(1)
        event = await settled(quick_stack, "order-3")
        # Rejected is final: nothing is left to send, so no retry can follow.
        assert (await quick_stack.store.outbox_stats()).pending == 0
    figures.fault("webhook receiver answering 410")
    assert (event.state, event.http_status, event.retry_count) == (DeliveryState.REJECTED, 410, 0)
    assert event.response_text == "no such hook"
    assert len(receiver.requests) == 1


async def test_a_receiver_that_never_answers_is_retried_on_schedule_then_failed(
    quick_stack: GatewayStack, http: aiohttp.ClientSession, figures: Figures
) -> None:
    async with subscribed(quick_stack) as receiver:
        receiver.default_status = None
        await cancel(http, quick_stack, "order-3")
        await receiver.until_count(QUICK.retries + 1)
        event = await settled(quick_stack, "order-3")
        replay = await rest_replay(http, quick_stack, "order-3")
    figures.fault("webhook receiver that never answers")
    assert len({r.delivery_id for r in receiver.requests}) == 1
    assert len(receiver.requests) == QUICK.retries + 1
    # Each attempt waited out its timeout, then the interval, before the next one went.
    arrivals = [request.arrived for request in receiver.requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= QUICK.timeout_s + QUICK.retry_interval_s - 0.05 for gap in gaps), gaps
    assert (event.state, event.http_status, event.retry_count) == (DeliveryState.FAILED, None, QUICK.retries)
    [shown] = replay
    assert shown["retry_count"] == QUICK.retries
    assert shown["delivery_http_status"] is None and shown["delivery_http_response_text"] is None


async def test_readiness_ignores_a_partners_failing_url(
    quick_stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    await quick_stack.store.set_webhook(quick_stack.account_id, "http://127.0.0.1:9/refused", SECRET)
    await cancel(http, quick_stack, "order-3")
    event = await settled(quick_stack, "order-3")
    assert event.state is DeliveryState.FAILED
    async with http.get(f"{quick_stack.rest_url}/readyz") as response:
        assert response.status == 200, await response.text()
    text = (await quick_stack.server.metrics.scrape())[0].decode()
    assert f'hypertrack_gateway_webhook_attempts_total{{result="error"}} {QUICK.retries + 1}.0' in text
    assert 'hypertrack_gateway_webhook_deliveries_total{outcome="failed"} 1.0' in text


async def test_a_post_held_past_the_grace_is_released_at_shutdown_and_sent_on_restart(
    tmp_path: Path, http: aiohttp.ClientSession, figures: Figures
) -> None:
    # A lease far longer than the test: only a release lets the next start send it so soon.
    held = WebhookSettings(timeout_s=30.0, lease_s=600.0)
    async with webhook_receiver() as receiver:
        receiver.statuses = [None]
        async with GatewayStack.start(tmp_path, webhooks=held) as stack:
            await stack.store.set_webhook(stack.account_id, receiver.url, SECRET)
            await cancel(http, stack, "order-3")
            await receiver.until(lambda r: r.held == 1)
        # Stopped, the grace spent with the POST unanswered: given back, no attempt counted.
        figures.fault("shutdown with a webhook POST held past the grace")
        async with GatewayStack.start(tmp_path, webhooks=held) as restarted:
            first, second = await receiver.until_count(2)
            event = await settled(restarted, "order-3")
    assert first.delivery_id == second.delivery_id and first.body == second.body
    assert (event.state, event.http_status, event.retry_count) == (DeliveryState.DELIVERED, 200, 0)


# --- real processes ----------------------------------------------------------------------------


async def subscribe(database: str, account_id: str, url: str) -> None:
    """Subscribe through the store, as `webhooks set` does, before any server runs on it."""
    store = await open_store(database)
    try:
        await store.set_webhook(account_id, url, SECRET)
    finally:
        await store.close()


async def stored_events(database: str, account_id: str, handle: str) -> list[ReplayedEvent]:
    store = await open_store(database)
    try:
        events: list[ReplayedEvent] = await store.order_events(
            account_id, handle, EventQuery(), deadline=time.monotonic() + 5
        )
        return events
    finally:
        await store.close()


async def test_sigkill_between_commit_and_delivery_delivers_after_restart(
    tmp_path: Path, figures: Figures
) -> None:
    database, auth, [handle] = seeded_database(tmp_path, 1)
    # A POST may take 3 s; the lease outlives it by 1 s, which is how soon the restarted process
    # may take over the delivery its killed predecessor held.
    serve = ("serve", "--database", database, "--no-demo", "--log-level", "warning",
             "--webhook-timeout", "3", "--webhook-lease", "4", "--webhook-retry-interval", "0.2")  # fmt: skip
    async with webhook_receiver() as receiver, processes(tmp_path) as started:
        await subscribe(database, "faults", receiver.url)
        receiver.statuses = [None]  # the first POST is held unanswered
        gateway = await started.start(*serve, env=EPHEMERAL_PORTS)
        answers = await cancel_load([(gateway.rest_url, handle)], auth=auth, concurrency=1)
        assert answers.statuses == {200: 1}
        await receiver.until(lambda r: r.held == 1)
        gateway.signal(signal.SIGKILL)
        assert await asyncio.to_thread(gateway.wait, 10) == -signal.SIGKILL
        figures.fault("SIGKILL of serve with a webhook POST in flight")

        await started.start(*serve, env=EPHEMERAL_PORTS)
        first, second = await receiver.until_count(2)
        assert first.delivery_id == second.delivery_id and first.body == second.body
        [event] = first.events
        assert event["data"]["order_handle"] == handle and second.signed_by(SECRET)

        async def delivered() -> ReplayedEvent | None:
            [stored] = await stored_events(database, "faults", handle)
            return stored if stored.state is DeliveryState.DELIVERED else None

        stored = await eventually(delivered, within_s=20)
    # The killed process recorded no attempt; the restarted one's was the first to count.
    assert (stored.http_status, stored.retry_count) == (200, 0)
    assert len(receiver.requests) == 2


ORDERS = 1000
CONCURRENCY = 32
ADMIN = re.compile(r"admin\s+https?://[^:]+:(\d+)")
DELIVERED = re.compile(r'^hypertrack_gateway_webhook_deliveries_total\{outcome="delivered"\} (\S+)$', re.M)


@pytest.mark.postgres
async def test_two_grpc_processes_on_one_postgres_deliver_every_event_once(
    tmp_path: Path, postgres_database: str, figures: Figures
) -> None:
    database = postgres_database
    account_id, secret = (
        cli("accounts", "create", "--database", database, "faults", cwd=tmp_path).strip().split(":", 1)
    )
    out = cli("seed", "--database", database, "--account", account_id, "--count", str(ORDERS), "--prefix", "pg-",
              cwd=tmp_path)  # fmt: skip
    assert f"seeded {ORDERS} open orders" in out, out
    handles = [f"pg-{i}" for i in range(ORDERS)]
    grpc = ("grpc", "--grpc-port", "0", "--admin-port", "0", "--database", database, "--no-demo",
            "--log-level", "warning")  # fmt: skip
    async with webhook_receiver() as receiver, processes(tmp_path) as started:
        await subscribe(database, account_id, receiver.url)
        servers = await asyncio.gather(*(started.start(*grpc) for _ in range(2)))
        backend = "ipv4:" + ",".join(f"127.0.0.1:{server.grpc_port}" for server in servers)
        front = await started.start(
            "http", "--http-port", "0", "--backend", backend, "--log-level", "warning"
        )
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool | None:
                async with http.get(f"{front.rest_url}/readyz") as response:
                    return True if response.status == 200 else None

            await eventually(ready, within_s=20)
            load_started = time.monotonic()
            answers = await cancel_load(
                [(front.rest_url, h) for h in handles], auth={"Authorization": basic(account_id, secret)},
                concurrency=CONCURRENCY,
            )  # fmt: skip
            assert answers.statuses == {200: ORDERS}
            await receiver.until(lambda r: sum(len(q.events) for q in r.requests) >= ORDERS, within_s=60)
            figures.timing(
                "1,000 cancels over 2 grpc processes, each event delivered", time.monotonic() - load_started
            )
            figures.cancels(answers.sent)

            async def all_recorded() -> list[float] | None:
                counts = []
                for server in servers:
                    port = ADMIN.search("\n".join(server.banner))
                    assert port is not None, server.banner
                    async with http.get(f"http://127.0.0.1:{port.group(1)}/metrics") as response:
                        found = DELIVERED.search(await response.text())
                    counts.append(float(found.group(1)) if found else 0.0)
                return counts if sum(counts) >= len(receiver.by_delivery()) else None

            per_process = await eventually(all_recorded, within_s=20)

    posts_per_delivery = Counter(r.delivery_id for r in receiver.requests)
    assert set(posts_per_delivery.values()) == {1}, "a delivery was sent twice"
    sent = Counter(event["data"]["order_handle"] for r in receiver.requests for event in r.events)
    assert sent == Counter(handles), "an event was missed or sent in two deliveries"
    assert all(r.signed_by(SECRET) for r in receiver.requests)
    assert sum(per_process) == len(posts_per_delivery)
    figures.tally("webhook deliveries (POSTs) for 1,000 events over 2 processes", len(posts_per_delivery))
    figures.tally("of which sent by the first process", int(per_process[0]))
