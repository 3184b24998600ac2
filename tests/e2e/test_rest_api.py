"""The REST surface end to end, over both backends: every call, every status of the contract, the
error body, percent-decoding, cancel semantics and the reference response shape.

The JSON mapping's own round trip of the reference example is tested in tests/unit/test_jsonmap.py.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.rest.app import RestSettings
from gateway.testing import GatewayStack, basic

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "cancel-order-example.json"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CHALLENGE = re.compile(r'^Basic realm="[^"]+"$')
GEOMETRY = {"type": "Point", "coordinates": [-122.4194, 37.7749]}
SMALL_BODY_LIMIT = 256


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    raw: bytes

    def json(self) -> Any:
        return orjson.loads(self.raw)


async def send(
    stack: GatewayStack,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    *,
    body: object = None,
    data: bytes | None = None,
    content_type: str | None = "application/json",
    headers: Mapping[str, str] | None = None,
    auth: Mapping[str, str] | None = None,
) -> Reply:
    """One request. `path` is sent as written (already percent-encoded, with its query); `body` is
    sent as JSON, `data` as it is; `auth` replaces the demo credentials ({} sends none)."""
    all_headers = dict(stack.rest_auth() if auth is None else auth)
    if body is not None:
        data = orjson.dumps(body)
    if data is not None and content_type is not None:
        all_headers["Content-Type"] = content_type
    all_headers.update(headers or {})
    async with http.request(
        method,
        URL(stack.rest_url + path, encoded=True),
        data=data,
        headers=all_headers,
        skip_auto_headers=("Content-Type",),
    ) as response:
        reply = Reply(response.status, response.headers, await response.read())
    assert reply.headers.get("X-Request-ID"), f"{method} {path}: no X-Request-ID"
    return reply


def error_detail(reply: Reply, status: int) -> dict[str, Any]:
    """Assert `reply` is an error of `status` with the contract's body; its detail."""
    assert reply.status == status, reply.raw
    assert reply.headers["Content-Type"].split(";")[0] == "application/json"
    body = reply.json()
    assert isinstance(body, dict)
    assert set(body) == {"detail", "message"}
    assert isinstance(body["detail"], dict)
    assert isinstance(body["message"], str)
    assert body["message"]
    return body["detail"]


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.raw
    assert reply.headers["Content-Type"].split(";")[0] == "application/json"
    return reply.json()


def new_order(handle: str, **fields: object) -> dict[str, object]:
    return {"order_handle": handle, "destination": {"geometry": GEOMETRY}, **fields}


async def track(
    stack: GatewayStack, http: aiohttp.ClientSession, *orders: dict[str, object], status: int = 201
) -> Any:
    body = {"worker_handle": "worker-7", "track_mode": "on_time", "orders": list(orders)}
    reply = await send(stack, http, "POST", "/orders/track", body=body)
    return ok(reply, status) if status < 400 else error_detail(reply, status)


def event_types(order: Mapping[str, Any]) -> list[str]:
    return [event["type"] for event in order["timeline"]]


def path_of(handle: str, action: str = "") -> str:
    return "/orders/" + quote(handle, safe="") + (f"/{action}" if action else "")


@pytest.fixture(params=["in-process", "remote"])
async def small_stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """The gateway with a small body limit."""
    settings = RestSettings(max_body_bytes=SMALL_BODY_LIMIT)
    async with GatewayStack.start(tmp_path, backend=request.param, rest=settings) as running:
        yield running


# Track Orders


async def test_track_creates_ongoing_orders_with_their_events(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    created = await track(
        stack,
        http,
        new_order("t-1", metadata={"customerID": "42"}),
        new_order("t-2", type="pick", destination={"geometry": GEOMETRY, "radius": 250}),
    )
    assert list(created) == ["route_handle", "status", "orders"]
    assert created["status"] == "tracking"
    route = created["route_handle"]
    assert isinstance(route, str)
    assert route
    first, second = created["orders"]
    assert [first["order_handle"], second["order_handle"]] == ["t-1", "t-2"]
    assert [first["type"], second["type"]] == ["drop", "pick"]
    for order in (first, second):
        assert order["status"] == "ongoing"
        assert order["fulfillment_attempt"] == 0
        assert order["route_handle"] == route
        assert order["worker_handle"] == "worker-7"
        assert order["track_mode"] == "on_time"
        assert order["share_url"].startswith("https://")
        for stamp in ("created_at", "assigned_at", "started_at"):
            assert TIMESTAMP.match(order[stamp]), order[stamp]
        assert event_types(order) == ["order_created", "order_assigned", "order_started"]
        assert {event["order_handle"] for event in order["timeline"]} == {order["order_handle"]}
        assert "cancelled_at" not in order
    assert first["destination"]["radius"] == 100
    assert second["destination"]["radius"] == 250
    assert first["metadata"] == {"customerID": "42"}
    assert first["share_url"] != second["share_url"]


async def test_track_numbers_the_legs_of_one_handle_and_type_in_the_order_given(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    created = await track(
        stack,
        http,
        new_order("legs"),
        new_order("legs", type="pick"),
        new_order("legs", type="drop"),
        new_order("legs"),
        new_order("other"),
    )
    legs = [(o["order_handle"], o["type"], o["type_index"]) for o in created["orders"]]
    assert legs == [
        ("legs", "drop", 0),
        ("legs", "pick", 0),
        ("legs", "drop", 1),
        ("legs", "drop", 2),
        ("other", "drop", 0),
    ]
    read = ok(await send(stack, http, "GET", "/orders/legs?type=drop&type_index=2"))
    assert read == created["orders"][3]


async def test_track_of_a_handle_with_an_open_record_is_409(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    detail = await track(stack, http, new_order("order-3"), status=409)
    assert detail["order_handle"] == "order-3"
    assert detail["status"] == "ongoing"
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["fulfillment_attempt"] == 0


async def test_track_after_a_terminal_record_starts_a_new_attempt(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    ok(await send(stack, http, "POST", "/orders/order-3/cancel"))
    created = await track(stack, http, new_order("order-3"))
    assert created["orders"][0]["fulfillment_attempt"] == 1
    assert created["orders"][0]["status"] == "ongoing"
    latest = ok(await send(stack, http, "GET", "/orders/order-3"))
    assert (latest["fulfillment_attempt"], latest["status"]) == (1, "ongoing")
    first = ok(await send(stack, http, "GET", "/orders/order-3?fulfillment_attempt=0"))
    assert (first["fulfillment_attempt"], first["status"]) == (0, "cancelled")
    error_detail(await send(stack, http, "GET", "/orders/order-3?fulfillment_attempt=2"), 404)


async def test_track_with_an_invalid_order_names_it_in_the_body(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    detail = await track(stack, http, new_order("fine"), {"order_handle": "x"}, status=422)
    assert {location: list(fields) for location, fields in detail.items()} == {
        "body": ["orders[1].destination.geometry"]
    }
    error_detail(await send(stack, http, "GET", "/orders/fine"), 404)  # nothing of the request was kept


# Get Order


async def test_get_reads_an_order_back(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    order = ok(await send(stack, http, "GET", "/orders/order-3"))
    assert order["order_handle"] == "order-3"
    assert order["status"] == "ongoing"
    assert event_types(order) == ["order_created", "order_assigned", "order_started"]


@pytest.mark.parametrize(
    ("query", "leg"),
    [
        ("?type=pick", ("pick", 0, 0)),
        ("?type=drop", ("drop", 0, 0)),
        ("?type=drop&type_index=0", ("drop", 0, 0)),
        ("?type=pick&fulfillment_attempt=0", ("pick", 0, 0)),
        ("?fulfillment_attempt=0&type_index=0&type=drop", ("drop", 0, 0)),
    ],
)
async def test_get_names_one_leg_by_type_index_and_attempt(
    stack: GatewayStack, http: aiohttp.ClientSession, query: str, leg: tuple[str, int, int]
) -> None:
    order = ok(await send(stack, http, "GET", "/orders/order-2" + query))
    assert (order["type"], order["type_index"], order["fulfillment_attempt"]) == leg


@pytest.mark.parametrize(
    "query", ["?type=drop&type_index=1", "?type=pick&fulfillment_attempt=1", "?type_index=5"]
)
async def test_get_of_a_leg_that_does_not_exist_is_404(
    stack: GatewayStack, http: aiohttp.ClientSession, query: str
) -> None:
    detail = error_detail(await send(stack, http, "GET", "/orders/order-2" + query), 404)
    assert detail["order_handle"] == "order-2"


@pytest.mark.parametrize(
    ("method", "action"), [("GET", ""), ("POST", "cancel"), ("POST", "complete"), ("POST", "disable")]
)
async def test_a_handle_with_two_legs_is_422_on_type_naming_the_legs(
    stack: GatewayStack, http: aiohttp.ClientSession, method: str, action: str
) -> None:
    detail = error_detail(await send(stack, http, method, path_of("order-2", action)), 422)
    assert list(detail) == ["query"]
    assert list(detail["query"]) == ["type"]
    (message,) = detail["query"]["type"]
    assert "pick 0" in message
    assert "drop 0" in message
    for leg in ("pick", "drop"):
        assert ok(await send(stack, http, "GET", f"/orders/order-2?type={leg}"))["status"] == "ongoing"


# Cancel Order


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (None, None),
        (b"", "application/json"),
        (b"{}", "application/json"),
        (b'{"metadata": {}}', "application/json"),
        (b'{"metadata": null}', "application/json"),
        (b"{}", "application/json; charset=utf-8"),
    ],
)
async def test_cancel_takes_an_absent_or_empty_body(
    stack: GatewayStack, http: aiohttp.ClientSession, data: bytes | None, content_type: str | None
) -> None:
    order = ok(
        await send(stack, http, "POST", "/orders/order-3/cancel", data=data, content_type=content_type)
    )
    assert order["status"] == "cancelled"
    assert TIMESTAMP.match(order["cancelled_at"])
    assert event_types(order)[-1] == "order_cancelled"
    assert "metadata" not in order  # demo order-3 has none, and an empty update adds none
    assert ok(await send(stack, http, "GET", "/orders/order-3")) == order


async def test_cancel_appends_one_event_with_the_order_fields(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    before = ok(await send(stack, http, "GET", "/orders/order-4"))
    order = ok(await send(stack, http, "POST", "/orders/order-4/cancel"))
    assert order["timeline"][:-1] == before["timeline"]
    event = order["timeline"][-1]
    assert event == {
        "type": "order_cancelled",
        "recorded_at": order["cancelled_at"],
        "order_handle": "order-4",
        "route_handle": before["route_handle"],
        "fulfillment_attempt": 0,
    }
    assert "end_location" not in order  # never tracked: no last location
    assert order["cancelled_at_destination"] is False


async def test_cancel_merges_metadata_keeping_kinds_and_order(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    given = {"a": 1, "nested": {"list": [1, 2.5, None, "x", True], "null": None}, "keep": "same", "f": 1.0}
    await track(stack, http, new_order("meta", metadata=given))
    update = {"a": 2, "added": {"deep": {"n": None}}, "f2": 2.0, "i": 3, "f": 0.5}
    order = ok(await send(stack, http, "POST", "/orders/meta/cancel", body={"metadata": update}))
    expected = {
        "a": 2,
        "nested": {"list": [1, 2.5, None, "x", True], "null": None},
        "keep": "same",
        "f": 0.5,
        "added": {"deep": {"n": None}},
        "f2": 2.0,
        "i": 3,
    }
    assert order["metadata"] == expected
    assert list(order["metadata"]) == list(expected)  # replaced keys keep their place, new ones follow
    assert list(order["metadata"]["nested"]) == ["list", "null"]
    # Integers stay integers and floats stay floats, on the wire.
    text = (await send(stack, http, "GET", "/orders/meta")).raw.decode()
    assert '"a":2,' in text
    assert '"f2":2.0' in text
    assert '"i":3' in text
    assert '"list":[1,2.5,null,"x",true]' in text
    kinds = {key: type(value) for key, value in order["metadata"].items() if key in ("a", "f", "f2", "i")}
    assert kinds == {"a": int, "f": float, "f2": float, "i": int}


async def test_cancel_is_idempotent(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    first = ok(await send(stack, http, "POST", "/orders/order-3/cancel"))
    again = ok(await send(stack, http, "POST", "/orders/order-3/cancel", body={"metadata": {"late": 1}}))
    assert again["cancelled_at"] == first["cancelled_at"]
    assert event_types(again).count("order_cancelled") == 1
    assert again == first  # the order as it is: the retry's metadata is not merged either


async def test_cancel_of_a_completed_order_is_409_saying_the_status(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    ok(await send(stack, http, "POST", "/orders/order-3/complete"))
    detail = error_detail(await send(stack, http, "POST", "/orders/order-3/cancel"), 409)
    assert detail["status"] == "completed"
    assert detail["order_handle"] == "order-3"
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "completed"


async def test_cancel_names_one_leg_and_leaves_the_other(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    order = ok(await send(stack, http, "POST", "/orders/order-2/cancel?type=pick&type_index=0"))
    assert (order["type"], order["status"]) == ("pick", "cancelled")
    assert ok(await send(stack, http, "GET", "/orders/order-2?type=drop"))["status"] == "ongoing"
    # With the pick leg's latest attempt cancelled, the handle still has two legs.
    error_detail(await send(stack, http, "GET", "/orders/order-2"), 422)


async def test_cancel_of_the_reference_order_has_the_reference_shape(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    reference = json.loads(REFERENCE.read_text())
    reply = await send(stack, http, "POST", "/orders/order-1/cancel")
    order = ok(reply)
    assert shape(order) == shape(reference)
    for (path, value), (_, in_reference) in zip(strings(order), strings(reference), strict=True):
        if TIMESTAMP.match(in_reference):
            assert TIMESTAMP.match(value), (path, value)
    assert order["status"] == "cancelled"
    assert order["end_location"] == reference["end_location"]
    assert order["cancelled_at_destination"] is False
    handles = [event["order_handle"] for event in order["timeline"] if "order_handle" in event]
    assert handles
    assert set(handles) == {"order-1"}
    # Apart from the time of the cancel and the page's slip (events naming order-2), it is the page's
    # document, value for value.
    expected = copy.deepcopy(reference)
    expected["cancelled_at"] = order["cancelled_at"]
    expected["timeline"][-1]["recorded_at"] = order["cancelled_at"]
    for event in expected["timeline"]:
        if "order_handle" in event:
            event["order_handle"] = "order-1"
    assert order == expected


def shape(value: object) -> object:
    """Keys in order and JSON types, recursively."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def strings(value: object, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in strings(item, f"{path}.{key}".lstrip("."))]
    if isinstance(value, list):
        return [pair for item in value for pair in strings(item, path)]
    return [(path, value)] if isinstance(value, str) else []


# Complete and Disable


async def test_complete_an_open_order_then_again(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    order = ok(
        await send(stack, http, "POST", "/orders/order-3/complete", body={"metadata": {"signed": True}})
    )
    assert order["status"] == "completed"
    assert TIMESTAMP.match(order["completed_at"])
    assert order["metadata"] == {"signed": True}
    assert order["timeline"][-1] == {
        "type": "order_completed",
        "recorded_at": order["completed_at"],
        "order_handle": "order-3",
        "route_handle": order["route_handle"],
        "fulfillment_attempt": 0,
    }
    assert ok(await send(stack, http, "POST", "/orders/order-3/complete")) == order


async def test_complete_a_cancelled_order_is_409(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    ok(await send(stack, http, "POST", "/orders/order-3/cancel"))
    detail = error_detail(await send(stack, http, "POST", "/orders/order-3/complete"), 409)
    assert detail["status"] == "cancelled"


async def test_disable_an_ongoing_order_then_again(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    order = ok(await send(stack, http, "POST", "/orders/order-5/disable"))
    assert order["status"] == "disabled"
    assert TIMESTAMP.match(order["disabled_at"])
    assert event_types(order)[-1] == "order_disabled"
    assert order["timeline"][-1]["recorded_at"] == order["disabled_at"]
    assert ok(await send(stack, http, "POST", "/orders/order-5/disable")) == order
    # A disabled order is still open: it can be cancelled.
    assert ok(await send(stack, http, "POST", "/orders/order-5/cancel"))["status"] == "cancelled"


@pytest.mark.parametrize(("first", "status"), [("cancel", "cancelled"), ("complete", "completed")])
async def test_disable_a_terminal_order_is_409(
    stack: GatewayStack, http: aiohttp.ClientSession, first: str, status: str
) -> None:
    ok(await send(stack, http, "POST", f"/orders/order-4/{first}"))
    detail = error_detail(await send(stack, http, "POST", "/orders/order-4/disable"), 409)
    assert detail["status"] == status
    assert ok(await send(stack, http, "GET", "/orders/order-4"))["status"] == status


# 401


BAD_CREDENTIALS = {
    "missing": {},
    "empty": {"Authorization": ""},
    "scheme only": {"Authorization": "Basic"},
    "not base64": {"Authorization": "Basic !!!not-base64!!!"},
    "other scheme": {"Authorization": "Bearer " + base64.b64encode(b"demo:demo-secret").decode()},
    "no colon": {"Authorization": "Basic " + base64.b64encode(b"demo").decode()},
    "not utf-8": {"Authorization": "Basic " + base64.b64encode(b"demo:\xff").decode()},
    "wrong secret": {"Authorization": basic("demo", "not-the-secret")},
    "empty secret": {"Authorization": basic("demo", "")},
    "unknown account": {"Authorization": basic("nobody", "demo-secret")},
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/orders/order-3/cancel", None),
        ("GET", "/orders/order-3", None),
        (
            "POST",
            "/orders/track",
            {"worker_handle": "w", "track_mode": "on_time", "orders": [new_order("n")]},
        ),
    ],
)
async def test_missing_malformed_or_wrong_credentials_are_401_with_a_challenge(
    stack: GatewayStack, http: aiohttp.ClientSession, method: str, path: str, body: object
) -> None:
    bodies = set()
    for name, credentials in BAD_CREDENTIALS.items():
        reply = await send(stack, http, method, path, body=body, auth=credentials)
        assert reply.status == 401, name
        detail = error_detail(reply, 401)
        assert CHALLENGE.match(reply.headers["WWW-Authenticate"]), name
        assert detail["reason"] == "UNAUTHENTICATED"
        bodies.add(reply.raw)
    assert len(bodies) == 1  # every failure says the same thing
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"
    error_detail(await send(stack, http, "GET", "/orders/n"), 404)


async def test_another_account_sees_no_orders_of_this_one(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    other = stack.rest_auth(*await stack.create_account("other-account"))
    theirs = await send(stack, http, "POST", "/orders/order-3/cancel", auth=other)
    missing = await send(stack, http, "POST", "/orders/no-such-order/cancel")
    assert error_detail(theirs, 404) == {"reason": "ORDER_NOT_FOUND", "order_handle": "order-3"}
    error_detail(missing, 404)
    assert theirs.raw == missing.raw.replace(b"no-such-order", b"order-3")
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"
    # And it can track the same handle for itself.
    body = {"worker_handle": "w", "track_mode": "flex", "orders": [new_order("order-3")]}
    created = ok(await send(stack, http, "POST", "/orders/track", body=body, auth=other), 201)
    assert created["orders"][0]["fulfillment_attempt"] == 0


# 404 and 405


@pytest.mark.parametrize(
    "path", ["/", "/nope", "/orders", "/orders/a/b/c", "/orders/order-3/refund", "/v3/orders/order-3"]
)
async def test_an_unknown_route_is_404(stack: GatewayStack, http: aiohttp.ClientSession, path: str) -> None:
    for method in ("GET", "POST"):
        error_detail(await send(stack, http, method, path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/orders/order-3", "GET, HEAD"),
        ("POST", "/orders/order-3", "GET, HEAD"),
        ("GET", "/orders/order-3/cancel", "POST"),
        ("PUT", "/orders/order-3/complete", "POST"),
        ("PATCH", "/orders/order-3/disable", "POST"),
        ("PUT", "/orders/track", "GET, HEAD, POST"),  # /orders/track is also the GET of the order "track"
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    stack: GatewayStack, http: aiohttp.ClientSession, method: str, path: str, allow: str
) -> None:
    reply = await send(stack, http, method, path)
    detail = error_detail(reply, 405)
    assert reply.headers["Allow"] == allow
    assert detail == {"allowed": allow.split(", ")}
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"


# 413 and 415


async def test_a_body_over_the_limit_is_413(small_stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    padding = "x" * SMALL_BODY_LIMIT
    reply = await send(
        small_stack, http, "POST", "/orders/order-3/cancel", body={"metadata": {"pad": padding}}
    )
    assert error_detail(reply, 413) == {"max_bytes": SMALL_BODY_LIMIT}
    assert ok(await send(small_stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"


async def test_a_chunked_body_over_the_limit_is_413(
    small_stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"metadata": {"pad": "'
        for _ in range(SMALL_BODY_LIMIT // 16):
            yield b"x" * 16
        yield b'"}}'

    async with http.post(
        URL(small_stack.rest_url + "/orders/order-3/cancel"),
        data=chunks(),
        headers={**small_stack.rest_auth(), "Content-Type": "application/json"},
    ) as response:
        reply = Reply(response.status, response.headers, await response.read())
    assert error_detail(reply, 413) == {"max_bytes": SMALL_BODY_LIMIT}


async def test_a_body_just_within_the_limit_is_read(
    small_stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    body = orjson.dumps({"metadata": {"pad": ""}})
    body = body.replace(b'""', b'"' + b"x" * (SMALL_BODY_LIMIT - len(body)) + b'"')
    assert len(body) == SMALL_BODY_LIMIT
    order = ok(await send(small_stack, http, "POST", "/orders/order-3/cancel", data=body))
    assert order["status"] == "cancelled"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"],
)
async def test_a_body_that_is_not_json_is_415(
    stack: GatewayStack, http: aiohttp.ClientSession, content_type: str | None
) -> None:
    reply = await send(stack, http, "POST", "/orders/order-3/cancel", data=b"{}", content_type=content_type)
    assert error_detail(reply, 415) == {"content_type": content_type or "none"}
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"


# 422


INVALID = [
    pytest.param("?foo=1", None, {"query": ["foo"]}, id="unknown parameter"),
    pytest.param("?order_handle=order-4", None, {"query": ["order_handle"]}, id="path field in the query"),
    pytest.param("?type=parcel", None, {"query": ["type"]}, id="bad type"),
    pytest.param("?type=DROP", None, {"query": ["type"]}, id="type in capitals"),
    pytest.param("?type_index=-1", None, {"query": ["type_index"]}, id="negative type_index"),
    pytest.param("?type_index=1.5", None, {"query": ["type_index"]}, id="non-integer type_index"),
    pytest.param("?type_index=", None, {"query": ["type_index"]}, id="empty type_index"),
    pytest.param("?fulfillment_attempt=-3", None, {"query": ["fulfillment_attempt"]}, id="negative attempt"),
    pytest.param(
        "?fulfillment_attempt=99999999999", None, {"query": ["fulfillment_attempt"]}, id="huge attempt"
    ),
    pytest.param("?type=drop&type=drop", None, {"query": ["type"]}, id="repeated parameter"),
    pytest.param("?type=%FF", None, {"query": ["type"]}, id="value not utf-8"),
    pytest.param("", b"{", {"body": ["body"]}, id="malformed JSON"),
    pytest.param("", b'{"metadata": {"a": NaN}}', {"body": ["body"]}, id="NaN"),
    pytest.param("", b'{"metadata": {}, "metadata": {}}', {"body": ["metadata"]}, id="duplicate key"),
    pytest.param("", b'{"status": "cancelled"}', {"body": ["status"]}, id="key other than metadata"),
    pytest.param("", b'{"update": {"metadata": {}}}', {"body": ["update"]}, id="proto field name"),
    pytest.param("", b"[]", {"body": ["body"]}, id="array body"),
    pytest.param("", b'"cancel"', {"body": ["body"]}, id="string body"),
    pytest.param("", b"null", {"body": ["body"]}, id="null body"),
    pytest.param("", b'{"metadata": [1]}', {"body": ["metadata"]}, id="metadata an array"),
    pytest.param("", b'{"metadata": "x"}', {"body": ["metadata"]}, id="metadata a string"),
    pytest.param(
        "", b'{"metadata": {"k": 100000000000000000000000}}', {"body": ["metadata.k"]}, id="huge integer"
    ),
    pytest.param("", b'{"metadata": {"k": 1e999}}', {"body": ["metadata.k"]}, id="infinite number"),
    pytest.param("", b'{"metadata": {"k": "\\ud800"}}', {"body": ["metadata.k"]}, id="lone surrogate"),
    pytest.param("", b'{"\\udfff": 1}', {"body": ["\\udfff"]}, id="lone surrogate key"),
    pytest.param("", b'{"k": "\xff"}', {"body": ["body"]}, id="body not utf-8"),
    pytest.param("", b"[" * 100 + b"]" * 100, {"body": ["body"]}, id="deep nesting"),
    pytest.param("?type=x", b"{", {"query": ["type"], "body": ["body"]}, id="every problem at once"),
]


@pytest.mark.parametrize(("query", "data", "fields"), INVALID)
async def test_an_invalid_cancel_is_422_naming_the_field_and_changes_nothing(
    stack: GatewayStack,
    http: aiohttp.ClientSession,
    query: str,
    data: bytes | None,
    fields: dict[str, list[str]],
) -> None:
    detail = error_detail(await send(stack, http, "POST", "/orders/order-3/cancel" + query, data=data), 422)
    assert {location: sorted(names) for location, names in detail.items()} == fields
    for names in detail.values():
        for messages in names.values():
            assert messages
            assert all(isinstance(m, str) and m for m in messages)
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"


async def test_a_handle_of_256_characters_is_422_on_the_path(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    detail = error_detail(await send(stack, http, "POST", path_of("h" * 256, "cancel")), 422)
    assert list(detail) == ["path"]
    assert list(detail["path"]) == ["order_handle"]
    # 255 is a valid handle, and 255 characters of four UTF-8 bytes each too.
    error_detail(await send(stack, http, "POST", path_of("h" * 255, "cancel")), 404)
    error_detail(await send(stack, http, "GET", path_of("🚚" * 255)), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/orders/%FF/cancel"),
        ("GET", "/orders/%C0%AF"),
        ("POST", "/orders//cancel"),
        ("GET", "/orders/a%00b"),
        ("POST", "/orders/a%0Ab/complete"),
    ],
)
async def test_an_invalid_handle_in_the_path_is_422_on_the_path(
    stack: GatewayStack, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    detail = error_detail(await send(stack, http, method, path), 422)
    assert list(detail) == ["path"]
    assert list(detail["path"]) == ["order_handle"]
    if "%FF" in path or "%C0" in path:
        assert detail["path"]["order_handle"] == ["must be valid percent-encoded UTF-8"]


@pytest.mark.parametrize("grpc_timeout", ["abc", "5", "5s", "1.5S", "123456789S", "-1S", "S", "5 S"])
async def test_a_malformed_grpc_timeout_is_422_on_the_header(
    stack: GatewayStack, http: aiohttp.ClientSession, grpc_timeout: str
) -> None:
    reply = await send(stack, http, "POST", "/orders/order-3/cancel", headers={"Grpc-Timeout": grpc_timeout})
    detail = error_detail(reply, 422)
    assert list(detail) == ["header"]
    assert list(detail["header"]) == ["Grpc-Timeout"]
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"


async def test_a_get_with_a_body_is_422(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    detail = error_detail(await send(stack, http, "GET", "/orders/order-3", data=b"{}"), 422)
    assert detail == {"body": {"body": ["this call takes no body"]}}


async def test_track_takes_no_query_parameters(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    body = {"worker_handle": "w", "track_mode": "on_time", "orders": [new_order("q")]}
    detail = error_detail(await send(stack, http, "POST", "/orders/track?type=drop", body=body), 422)
    assert list(detail) == ["query"]
    assert list(detail["query"]) == ["type"]
    error_detail(await send(stack, http, "GET", "/orders/q"), 404)


# 504 and deadlines


@pytest.mark.parametrize(("method", "path"), [("GET", "/orders/order-3"), ("POST", "/orders/order-3/cancel")])
@pytest.mark.parametrize("grpc_timeout", ["1n", "1u"])
async def test_a_deadline_that_cannot_be_met_is_504_and_nothing_happens(
    stack: GatewayStack, http: aiohttp.ClientSession, method: str, path: str, grpc_timeout: str
) -> None:
    reply = await send(stack, http, method, path, headers={"Grpc-Timeout": grpc_timeout})
    assert error_detail(reply, 504) == {"reason": "DEADLINE_EXCEEDED"}
    assert ok(await send(stack, http, "GET", "/orders/order-3"))["status"] == "ongoing"


@pytest.mark.parametrize("grpc_timeout", ["5S", "1M", "1H", "99999999m", "5000m"])
async def test_a_deadline_that_can_be_met_is_met(
    stack: GatewayStack, http: aiohttp.ClientSession, grpc_timeout: str
) -> None:
    order = ok(
        await send(stack, http, "POST", "/orders/order-3/cancel", headers={"Grpc-Timeout": grpc_timeout})
    )
    assert order["status"] == "cancelled"


# X-Request-ID


async def test_a_request_id_is_echoed(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    for method, path, auth in [
        ("GET", "/orders/order-3", None),
        ("GET", "/orders/missing", None),
        ("GET", "/nope", None),
        ("DELETE", "/orders/order-3", None),
        ("POST", "/orders/order-3/cancel?x=1", None),
        ("GET", "/orders/order-3", {}),
    ]:
        reply = await send(stack, http, method, path, auth=auth, headers={"X-Request-ID": "partner-req-0001"})
        assert reply.headers["X-Request-ID"] == "partner-req-0001", (method, path)


async def test_a_request_id_is_generated_when_missing_or_unusable(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    seen = set()
    for headers in (
        {},
        {},
        {"X-Request-ID": "has spaces in it"},
        {"X-Request-ID": "x" * 129},
        {"X-Request-ID": ""},
    ):
        reply = await send(stack, http, "GET", "/orders/order-3", headers=headers)
        rid = reply.headers["X-Request-ID"]
        assert rid not in (headers.get("X-Request-ID"), "")
        seen.add(rid)
    assert len(seen) == 5


# Percent-decoding, exactly once


@pytest.mark.parametrize(
    ("handle", "encoded"),
    [
        ("a/b", "a%2Fb"),
        ("x%41", "x%2541"),
        ("100%", "100%25"),
        ("%2F", "%252F"),
        ("zürich-🚚", "z%C3%BCrich-%F0%9F%9A%9A"),
        ("a b+c", "a%20b+c"),
        ("..", "%2E%2E"),
        ("?#&=", "%3F%23%26%3D"),
    ],
)
async def test_a_handle_in_the_path_is_percent_decoded_exactly_once(
    stack: GatewayStack, http: aiohttp.ClientSession, handle: str, encoded: str
) -> None:
    created = await track(stack, http, new_order(handle))
    assert created["orders"][0]["order_handle"] == handle
    read = ok(await send(stack, http, "GET", f"/orders/{encoded}"))
    assert read["order_handle"] == handle
    order = ok(await send(stack, http, "POST", f"/orders/{encoded}/cancel"))
    assert (order["order_handle"], order["status"]) == (handle, "cancelled")
    assert order["timeline"][-1]["order_handle"] == handle


async def test_a_doubly_encoded_handle_names_a_different_order(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    await track(stack, http, new_order("a/b"))
    detail = error_detail(await send(stack, http, "GET", "/orders/a%252Fb"), 404)
    assert detail["order_handle"] == "a%2Fb"
    error_detail(await send(stack, http, "GET", "/orders/a/b"), 404)  # a raw / separates segments
