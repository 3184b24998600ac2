"""Order events delivered end to end: a REST cancel, complete or disable of the whole gateway (both
REST backends) reaches a real receiver on loopback as the contract's signed POST, exactly once; a
call that changes nothing sends nothing."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.store.events import DeliveryState, EventQuery, ReplayedEvent
from gateway.testing import GatewayStack
from tests.faults.harness import eventually
from tests.webhook_receiver import WebhookReceiver, webhook_receiver

SECRET = "whsec_e2e-signing-secret"
MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
DATA_FIELDS = {"order_handle", "route_handle", "value", "status", "share_url", "metadata", "distance",
               "duration", "fulfillment_attempt", "type", "type_index"}  # fmt: skip


@pytest.fixture
async def receiver(stack: GatewayStack) -> AsyncIterator[WebhookReceiver]:
    """A receiver the demo account is subscribed to (through the store, as `webhooks set` does)."""
    async with webhook_receiver() as running:
        await stack.store.set_webhook(stack.account_id, running.url, SECRET)
        yield running


async def replayed(stack: GatewayStack, handle: str) -> list[ReplayedEvent]:
    """The handle's events, oldest first, with what became of their delivery."""
    events: list[ReplayedEvent] = await stack.store.order_events(
        stack.account_id, handle, EventQuery(descending=False), deadline=time.monotonic() + 5
    )
    return events


async def delivered(stack: GatewayStack, handle: str, count: int = 1) -> list[ReplayedEvent]:
    """Wait until the handle's `count` events are no longer pending; they must be delivered."""

    async def settled() -> list[ReplayedEvent] | None:
        events = await replayed(stack, handle)
        done = len(events) >= count and all(e.state is not DeliveryState.PENDING for e in events)
        return events if done else None

    events = await eventually(settled, within_s=20)
    assert [e.state for e in events] == [DeliveryState.DELIVERED] * count
    return events


METADATA = {"reason": "customer asked", "attempts": 2, "nested": {"ok": True, "ratio": 0.5}}


async def post(http: aiohttp.ClientSession, stack: GatewayStack, handle: str, action: str) -> Any:
    """The change, merging METADATA into the order's: the event must carry it exactly as stored."""
    async with http.post(
        f"{stack.rest_url}/orders/{handle}/{action}", json={"metadata": METADATA}, headers=stack.rest_auth()
    ) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def instant(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_event(event: dict[str, Any], order: dict[str, Any], value: str) -> None:
    """An event as the contract describes it, telling of `order` (the call's answer) reaching `value`."""
    assert event["account_id"] == "demo" and event["type"] == "order" and event["version"] == "3.0.0"
    assert MICROS.match(event["created_at"]) and MICROS.match(event["recorded_at"]), event
    assert event["device_id"] == order.get("device_id")
    assert "device_id" in event
    data = event["data"]
    assert set(data) == DATA_FIELDS
    assert data["order_handle"] == order["order_handle"]
    assert data["value"] == value and data["status"] == order["status"] == value
    assert data["metadata"] == order["metadata"] and METADATA.items() <= data["metadata"].items()
    assert data["route_handle"] == order.get("route_handle")
    assert data["share_url"] == order.get("share_url")
    assert data["fulfillment_attempt"] == order["fulfillment_attempt"]
    assert data["type"] == order["type"] and data["type_index"] == order["type_index"]
    assert isinstance(data["duration"], int)
    assert data["distance"] is None or isinstance(data["distance"], int)
    changed_at = order.get({"cancelled": "cancelled_at", "completed": "completed_at"}.get(value, ""))
    if changed_at is not None:  # the event was recorded when the change happened
        assert instant(event["recorded_at"]) == instant(changed_at)
    assert instant(event["created_at"]) >= instant(event["recorded_at"])


async def test_a_rest_cancel_is_delivered_once_signed(
    stack: GatewayStack, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    before = int(time.time())
    order = await post(http, stack, "order-3", "cancel")
    [request] = await receiver.until_count(1)
    [event] = await delivered(stack, "order-3")

    assert request.method == "POST" and request.path == "/hooks/orders?token=abc"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "hypertrack-gateway"
    assert request.delivery_id
    assert request.signed_by(SECRET) and not request.signed_by("whsec_another")
    stamp = int(request.headers["X-HyperTrack-Signature"].split(",")[0].removeprefix("t="))
    assert before <= stamp <= int(time.time())
    [sent] = request.events
    check_event(sent, order, "cancelled")
    assert (event.http_status, event.retry_count, event.response_text) == (200, 0, "ok")
    # Delivered is final: nothing of it is left to send, so no second POST can follow.
    assert (await stack.store.outbox_stats()).pending == 0
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(("action", "value"), [("complete", "completed"), ("disable", "disabled")])
async def test_complete_and_disable_are_delivered_likewise(
    stack: GatewayStack, receiver: WebhookReceiver, http: aiohttp.ClientSession, action: str, value: str
) -> None:
    order = await post(http, stack, "order-4", action)
    [request] = await receiver.until_count(1)
    await delivered(stack, "order-4")
    assert request.signed_by(SECRET)
    [sent] = request.events
    check_event(sent, order, value)
    assert (await stack.store.outbox_stats()).pending == 0
    assert len(receiver.requests) == 1


async def test_a_repeated_cancel_sends_no_second_event(
    stack: GatewayStack, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    first = await post(http, stack, "order-5", "cancel")
    await receiver.until_count(1)
    await delivered(stack, "order-5")
    again = await post(http, stack, "order-5", "cancel")
    assert again["cancelled_at"] == first["cancelled_at"]
    # The second cancel changed nothing: it wrote no event, so the outbox has nothing to send.
    assert len(await replayed(stack, "order-5")) == 1
    assert (await stack.store.outbox_stats()).pending == 0
    assert len(receiver.requests) == 1


async def test_events_of_several_orders_all_arrive_each_once(
    stack: GatewayStack, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    orders = {
        handle: await post(http, stack, handle, "cancel") for handle in ("order-3", "order-4", "order-5")
    }
    await receiver.until(lambda r: sum(len(q.events) for q in r.requests) >= 3)
    for handle in orders:
        await delivered(stack, handle)
    sent = [event for request in receiver.requests for event in request.events]
    assert sorted(e["data"]["order_handle"] for e in sent) == sorted(orders)
    assert all(request.signed_by(SECRET) for request in receiver.requests)
    assert len({r.delivery_id for r in receiver.requests}) == len(receiver.requests)


async def test_delivery_shows_in_the_metrics_of_the_process_that_owns_the_store(
    stack: GatewayStack, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    await post(http, stack, "order-3", "cancel")
    await receiver.until_count(1)
    await delivered(stack, "order-3")
    text = (await stack.server.metrics.scrape())[0].decode()
    assert 'hypertrack_gateway_webhook_deliveries_total{outcome="delivered"} 1.0' in text
    assert 'hypertrack_gateway_webhook_attempts_total{result="2xx"} 1.0' in text
    assert "hypertrack_gateway_webhook_outbox_pending_events 0.0" in text
    assert "hypertrack_gateway_webhook_outbox_oldest_pending_age_seconds 0.0" in text
