"""Bad input over real sockets: every kind the issue lists gets a clean 4xx with the contract's error
body (`Content-Type: application/json`, exactly `{"detail": {...}, "message": "..."}`) and an
X-Request-ID, changes nothing, and leaves the server serving: the same connection where the server
keeps it, and a new one for a normal read and cancel.

Requests go out as exact bytes (tests/reliability/rawhttp.py), so that nothing is normalised on the way.
Where the front end refuses a request before any call (the HTTP parser, the body, the query string,
percent-decoding), one backend is enough; where the servicer judges it (handles), both run.

Left to tests/e2e/test_rest_api.py: the 422 table of single bad values, the 405 `Allow` lists of the API
routes, 413 at the exact limit; and to tests/e2e/test_rest_properties.py: random bodies, paths and queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from gateway.observability.metrics import Metrics
from gateway.rest.app import RestSettings
from gateway.rest.body import MAX_DEPTH
from gateway.testing import GatewayStack
from tests.reliability.rawhttp import (
    READ_TIMEOUT_S,
    ConnectionClosed,
    RawConnection,
    chunked,
    contract_error,
    exchange,
    request,
)

JSON = {"Content-Type": "application/json"}
GEOMETRY = {"type": "Point", "coordinates": [-122.4194, 37.7749]}
DEFAULT_BODY_LIMIT = RestSettings().max_body_bytes
SLOW_BODY_TIMEOUT_S = 0.5
DRIBBLE_INTERVAL_S = 0.05
CLOSE_WAIT_S = 2.0
MALFORMED = {"reason": "BAD_REQUEST"}
NOT_JSON = "is not valid JSON"
TOO_DEEP = [f"is nested deeper than {MAX_DEPTH} levels"]
NOT_UTF8 = ["must be UTF-8"]
BAD_PERCENT = {"path": {"order_handle": ["must be valid percent-encoded UTF-8"]}}
BAD_LENGTH = {"path": {"order_handle": ["must be 1 to 255 characters"]}}
CONTROL = {"path": {"order_handle": ["must not contain control characters"]}}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """One gateway (in-process backend), for input the front end refuses before any call."""
    async with GatewayStack.start(tmp_path) as running:
        yield running


@pytest.fixture
async def slow_gateway(tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """A gateway that waits only SLOW_BODY_TIMEOUT_S for a body."""
    async with GatewayStack.start(tmp_path, rest=RestSettings(body_timeout_s=SLOW_BODY_TIMEOUT_S)) as running:
        yield running


def auth(stack: GatewayStack, **more: str | bytes) -> dict[str, str | bytes]:
    return {**stack.rest_auth(), **more}


def track_body(*orders: dict[str, Any]) -> bytes:
    return json.dumps({"worker_handle": "w-1", "track_mode": "flex", "orders": list(orders)}).encode()


def new_order(handle: str, **fields: Any) -> dict[str, Any]:
    return {"order_handle": handle, "destination": {"geometry": GEOMETRY}, **fields}


async def status_of(connection: RawConnection, stack: GatewayStack, handle: str) -> Any:
    await connection.send(request("GET", "/orders/" + quote(handle, safe=""), headers=auth(stack)))
    answer = await connection.response()
    return answer.json()["status"] if answer.status == 200 else answer.status


async def assert_still_serving(stack: GatewayStack, *, absent: tuple[str, ...] = ()) -> None:
    """On a new connection: the demo orders the bad input named are as they were, the handles it
    would have created do not exist, and a normal cancel works (of order-5: idempotent, so this may
    run more than once in a test)."""
    async with await RawConnection.open(stack.rest_server.port) as connection:
        assert await status_of(connection, stack, "order-3") == "ongoing"
        assert await status_of(connection, stack, "order-4") == "ongoing"
        for handle in absent:
            assert await status_of(connection, stack, handle) == 404
        await connection.send(request("POST", "/orders/order-5/cancel", headers=auth(stack)))
        cancelled = await connection.response()
        assert cancelled.status == 200, str(cancelled)
        assert cancelled.json()["status"] == "cancelled"


async def refused(
    stack: GatewayStack, data: bytes, status: int, *, head: bool = False, absent: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Send one bad request; assert the contract's error; assert the server goes on serving (on the
    same connection unless the HTTP parser refused it, which closes the connection); its detail."""
    answer, connection = await exchange(stack.rest_server.port, data, head=head)
    async with connection:
        detail = contract_error(answer, status, head=head)
        if detail == MALFORMED:
            assert await connection.closed_by_server(CLOSE_WAIT_S)
        elif answer.headers.get("Connection") != "close":
            assert await status_of(connection, stack, "order-3") == "ongoing"
    await assert_still_serving(stack, absent=absent)
    return detail


def cancel(stack: GatewayStack, body: bytes, target: str = "/orders/order-3/cancel") -> bytes:
    return request("POST", target, headers=auth(stack, **JSON), body=body)


def track(stack: GatewayStack, body: bytes) -> bytes:
    return request("POST", "/orders/track", headers=auth(stack, **JSON), body=body)


# --- JSON ----------------------------------------------------------------------------------------


MALFORMED_JSON = {
    "unquoted key": b"{metadata: {}}",
    "single quotes": b"{'metadata': {}}",
    "trailing comma": b'{"metadata": {},}',
    "missing value": b'{"metadata": }',
    "missing colon": b'{"metadata" {}}',
    "two documents": b"{} {}",
    "garbage after": b"{}x",
    "comment": b"{/* note */}",
    "bare word": b"cancel",
    "whitespace only": b"   ",
    "byte order mark": b"\xef\xbb\xbf{}",
    "NUL byte": b"{\x00}",
    "raw control character in a string": b'{"metadata": {"k": "a\x01b"}}',
    "unterminated string": b'{"metadata": {"k": "v}}',
    "bad escape": b'{"metadata": {"k": "\\x41"}}',
    "hex number": b'{"metadata": {"k": 0x10}}',
    "leading zeros": b'{"metadata": {"k": 007}}',
    "plus sign": b'{"metadata": {"k": +1}}',
    "lone minus": b'{"metadata": {"k": -}}',
    "python literal": b'{"metadata": {"k": None}}',
}


@pytest.mark.parametrize("target", ["cancel", "track"])
@pytest.mark.parametrize("body", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
async def test_malformed_json_is_422_on_the_body(gateway: GatewayStack, body: bytes, target: str) -> None:
    data = cancel(gateway, body) if target == "cancel" else track(gateway, body)
    detail = await refused(gateway, data, 422)
    assert list(detail) == ["body"] and list(detail["body"]) == ["body"], detail
    (message,) = detail["body"]["body"]
    assert message.startswith(NOT_JSON), message


async def test_json_truncated_anywhere_is_422_and_the_connection_stays_usable(gateway: GatewayStack) -> None:
    whole = '{"metadata": {"k": "vü", "n": [1, 2.5, null, true], "o": {"p": false}}}'.encode()
    async with await RawConnection.open(gateway.rest_server.port) as connection:
        for cut in range(1, len(whole)):  # 0 bytes would be no body at all: a valid cancel
            await connection.send(cancel(gateway, whole[:cut]))
            detail = contract_error(await connection.response(), 422)
            (message,) = detail["body"]["body"]
            assert message.startswith((NOT_JSON, NOT_UTF8[0])), (cut, message)
        assert await status_of(connection, gateway, "order-3") == "ongoing"
    await assert_still_serving(gateway)


@pytest.mark.parametrize("half_close", [True, False], ids=["half-closed", "closed"])
async def test_a_body_cut_short_by_the_caller_is_neither_a_failure_nor_answered(
    tmp_path: Path, half_close: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller declares 100 bytes, sends 9 and stops sending: nobody is left to answer, and the
    gateway counts a 499 (client closed request), not a 500 with a traceback in its log."""
    caplog.set_level(logging.WARNING)
    answered: asyncio.Queue[int] = asyncio.Queue()
    observe = Metrics.observe_request

    def observe_and_tell(self: Metrics, **fields: Any) -> None:
        observe(self, **fields)
        answered.put_nowait(fields["status"])

    monkeypatch.setattr(Metrics, "observe_request", observe_and_tell)
    async with GatewayStack.start(tmp_path) as gateway:
        head = request(
            "POST", "/orders/order-3/cancel", headers=auth(gateway, **JSON, **{"Content-Length": "100"})
        )
        connection = await RawConnection.open(gateway.rest_server.port)
        await connection.send(head + b'{"metadat')
        if half_close:
            connection.half_close()
            with pytest.raises(ConnectionClosed):
                await connection.response()
        await connection.close()
        assert await asyncio.wait_for(answered.get(), READ_TIMEOUT_S) == 499
        exposition = gateway.metrics.exposition()[0].decode()
        assert (
            'http_server_request_duration_seconds_count{http_request_method="POST",'
            'http_response_status_code="499",http_route="/orders/{order_handle}/cancel"} 1.0'
        ) in exposition
        assert 'http_response_status_code="500"' not in exposition
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        await assert_still_serving(gateway)


def nested(depth: int) -> dict[str, bytes]:
    return {
        "arrays": b"[" * depth + b"]" * depth,
        "objects": b'{"a":' * depth + b"1" + b"}" * depth,
        "in metadata": b'{"metadata":' + b'{"a":' * depth + b"1" + b"}" * (depth + 1),
        "arrays in metadata": b'{"metadata": {"a":' + b"[" * depth + b"]" * depth + b"}}",
        "never closed": b"[" * depth,
        "track orders": b'{"worker_handle": "w", "orders":' + b"[" * depth + b"]" * depth + b"}",
    }


DEEP = nested(10_000)


@pytest.mark.parametrize("body", DEEP.values(), ids=DEEP.keys())
async def test_json_nested_10000_deep_is_422(gateway: GatewayStack, body: bytes) -> None:
    assert len(body) <= DEFAULT_BODY_LIMIT  # refused for its depth, not its size
    data = track(gateway, body) if b"worker_handle" in body else cancel(gateway, body)
    detail = await refused(gateway, data, 422)
    assert detail == {"body": {"body": TOO_DEEP}}


def metadata_number(text: str) -> bytes:
    return b'{"metadata": {"k": ' + text.encode() + b"}}"


HUGE_NUMBERS = [
    pytest.param(
        cancel, metadata_number("1e999"), {"body": {"metadata.k": ["must be a finite number"]}}, id="1e999"
    ),
    pytest.param(
        cancel, metadata_number("-1e999"), {"body": {"metadata.k": ["must be a finite number"]}}, id="-1e999"
    ),
    pytest.param(
        cancel,
        metadata_number("1" + "0" * 5000 + ".0"),
        {"body": {"metadata.k": ["must be a finite number"]}},
        id="float of 5000 digits",
    ),
    pytest.param(
        cancel,
        metadata_number(str(2**64)),
        {"body": {"metadata.k": ["must be an integer that fits in 64 bits"]}},
        id="2**64",
    ),
    pytest.param(
        cancel,
        metadata_number(str(-(2**63) - 1)),
        {"body": {"metadata.k": ["must be an integer that fits in 64 bits"]}},
        id="-2**63-1",
    ),
    pytest.param(
        cancel,
        metadata_number("9" * 5000),
        {"body": {"body": ["is not valid JSON: a number has too many digits"]}},
        id="integer of 5000 digits",
    ),
    pytest.param(
        track,
        track_body(new_order("huge-1", destination={"geometry": GEOMETRY, "radius": 2**31})),
        {"body": {"orders[0].destination.radius": ["must be an integer from -2147483648 to 2147483647"]}},
        id="radius 2**31",
    ),
    pytest.param(
        track,
        track_body(new_order("huge-1", type_index=2**63)),
        {"body": {"orders[0].type_index": ["must be an integer from -2147483648 to 2147483647"]}},
        id="type_index 2**63",
    ),
    pytest.param(
        track,
        track_body(new_order("huge-1", expected_service_time=2**70)),
        {"body": {"orders[0].expected_service_time": ["must be an integer from -2147483648 to 2147483647"]}},
        id="expected_service_time 2**70",
    ),
    pytest.param(
        track,
        track_body(
            new_order("huge-1", destination={"geometry": {"type": "Point", "coordinates": [0, 0]}})
        ).replace(b"[0, 0]", b"[1e400, 0]"),
        {
            "body": {
                "orders[0].destination.geometry": [
                    "coordinates must be [longitude, latitude], two finite numbers"
                ]
            }
        },
        id="longitude 1e400",
    ),
]


@pytest.mark.parametrize(("build", "body", "expected"), HUGE_NUMBERS)
async def test_huge_numbers_in_the_body_are_422_on_their_field(
    gateway: GatewayStack, build: Any, body: bytes, expected: dict[str, Any]
) -> None:
    assert await refused(gateway, build(gateway, body), 422, absent=("huge-1",)) == expected


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("type_index=" + "9" * 30, "type_index"),
        ("fulfillment_attempt=2147483648", "fulfillment_attempt"),
        ("type_index=-2147483649", "type_index"),
        ("fulfillment_attempt=1e9", "fulfillment_attempt"),
        ("type_index=" + "1" * 5000, "type_index"),
    ],
)
async def test_huge_numbers_in_the_query_are_422_on_their_parameter(
    gateway: GatewayStack, query: str, name: str
) -> None:
    detail = await refused(gateway, cancel(gateway, b"", f"/orders/order-3/cancel?{query}"), 422)
    assert list(detail) == ["query"] and list(detail["query"]) == [name], detail


NOT_NUMBERS = ["NaN", "-NaN", "Infinity", "-Infinity", "+Infinity", "nan", "inf", "NAN"]


@pytest.mark.parametrize("token", NOT_NUMBERS)
async def test_nan_and_infinity_are_422(gateway: GatewayStack, token: str) -> None:
    for data in (
        cancel(gateway, metadata_number(token)),
        track(
            gateway,
            track_body(new_order("nan-1", type_index=0)).replace(
                b'"type_index": 0', f'"type_index": {token}'.encode()
            ),
        ),
    ):
        detail = await refused(gateway, data, 422, absent=("nan-1",))
        (message,) = detail["body"]["body"]
        assert message.startswith(NOT_JSON), message


DUPLICATES = [
    pytest.param(cancel, b'{"metadata": {}, "metadata": {"a": 1}}', "metadata", id="top level"),
    pytest.param(cancel, b'{"metadata": {"a": 1, "b": 2, "a": 3}}', "a", id="in metadata"),
    pytest.param(cancel, b'{"metadata": {"x": {"deep": 1, "deep": 1}}}', "deep", id="nested, same value"),
    pytest.param(cancel, b'{"metadata": {}, "\\u006detadata": {}}', "metadata", id="spelt with an escape"),
    pytest.param(
        track,
        track_body(new_order("dup-1")).replace(
            b'"order_handle": "dup-1"', b'"order_handle": "dup-1", "order_handle": "x"'
        ),
        "order_handle",
        id="in a track order",
    ),
    pytest.param(
        track,
        track_body(new_order("dup-1")).replace(b'"track_mode"', b'"worker_handle": "v", "track_mode"'),
        "worker_handle",
        id="track",
    ),
]


@pytest.mark.parametrize(("build", "body", "key"), DUPLICATES)
async def test_duplicate_keys_are_422_naming_the_key(
    gateway: GatewayStack, build: Any, body: bytes, key: str
) -> None:
    detail = await refused(gateway, build(gateway, body), 422, absent=("dup-1",))
    assert detail == {"body": {key: ["is given more than once"]}}


INVALID_UTF8 = {
    "0xFF": b"\xff",
    "lone continuation byte": b"\x80",
    "overlong slash": b"\xc0\xaf",
    "encoded surrogate": b"\xed\xa0\x80",
    "truncated sequence": b"\xe2\x82",
    "five-byte sequence": b"\xf8\x88\x80\x80\x80",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
    "latin-1": b"caf\xe9",
}


@pytest.mark.parametrize("raw", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_invalid_utf8_in_the_body_is_422(gateway: GatewayStack, raw: bytes) -> None:
    for data in (
        cancel(gateway, b'{"metadata": {"k": "' + raw + b'"}}'),
        cancel(gateway, b'{"metadata": {"' + raw + b'": 1}}'),
        track(gateway, track_body(new_order("utf-1")).replace(b"utf-1", b"utf-1" + raw)),
    ):
        assert await refused(gateway, data, 422, absent=("utf-1",)) == {"body": {"body": NOT_UTF8}}


async def test_a_utf16_body_is_422(gateway: GatewayStack) -> None:
    body = '{"metadata": {}}'.encode("utf-16")
    assert await refused(gateway, cancel(gateway, body), 422) == {"body": {"body": NOT_UTF8}}


# --- the request target --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoded", ["%FF", "%80", "%C0%AF", "%ED%A0%80", "%E2%82", "%F8%88%80%80%80", "%F4%90%80%80", "caf%E9"]
)
async def test_invalid_percent_encoded_utf8_in_the_path_is_422(gateway: GatewayStack, encoded: str) -> None:
    for method, path in (("GET", f"/orders/{encoded}"), ("POST", f"/orders/x{encoded}/cancel")):
        data = request(method, path, headers=auth(gateway))
        assert await refused(gateway, data, 422) == BAD_PERCENT


RAW_TARGETS = {
    "0xFF in the path": b"/orders/\xff/cancel",
    "raw UTF-8 in the path": b"/orders/caf\xc3\xa9",
    "truncated UTF-8 in the path": b"/orders/\xc3/cancel",
    "0xFF in the query": b"/orders/order-3?type=\xff",
    "NUL in the path": b"/orders/a\x00b",
    "SOH in the path": b"/orders/a\x01b/cancel",
    "DEL in the path": b"/orders/a\x7fb",
    "tab in the path": b"/orders/a\tb/cancel",
    "escape sequence in the path": b"/orders/\x1b[31m",
    "carriage return in the path": b"/orders/a\rb",
    "space in the path": b"/orders/a b/cancel",
}


@pytest.mark.parametrize("target", RAW_TARGETS.values(), ids=RAW_TARGETS.keys())
async def test_raw_bytes_in_the_request_line_are_400_and_close_the_connection(
    gateway: GatewayStack, target: bytes
) -> None:
    assert await refused(gateway, request("POST", target, headers=auth(gateway)), 400) == MALFORMED


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("type=%FF", "type"),
        ("type=%C0%AF", "type"),
        ("type_index=%ED%A0%80", "type_index"),
        ("%FF=drop", "query"),
    ],
)
async def test_invalid_utf8_in_the_query_is_422_on_the_query(
    gateway: GatewayStack, query: str, name: str
) -> None:
    detail = await refused(gateway, request("GET", f"/orders/order-3?{query}", headers=auth(gateway)), 422)
    assert list(detail) == ["query"] and list(detail["query"]) == [name], detail


async def test_invalid_utf8_in_headers_is_refused_or_ignored_but_never_fails(gateway: GatewayStack) -> None:
    port = gateway.rest_server.port
    unauthorized, connection = await exchange(
        port, request("GET", "/orders/order-3", headers={"Authorization": b"Basic \xff\xfe"})
    )
    await connection.close()
    assert contract_error(unauthorized, 401) == {"reason": "UNAUTHENTICATED", "realm": "hypertrack-gateway"}
    wrong_type, connection = await exchange(
        port,
        request(
            "POST",
            "/orders/order-3/cancel",
            headers=auth(gateway, **{"Content-Type": b"\xffjson"}),
            body=b"{}",
        ),
    )
    await connection.close()
    assert contract_error(wrong_type, 415) == {"content_type": "\\udcffjson"}
    timeout, connection = await exchange(
        port, request("GET", "/orders/order-3", headers=auth(gateway, **{"Grpc-Timeout": b"5\xffS"}))
    )
    await connection.close()
    assert list(contract_error(timeout, 422)["header"]) == ["Grpc-Timeout"]
    served, connection = await exchange(
        port, request("GET", "/orders/order-3", headers=auth(gateway, **{"X-Request-ID": b"id-\xff"}))
    )
    await connection.close()
    assert served.status == 200
    assert served.headers["X-Request-ID"].isascii() and "id-" not in served.headers["X-Request-ID"]
    await assert_still_serving(gateway)


# --- handles -------------------------------------------------------------------------------------


ROUTES_OF_A_HANDLE = [("GET", ""), ("POST", "/cancel"), ("POST", "/complete"), ("POST", "/disable")]


@pytest.mark.parametrize(
    "handle",
    ["", "h" * 256, "😀" * 256, "é" * 256, "h" * 1000, "😀" * 600],
    ids=["0", "256", "256 emoji", "256 é", "1000", "600 emoji"],
)
async def test_handles_of_0_and_over_255_characters_are_422_on_the_path(
    stack: GatewayStack, handle: str
) -> None:
    for method, action in ROUTES_OF_A_HANDLE:
        data = request(method, "/orders/" + quote(handle, safe="") + action, headers=auth(stack))
        assert await refused(stack, data, 422) == BAD_LENGTH, (method, action)
    detail = await refused(stack, track(stack, track_body(new_order(handle))), 422)
    assert detail == {"body": {"orders[0].order_handle": ["must be 1 to 255 characters"]}}


async def test_a_handle_too_long_for_the_request_line_is_400(gateway: GatewayStack) -> None:
    target = "/orders/" + quote("😀" * 1000, safe="") + "/cancel"  # 12,000 bytes: over aiohttp's 8190
    assert await refused(gateway, request("POST", target, headers=auth(gateway)), 400) == MALFORMED


CONTROL_CHARACTERS = ["%00", "%01", "%09", "%0A", "%0D", "%1B", "%7F", "%C2%80", "%C2%85", "%C2%9F"]


@pytest.mark.parametrize("encoded", CONTROL_CHARACTERS)
async def test_control_characters_in_a_handle_are_422_on_the_path(stack: GatewayStack, encoded: str) -> None:
    for method, action in ROUTES_OF_A_HANDLE:
        data = request(method, f"/orders/a{encoded}b{action}", headers=auth(stack))
        assert await refused(stack, data, 422) == CONTROL, (method, action)


@pytest.mark.parametrize(
    ("field", "value", "location"),
    [
        ("order_handle", "a\u0000b", "orders[0].order_handle"),
        ("order_handle", "line\nbreak", "orders[0].order_handle"),
        ("order_handle", "\u0085", "orders[0].order_handle"),
        ("worker_handle", "\u001b[31mred", "worker_handle"),
        ("device_id", "d\u007f", "device_id"),
    ],
)
async def test_control_characters_in_track_fields_are_422_on_the_field(
    stack: GatewayStack, field: str, value: str, location: str
) -> None:
    document = json.loads(track_body(new_order("ctl-1")))
    if field == "order_handle":
        document["orders"][0]["order_handle"] = value
    else:
        document[field] = value
    detail = await refused(stack, track(stack, json.dumps(document).encode()), 422, absent=("ctl-1",))
    assert detail == {"body": {location: ["must not contain control characters"]}}


@pytest.mark.parametrize(
    ("method", "target", "status", "detail"),
    [
        ("GET", "/orders/a%2Fb", 404, {"order_handle": "a/b"}),
        ("POST", "/orders/..%2Forder-3/cancel", 404, {"order_handle": "../order-3"}),
        ("GET", "/orders/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", 404, {"order_handle": "../../etc/passwd"}),
        ("GET", "/orders/%5C..%5Corder-3", 404, {"order_handle": "\\..\\order-3"}),
        ("GET", "/orders/%2Forder-3", 404, {"order_handle": "/order-3"}),
        ("POST", "/orders/order-3%2F/cancel", 404, {"order_handle": "order-3/"}),
        ("POST", "/orders/../cancel", 404, {"order_handle": ".."}),
        ("POST", "/orders/./cancel", 404, {"order_handle": "."}),
        ("GET", "/orders/%2e%2e", 404, {"order_handle": ".."}),
        ("GET", "/orders/order-3%2Fcancel", 404, {"order_handle": "order-3/cancel"}),
        ("POST", "/orders/order-3%2Fcancel", 405, None),
        ("POST", "/orders/order-4/../order-3/cancel", 404, {}),
        ("GET", "/orders/../orders/order-3", 404, {}),
        ("POST", "/orders/order-3/cancel/..", 404, {}),
        ("POST", "/orders/order-3/./cancel", 404, {}),
        ("POST", "/./orders/order-3/cancel", 404, {}),
    ],
)
async def test_slashes_and_dots_in_handles_name_handles_never_other_routes(
    stack: GatewayStack, method: str, target: str, status: int, detail: dict[str, str] | None
) -> None:
    """`%2F` is part of the handle and `..` is a handle or nothing: neither ever reaches another order
    or route (the orders order-3 and order-4 stay as they were)."""
    found = await refused(stack, request(method, target, headers=auth(stack)), status)
    if status == 405:
        assert found == {"allowed": ["GET", "HEAD"]}
    elif detail:
        assert found == {"reason": "ORDER_NOT_FOUND", **detail}
    else:
        assert found == {}


# --- headers and bodies over the limits ----------------------------------------------------------


OVERSIZED_HEADERS = {
    "a value of 9000 bytes": [("X-Filler", "v" * 9000)],
    "an Authorization of 9000 bytes": [("Authorization", "Basic " + "QUFB" * 2250)],
    "a name of 9000 bytes": [("X-" + "n" * 9000, "v")],
    "200 headers": [(f"X-Header-{i}", "v") for i in range(200)],
    "a request line of 9000 bytes": None,
}


@pytest.mark.parametrize("headers", OVERSIZED_HEADERS.values(), ids=OVERSIZED_HEADERS.keys())
async def test_oversized_headers_are_400_and_close_the_connection(
    gateway: GatewayStack, headers: list[tuple[str, str]] | None
) -> None:
    if headers is None:
        data = request("GET", "/orders/order-3?type=" + "x" * 9000, headers=auth(gateway))
    else:
        data = request("GET", "/orders/order-3", headers=[*auth(gateway).items(), *headers])
    assert await refused(gateway, data, 400) == MALFORMED


async def test_headers_within_the_limits_are_served(gateway: GatewayStack) -> None:
    """The limits are aiohttp's (8190 bytes a line, 128 headers): just below them a call is served."""
    headers = [*auth(gateway).items(), ("X-Filler", "v" * 8000), *[(f"X-H{i}", "v") for i in range(120)]]
    answer, connection = await exchange(
        gateway.rest_server.port, request("GET", "/orders/order-3", headers=headers)
    )
    await connection.close()
    assert answer.status == 200, str(answer)


async def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(gateway: GatewayStack) -> None:
    head = request(
        "POST", "/orders/order-3/cancel", headers=auth(gateway, **JSON, **{"Content-Length": "1000000000"})
    )
    answer, connection = await exchange(gateway.rest_server.port, head)
    await connection.close()
    assert contract_error(answer, 413) == {"max_bytes": DEFAULT_BODY_LIMIT}
    await assert_still_serving(gateway)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("target", ["cancel", "track"])
async def test_a_body_over_the_limit_is_413(gateway: GatewayStack, framing: str, target: str) -> None:
    padding = "x" * DEFAULT_BODY_LIMIT
    if target == "cancel":
        body, path = json.dumps({"metadata": {"pad": padding}}).encode(), "/orders/order-3/cancel"
    else:
        body, path = track_body(new_order("big-1", metadata={"pad": padding})), "/orders/track"
    if framing == "chunked":
        pieces = [body[i : i + 1024] for i in range(0, len(body), 1024)]
        data = request(
            "POST",
            path,
            headers=auth(gateway, **JSON, **{"Transfer-Encoding": "chunked"}),
            body=chunked(*pieces),
            content_length=False,
        )
    else:
        data = request("POST", path, headers=auth(gateway, **JSON), body=body)
    assert await refused(gateway, data, 413, absent=("big-1",)) == {"max_bytes": DEFAULT_BODY_LIMIT}


@pytest.mark.parametrize("length", ["99999999999999999999999", "-1", "abc", "1, 2"])
async def test_an_unusable_content_length_is_400(gateway: GatewayStack, length: str) -> None:
    data = (
        request("POST", "/orders/order-3/cancel", headers=auth(gateway, **JSON, **{"Content-Length": length}))
        + b"{}"
    )
    assert await refused(gateway, data, 400) == MALFORMED


async def test_both_content_length_and_chunked_is_400(gateway: GatewayStack) -> None:
    """Request smuggling's classic: both framings at once."""
    headers = auth(gateway, **JSON, **{"Content-Length": "4", "Transfer-Encoding": "chunked"})
    data = request(
        "POST", "/orders/order-3/cancel", headers=headers, body=chunked(b"{}"), content_length=False
    )
    assert await refused(gateway, data, 400) == MALFORMED


# --- content types -------------------------------------------------------------------------------


WRONG_CONTENT_TYPES = [
    None,
    "",
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/jsonp",
    "application/json-patch+json",
    "application/problem+json",
    "application/vnd.api+json",
    "application/*",
    "*/*",
    "json",
    "application/json, text/plain",
    "application/xml",
]


@pytest.mark.parametrize("content_type", WRONG_CONTENT_TYPES)
async def test_a_wrong_or_missing_content_type_is_415(
    gateway: GatewayStack, content_type: str | None
) -> None:
    headers = auth(gateway) if content_type is None else auth(gateway, **{"Content-Type": content_type})
    shown = (content_type or "").split(";")[0].strip().lower() or "none"
    for path, body in (
        ("/orders/order-3/cancel", b"{}"),
        ("/orders/order-3/complete", b'{"metadata": {}}'),
        ("/orders/order-3/disable", b"{}"),
        ("/orders/track", track_body(new_order("ct-1"))),
    ):
        detail = await refused(
            gateway, request("POST", path, headers=headers, body=body), 415, absent=("ct-1",)
        )
        assert detail == {"content_type": shown}, path


# --- slow bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_sent_byte_by_byte_gets_408_and_the_connection_is_closed(
    slow_gateway: GatewayStack, framing: str
) -> None:
    body = b'{"metadata": {"note": "' + b"x" * 200 + b'"}}'  # 10 s at one byte per 50 ms
    if framing == "chunked":
        head = request(
            "POST",
            "/orders/order-3/cancel",
            headers=auth(slow_gateway, **JSON, **{"Transfer-Encoding": "chunked"}),
        )
        pieces = [b"1\r\n%c\r\n" % byte for byte in body]
    else:
        head = request(
            "POST",
            "/orders/order-3/cancel",
            headers=auth(slow_gateway, **JSON, **{"Content-Length": str(len(body))}),
        )
        pieces = [bytes([byte]) for byte in body]
    connection = await RawConnection.open(slow_gateway.rest_server.port)
    loop = asyncio.get_running_loop()

    async def dribble() -> None:
        with contextlib.suppress(ConnectionError):
            for piece in pieces:
                await connection.send(piece)
                await asyncio.sleep(DRIBBLE_INTERVAL_S)  # the slowness is the input

    await connection.send(head)
    started = loop.time()
    dribbler = asyncio.create_task(dribble())
    try:
        answer = await connection.response(wait_s=SLOW_BODY_TIMEOUT_S + 5)
        answered_after = loop.time() - started
        closed = await connection.closed_by_server(CLOSE_WAIT_S)
    finally:
        dribbler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dribbler
        await connection.close()
    assert contract_error(answer, 408) == {}
    assert answer.headers["Connection"] == "close"
    assert SLOW_BODY_TIMEOUT_S <= answered_after < SLOW_BODY_TIMEOUT_S + 3
    assert closed, "the connection stayed open after the 408"
    await assert_still_serving(slow_gateway)


@pytest.mark.parametrize(
    "tail",
    [b'3\r\n{"m\r\nzz\r\n', b'3\r\n{"m\r\n2\r\n{}XX\r\n0\r\n\r\n', b"-1\r\n{}\r\n0\r\n\r\n"],
    ids=["chunk size not hex", "chunk longer than declared", "negative chunk size"],
)
async def test_a_malformed_chunked_body_is_a_4xx(slow_gateway: GatewayStack, tail: bytes) -> None:
    """aiohttp does not fail the body when a chunk is malformed; the body timeout answers it (408)."""
    head = request(
        "POST",
        "/orders/order-3/cancel",
        headers=auth(slow_gateway, **JSON, **{"Transfer-Encoding": "chunked"}),
    )
    answer, connection = await exchange(slow_gateway.rest_server.port, head + tail)
    async with connection:
        assert answer.status in (400, 408), str(answer)
        contract_error(answer, answer.status)
        assert await connection.closed_by_server(CLOSE_WAIT_S)
    await assert_still_serving(slow_gateway)


# --- HTTP versions and pipelining ----------------------------------------------------------------


async def test_http_1_0_is_answered_in_http_1_0_and_closed(stack: GatewayStack) -> None:
    port = stack.rest_server.port
    read, connection = await exchange(
        port, request("GET", "/orders/order-3", headers=auth(stack), version="HTTP/1.0", host=False)
    )
    async with connection:
        assert (read.version, read.status) == ("HTTP/1.0", 200)
        assert read.json()["order_handle"] == "order-3"
        assert await connection.closed_by_server(CLOSE_WAIT_S)
    keep = auth(stack, Connection="keep-alive")
    async with await RawConnection.open(port) as connection:
        for rid in ("first", "second"):
            await connection.send(
                request("GET", "/orders/order-3", headers={**keep, "X-Request-ID": rid}, version="HTTP/1.0")
            )
            answer = await connection.response()
            assert (answer.status, answer.headers["X-Request-ID"]) == (200, rid)
    await assert_still_serving(stack)


HTTP_1_0_BAD_INPUT = {
    "malformed JSON": (("POST", "/orders/order-3/cancel"), JSON, b'{"metadata": ', 422),
    "no credentials": (("GET", "/orders/order-3"), {}, None, 401),
    "bad query": (("GET", "/orders/order-3?type=parcel"), None, None, 422),
    "not JSON": (("POST", "/orders/order-3/cancel"), {"Content-Type": "text/plain"}, b"{}", 415),
    "unknown route": (("GET", "/nope"), None, None, 404),
    "wrong method": (("DELETE", "/orders/order-3"), None, None, 405),
    "control character": (("GET", "/orders/a%00b"), None, None, 422),
}


@pytest.mark.parametrize(
    ("call", "headers", "body", "status"), HTTP_1_0_BAD_INPUT.values(), ids=HTTP_1_0_BAD_INPUT.keys()
)
async def test_bad_input_over_http_1_0_gets_the_same_errors(
    stack: GatewayStack,
    call: tuple[str, str],
    headers: dict[str, str] | None,
    body: bytes | None,
    status: int,
) -> None:
    """`headers` None: the credentials alone; {}: nothing; else the credentials and `headers`."""
    all_headers = auth(stack) if headers is None else {**(auth(stack) if headers else {}), **headers}
    answer, connection = await exchange(
        stack.rest_server.port,
        request(*call, headers=all_headers, body=body, version="HTTP/1.0", host=False),
    )
    async with connection:
        assert answer.version == "HTTP/1.0"
        contract_error(answer, status)
        if status == 401:
            assert answer.headers["WWW-Authenticate"] == 'Basic realm="hypertrack-gateway"'
        assert await connection.closed_by_server(CLOSE_WAIT_S)
    await assert_still_serving(stack)


@pytest.mark.parametrize(
    "version", ["HTTP/1.2", "HTTP/3.0", "HTTP/1", "http/1.1", "HTTPS/1.1", "HTTP/1.1 extra"]
)
async def test_an_unknown_http_version_is_400(gateway: GatewayStack, version: str) -> None:
    assert (
        await refused(gateway, request("GET", "/orders/order-3", headers=auth(gateway), version=version), 400)
        == MALFORMED
    )


async def test_an_absolute_form_target_is_served_like_its_path(stack: GatewayStack) -> None:
    """`GET http://host/path HTTP/1.1`, as clients send to proxies: RFC 9112 3.2.2 says a server must
    accept it. Its path and query mean what they mean in the usual form."""
    origin = f"http://127.0.0.1:{stack.rest_server.port}"
    async with await RawConnection.open(stack.rest_server.port) as connection:
        await connection.send(request("GET", f"{origin}/orders/order-3", headers=auth(stack)))
        read = await connection.response()
        assert (read.status, read.json()["status"]) == (200, "ongoing")
        await connection.send(
            request("POST", f"{origin}/orders/order-5/cancel?type=drop", headers=auth(stack))
        )
        cancelled = await connection.response()
        assert (cancelled.status, cancelled.json()["status"]) == (200, "cancelled")
        await connection.send(request("GET", f"{origin}/orders/a%00b", headers=auth(stack)))
        assert contract_error(await connection.response(), 422) == CONTROL
        await connection.send(request("GET", f"{origin}/orders/a%2Fb?type=parcel", headers=auth(stack)))
        assert list(contract_error(await connection.response(), 422)) == ["query"]
        await connection.send(request("GET", f"{origin}/no-such-route", headers=auth(stack)))
        assert contract_error(await connection.response(), 404) == {}
    await assert_still_serving(stack)


async def test_pipelined_requests_are_each_answered_in_order(stack: GatewayStack) -> None:
    """Nine requests in one write, good and bad (one with a body over the limit, which the server reads
    past): nine answers, in order, each with its own request id and status."""
    big = json.dumps({"metadata": {"pad": "x" * DEFAULT_BODY_LIMIT}}).encode()
    sequence: list[tuple[bytes, int, bool]] = [
        (request("GET", "/orders/order-3", headers=auth(stack)), 200, False),
        (cancel(stack, b'{"metadata": '), 422, False),
        (request("GET", "/nope", headers=auth(stack)), 404, False),
        (request("DELETE", "/orders/order-3", headers=auth(stack)), 405, False),
        (request("GET", "/orders/order-3", headers={"Authorization": "Basic eDp5"}), 401, False),
        (
            request(
                "POST",
                "/orders/order-3/cancel",
                headers=auth(stack, **{"Content-Type": "text/plain"}),
                body=b"{}",
            ),
            415,
            False,
        ),
        (cancel(stack, big), 413, False),
        (request("HEAD", "/orders/order-3", headers=auth(stack)), 200, True),
        (request("POST", "/orders/order-5/cancel", headers=auth(stack)), 200, False),
    ]
    tagged = [
        data.replace(b"\r\n", f"\r\nX-Request-ID: pipelined-{i}\r\n".encode(), 1)
        for i, (data, _, _) in enumerate(sequence)
    ]
    async with await RawConnection.open(stack.rest_server.port) as connection:
        await connection.send(b"".join(tagged))
        for i, (_, status, head) in enumerate(sequence):
            answer = await connection.response(head=head)
            assert answer.headers["X-Request-ID"] == f"pipelined-{i}", (i, str(answer))
            if status >= 400:
                contract_error(answer, status, head=head)
            else:
                assert answer.status == status, (i, str(answer))
        assert answer.json()["status"] == "cancelled"
    await assert_still_serving(stack)


async def test_pipelining_stops_at_a_malformed_request(stack: GatewayStack) -> None:
    """A request answered before a malformed one arrives stays answered; the malformed one gets 400 and
    the connection closes; nothing that came with it or after it runs, before or after it in the same
    write (aiohttp's parser drops the whole read): the cancels of order-4 never happen."""
    cancel_order_4 = request("POST", "/orders/order-4/cancel", headers=auth(stack))
    async with await RawConnection.open(stack.rest_server.port) as connection:
        await connection.send(
            request("GET", "/orders/order-3", headers=auth(stack, **{"X-Request-ID": "before"}))
        )
        before = await connection.response()
        assert (before.status, before.headers["X-Request-ID"]) == (200, "before")
        await connection.send(
            cancel_order_4 + request("GET", b"/orders/\xff", headers=auth(stack)) + cancel_order_4
        )
        assert contract_error(await connection.response(), 400) == MALFORMED
        assert await connection.closed_by_server(CLOSE_WAIT_S)
    await assert_still_serving(stack)  # order-4 still ongoing


# --- every method on every route -----------------------------------------------------------------


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "FROB"]
OPS_ROUTES = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/start.js"]
READ = {"GET": 200, "HEAD": 200}
ROUTES: dict[str, dict[str, int]] = {  # the statuses of the methods each route serves
    "/orders/track": {"GET": 404, "HEAD": 404, "POST": 201},  # GET and HEAD read the order named "track"
    "/orders/m-get": READ,
    "/orders/m-cancel/cancel": {"POST": 200},
    "/orders/m-complete/complete": {"POST": 200},
    "/orders/m-disable/disable": {"POST": 200},
    **dict.fromkeys(OPS_ROUTES, READ),
}


def documented(path: str, method: str) -> tuple[int, list[str] | None]:
    """The status the contract gives `method` on `path`, and the Allow list of a 405."""
    if method == "FROB":
        return 400, None  # not an HTTP method aiohttp's parser knows: a malformed request line
    if path not in ROUTES:
        return 404, None
    success = ROUTES[path]
    return (success[method], None) if method in success else (405, [m for m in METHODS if m in success])


async def test_every_method_on_every_route_gives_its_documented_status(stack: GatewayStack) -> None:
    paths = [*ROUTES, "/no-such-route", "/orders/m-get/refund", "/orders", "/orders/m-get/cancel/x"]
    handles = ("m-get", "m-cancel", "m-complete", "m-disable")
    tried = 0
    for path in paths:
        for method in METHODS:
            status, allowed = documented(path, method)
            body = (
                track_body(*[new_order(h) for h in handles])
                if (path, method) == ("/orders/track", "POST")
                else None
            )
            headers = auth(stack, **JSON) if body else auth(stack)
            answer, connection = await exchange(
                stack.rest_server.port,
                request(method, path, headers=headers, body=body),
                head=method == "HEAD",
            )
            async with connection:
                where = f"{method} {path}: {answer}"
                assert answer.headers.get("X-Request-ID"), where
                if status >= 400:
                    detail = contract_error(answer, status, head=method == "HEAD")
                    if allowed is not None:
                        assert answer.headers["Allow"] == ", ".join(allowed), where
                        assert method == "HEAD" or detail == {"allowed": allowed}, where
                else:
                    assert answer.status == status, where
                    assert method != "HEAD" or answer.body == b"", where
            tried += 1
    assert tried == len(paths) * len(METHODS)
    async with await RawConnection.open(stack.rest_server.port) as connection:
        expected = {
            "m-get": "ongoing",
            "m-cancel": "cancelled",
            "m-complete": "completed",
            "m-disable": "disabled",
        }
        assert {h: await status_of(connection, stack, h) for h in handles} == expected
    await assert_still_serving(stack)
