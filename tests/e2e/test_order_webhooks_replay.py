"""GET /orders/{order_handle}/webhooks and ListOrderWebhooks end to end, over both REST backends and
gRPC: an order's events newest first with their delivery, the filters, pages both ways, the limit's
bounds, tokens that serve only their own account and query, and another account's events never seen.

Each test builds the history of the handle `hist` by the calls themselves, on a clock that ticks a
second a call, so every event has a `recorded_at` of its own:

    attempt 0: disabled, completed   attempt 1: cancelled   attempt 2: disabled, cancelled
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import grpc
import orjson
import pytest

from gateway.assembly import assemble
from gateway.calls.replay import BAD_TOKEN
from gateway.events.subscriptions import new_signing_secret
from gateway.jsonmap import encode
from gateway.protos import events_pb2, orders_service_pb2
from gateway.rpc.status import details_from_metadata, error_of
from gateway.settings import StoreSettings
from gateway.testing import GatewayStack, stack_settings
from tests.e2e.test_rest_api import error_detail, new_order, ok, send
from tests.faults.harness import eventually
from tests.webhook_receiver import webhook_receiver

MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
START_MS = 1_698_287_400_000
HISTORY = [  # (value, fulfillment_attempt), oldest first
    ("disabled", 0),
    ("completed", 0),
    ("cancelled", 1),
    ("disabled", 2),
    ("cancelled", 2),
]
Request = orders_service_pb2.ListOrderWebhooksRequest


@pytest.fixture(params=["in-process", "remote"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """The whole gateway (once per REST backend) on a clock a second further at every call."""
    ticks = itertools.count()
    async with GatewayStack.start(
        tmp_path, backend=request.param, clock=lambda: START_MS + 1000 * next(ticks)
    ) as running:
        yield running


async def act(
    stack: GatewayStack, http: aiohttp.ClientSession, handle: str, action: str, **auth: str
) -> None:
    headers = stack.rest_auth(**auth) if auth else None
    reply = await send(stack, http, "POST", f"/orders/{handle}/{action}", auth=headers)
    ok(reply)


async def build_history(
    stack: GatewayStack, http: aiohttp.ClientSession, handle: str = "hist", **auth: str
) -> None:
    """HISTORY for `handle`, by REST calls (with the other account's credentials if given)."""
    headers = stack.rest_auth(**auth) if auth else None
    body = {"worker_handle": "worker-7", "track_mode": "on_time", "orders": [new_order(handle)]}
    for actions in (("disable", "complete"), ("cancel",), ("disable", "cancel")):
        ok(await send(stack, http, "POST", "/orders/track", body=body, auth=headers), 201)
        for action in actions:
            await act(stack, http, handle, action, **auth)
    await act(stack, http, handle, "cancel", **auth)  # already cancelled: no second event


async def replay(
    stack: GatewayStack,
    http: aiohttp.ClientSession,
    handle: str = "hist",
    auth: dict[str, str] | None = None,
    **query: object,
) -> Any:
    """The 200 body of a replay with `query` as given (a list is a comma list)."""
    reply = await send(stack, http, "GET", replay_path(handle, **query), auth=auth)
    return ok(reply)


def replay_path(handle: str = "hist", **query: object) -> str:
    params = {k: ",".join(v) if isinstance(v, list | tuple) else v for k, v in query.items()}
    encoded = urlencode(params, safe=",")  # `+` of an offset is sent as %2B
    return f"/orders/{quote(handle, safe='')}/webhooks" + (f"?{encoded}" if encoded else "")


def summary(body: Any) -> list[tuple[str, int]]:
    return [(w["data"]["value"], w["data"]["fulfillment_attempt"]) for w in body["webhooks"]]


async def all_pages(
    stack: GatewayStack, http: aiohttp.ClientSession, **query: object
) -> list[list[tuple[str, int]]]:
    pages = []
    token = None
    while True:
        body = await replay(stack, http, **query, **({"pagination_token": token} if token else {}))
        pages.append(summary(body))
        token = body["pagination_token"]
        if token is None:
            return pages
        assert isinstance(token, str) and token


@pytest.fixture
async def history(stack: GatewayStack, http: aiohttp.ClientSession) -> GatewayStack:
    await build_history(stack, http)
    # Events of other orders of the account, which the replay of `hist` never shows.
    await act(stack, http, "order-1", "cancel")
    return stack


# --- the replay -------------------------------------------------------------------------------------


async def test_the_events_of_an_order_newest_first_with_their_delivery(
    history: GatewayStack, http: aiohttp.ClientSession
) -> None:
    body = await replay(history, http)
    assert set(body) == {"webhooks", "pagination_token"}
    assert body["pagination_token"] is None
    assert summary(body) == HISTORY[::-1]  # the repeated cancel wrote nothing
    recorded = [w["recorded_at"] for w in body["webhooks"]]
    assert recorded == sorted(recorded, reverse=True) and len(set(recorded)) == len(recorded)
    for webhook in body["webhooks"]:
        assert (webhook["account_id"], webhook["type"], webhook["version"]) == ("demo", "order", "3.0.0")
        assert MICROS.match(webhook["created_at"]) and MICROS.match(webhook["recorded_at"])
        assert webhook["data"]["order_handle"] == "hist"
        assert webhook["data"]["status"] == webhook["data"]["value"]
        # No webhook subscribed: never sent, so never answered.
        assert webhook["delivery_http_status"] is None
        assert webhook["retry_count"] == 0
        assert webhook["delivery_http_response_text"] is None


async def test_an_order_without_events_replays_empty_and_an_unknown_one_is_not_found(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    assert await replay(stack, http, "order-1") == {"webhooks": [], "pagination_token": None}
    detail = error_detail(await send(stack, http, "GET", replay_path("no-such-order")), 404)
    assert detail == {"reason": "ORDER_NOT_FOUND", "order_handle": "no-such-order"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"value": "cancelled"}, [("cancelled", 2), ("cancelled", 1)]),
        ({"value": ["disabled", "completed"]}, [("disabled", 2), ("completed", 0), ("disabled", 0)]),
        ({"fulfillment_attempt": 2}, [("cancelled", 2), ("disabled", 2)]),
        ({"fulfillment_attempt": 0, "value": "completed"}, [("completed", 0)]),
        ({"fulfillment_attempt": 7}, []),
        ({"sort_direction": "asc"}, HISTORY),
        ({"sort_direction": "desc"}, HISTORY[::-1]),
        (
            {"sort_direction": "asc", "value": ["cancelled", "disabled"]},
            [h for h in HISTORY if h[0] != "completed"],
        ),
    ],
)
async def test_filters(
    history: GatewayStack,
    http: aiohttp.ClientSession,
    query: dict[str, object],
    expected: list[tuple[str, int]],
) -> None:
    assert summary(await replay(history, http, **query)) == expected


async def test_times_select_by_recorded_at_from_inclusive_to_exclusive(
    history: GatewayStack, http: aiohttp.ClientSession
) -> None:
    oldest_first = (await replay(history, http, sort_direction="asc"))["webhooks"]
    third = oldest_first[2]["recorded_at"]
    assert summary(await replay(history, http, from_time=third, sort_direction="asc")) == HISTORY[2:]
    assert summary(await replay(history, http, to_time=third, sort_direction="asc")) == HISTORY[:2]
    fourth = oldest_first[3]["recorded_at"]
    assert summary(await replay(history, http, from_time=third, to_time=fourth)) == [HISTORY[2]]
    # The same instant with an offset (its + sent as %2B).
    instant = datetime.fromisoformat(third.replace("Z", "+00:00"))
    shifted = instant.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert shifted.endswith("+01:00")
    assert summary(await replay(history, http, from_time=shifted, sort_direction="asc")) == HISTORY[2:]


@pytest.mark.parametrize("direction", ["asc", "desc"])
async def test_pages_follow_each_other_in_both_directions(
    history: GatewayStack, http: aiohttp.ClientSession, direction: str
) -> None:
    ordered = HISTORY if direction == "asc" else HISTORY[::-1]
    assert await all_pages(history, http, limit=2, sort_direction=direction) == [
        ordered[0:2],
        ordered[2:4],
        ordered[4:5],
    ]
    # With a filter, a page at a time.
    cancelled = [h for h in ordered if h[0] == "cancelled"]
    assert await all_pages(history, http, limit=1, value="cancelled", sort_direction=direction) == [
        [c] for c in cancelled
    ]


async def test_a_page_size_may_change_between_pages(
    history: GatewayStack, http: aiohttp.ClientSession
) -> None:
    first = await replay(history, http, limit=1)
    rest = await replay(history, http, limit=100, pagination_token=first["pagination_token"])
    assert summary(first) + summary(rest) == HISTORY[::-1]
    assert rest["pagination_token"] is None


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_the_limit_bounds_are_accepted(
    history: GatewayStack, http: aiohttp.ClientSession, limit: str
) -> None:
    assert len((await replay(history, http, limit=limit))["webhooks"]) == min(int(limit), len(HISTORY))


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"limit": "0"}, "limit", "must be an integer from 1 to 100"),
        ({"limit": "101"}, "limit", "must be an integer from 1 to 100"),
        ({"limit": "-1"}, "limit", "must be an integer from 1 to 100"),
        ({"limit": "ten"}, "limit", "must be an integer"),
        ({"value": "planned"}, "value", "must name only cancelled, completed or disabled"),
        ({"value": "cancelled,,completed"}, "value", None),
        ({"value": "CANCELLED"}, "value", None),
        ({"from_time": "yesterday"}, "from_time", None),
        (
            {"from_time": "2023-10-26T02:30:00Z", "to_time": "2023-10-26T02:30:00Z"},
            "to_time",
            "must be after from_time",
        ),
        ({"fulfillment_attempt": "-1"}, "fulfillment_attempt", "must be an integer >= 0"),
        ({"sort_direction": "up"}, "sort_direction", "must be one of: asc, desc"),
        ({"pagination_token": "not-a-token"}, "pagination_token", BAD_TOKEN),
        ({"page": "2"}, "page", None),
    ],
)
async def test_bad_parameters_are_422_naming_them(
    stack: GatewayStack, http: aiohttp.ClientSession, query: dict[str, str], field: str, message: str | None
) -> None:
    detail = error_detail(await send(stack, http, "GET", replay_path(**query)), 422)
    assert list(detail) == ["query"]
    assert field in detail["query"]
    if message is not None:
        assert detail["query"][field] == [message]


async def test_a_replay_needs_credentials(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    reply = await send(stack, http, "GET", replay_path(), auth={})
    error_detail(reply, 401)
    assert reply.headers["WWW-Authenticate"].startswith("Basic realm=")


# --- tokens and accounts --------------------------------------------------------------------------------


async def test_a_token_serves_only_the_query_it_was_made_for(
    history: GatewayStack, http: aiohttp.ClientSession
) -> None:
    token = (await replay(history, http, limit=2))["pagination_token"]
    for other in (
        {"value": "cancelled"},
        {"fulfillment_attempt": 2},
        {"from_time": "2000-01-01T00:00:00Z"},
        {"sort_direction": "asc"},
    ):
        detail = error_detail(
            await send(history, http, "GET", replay_path(limit=2, pagination_token=token, **other)), 422
        )
        assert detail == {"query": {"pagination_token": [BAD_TOKEN]}}
    await build_history(history, http, "hist-2")
    detail = error_detail(
        await send(history, http, "GET", replay_path("hist-2", limit=2, pagination_token=token)), 422
    )
    assert detail == {"query": {"pagination_token": [BAD_TOKEN]}}
    # Tampered with: any one character.
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    detail = error_detail(
        await send(history, http, "GET", replay_path(limit=2, pagination_token=forged)), 422
    )
    assert detail == {"query": {"pagination_token": [BAD_TOKEN]}}


async def test_another_account_never_sees_this_ones_events_nor_uses_its_tokens(
    history: GatewayStack, http: aiohttp.ClientSession
) -> None:
    other_id, other_secret = await history.create_account("acme")
    other = {"account_id": other_id, "secret": other_secret}
    other_auth = history.rest_auth(**other)
    # The same handle in the other account: its own order, its own events.
    await build_history(history, http, "hist", **other)
    theirs = await replay(history, http, auth=other_auth)
    assert summary(theirs) == HISTORY[::-1]
    assert {w["account_id"] for w in theirs["webhooks"]} == {"acme"}
    mine = await replay(history, http)
    assert {w["account_id"] for w in mine["webhooks"]} == {"demo"}
    assert {w["created_at"] for w in mine["webhooks"]}.isdisjoint(w["created_at"] for w in theirs["webhooks"])
    # A handle only this account has: not found for the other one, as any of its calls says.
    reply = await send(history, http, "GET", replay_path("order-1"), auth=other_auth)
    assert error_detail(reply, 404) == {"reason": "ORDER_NOT_FOUND", "order_handle": "order-1"}
    # This account's token, in the other account's hands, on the same handle and query.
    token = (await replay(history, http, limit=2))["pagination_token"]
    reply = await send(history, http, "GET", replay_path(limit=2, pagination_token=token), auth=other_auth)
    assert error_detail(reply, 422) == {"query": {"pagination_token": [BAD_TOKEN]}}


# --- delivery, as the replay shows it ---------------------------------------------------------------------


async def test_the_replay_shows_what_became_of_each_delivery(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    async with webhook_receiver() as receiver:
        receiver.answer_text = "thanks"
        await stack.server.store.set_webhook("demo", receiver.url, new_signing_secret())
        await act(stack, http, "order-1", "cancel")
        await receiver.until_count(1)

        async def delivered() -> Any:
            body = await replay(stack, http, "order-1")
            return body if body["webhooks"][0]["delivery_http_status"] is not None else None

        body = await eventually(delivered, within_s=20)
    (webhook,) = body["webhooks"]
    assert (webhook["delivery_http_status"], webhook["retry_count"]) == (200, 0)
    assert webhook["delivery_http_response_text"] == "thanks"
    # The same event as the receiver got, but for the delivery fields.
    (sent,) = receiver.requests[0].events
    assert {k: v for k, v in webhook.items() if not k.startswith(("delivery_", "retry_"))} == sent


# --- over gRPC ----------------------------------------------------------------------------------------------


async def test_grpc_serves_the_same_replay(history: GatewayStack, http: aiohttp.ClientSession) -> None:
    stub = history.stub()
    request = Request(order_handle="hist", limit=2, sort_direction=events_pb2.SORT_DIRECTION_ASC)
    pages = []
    while True:
        response = await stub.ListOrderWebhooks(request, metadata=history.grpc_auth())
        pages.append(encode(response))
        if not response.HasField("pagination_token"):
            break
        request.pagination_token = response.pagination_token
    rest_pages = []
    token = None
    while True:
        body = await replay(
            history, http, limit=2, sort_direction="asc", **({"pagination_token": token} if token else {})
        )
        rest_pages.append(body)
        token = body["pagination_token"]
        if token is None:
            break
    # Byte for byte what REST answers, tokens included: one call, two faces.
    assert [orjson.dumps(p) for p in pages] == [orjson.dumps(p) for p in rest_pages]
    assert len(pages) == 3


async def test_grpc_refuses_a_bad_token_with_a_field_violation(history: GatewayStack) -> None:
    stub = history.stub()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListOrderWebhooks(
            Request(order_handle="hist", pagination_token="AAAA"), metadata=history.grpc_auth()
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    error = error_of(raised.value.code(), details_from_metadata(raised.value.trailing_metadata()))
    assert [(v.field, v.description) for v in error.violations] == [("pagination_token", BAD_TOKEN)]  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListOrderWebhooks(Request(order_handle="hist", limit=0), metadata=history.grpc_auth())
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


# --- on PostgreSQL ------------------------------------------------------------------------------------------


async def test_the_replay_over_postgresql(
    tmp_path: Path, postgres_database: str, http: aiohttp.ClientSession
) -> None:
    ticks = itertools.count()
    settings = dataclasses.replace(
        stack_settings(tmp_path), store=StoreSettings(postgres_database, demo=True)
    )
    gateway = await assemble(settings, clock=lambda: START_MS + 1000 * next(ticks))
    try:
        stack = GatewayStack(settings, gateway, gateway)
        await build_history(stack, http)
        assert summary(await replay(stack, http)) == HISTORY[::-1]
        for direction, ordered in (("asc", HISTORY), ("desc", HISTORY[::-1])):
            assert await all_pages(stack, http, limit=2, sort_direction=direction) == [
                ordered[0:2],
                ordered[2:4],
                ordered[4:5],
            ]
        assert summary(await replay(stack, http, value="cancelled", fulfillment_attempt=2)) == [
            ("cancelled", 2)
        ]
        oldest_first = (await replay(stack, http, sort_direction="asc"))["webhooks"]
        third = oldest_first[2]["recorded_at"]
        assert summary(await replay(stack, http, from_time=third, sort_direction="asc")) == HISTORY[2:]
    finally:
        await gateway.stop()
