"""Fuzzing the REST front end with hypothesis: no body, path or query string a caller can send makes
the gateway answer 5xx, and every answer is a status of the contract, errors with the error body.

Hypothesis drives a synchronous property, so each test starts one gateway on its own event loop and
runs the property in a worker thread (`asyncio.to_thread`), which talks plain HTTP/1.1 to it over
loopback with http.client: no client-side normalisation of paths, bodies or headers.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import unicodedata
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.rest.app import RestSettings
from gateway.testing import BackendKind, GatewayStack

BACKENDS: list[BackendKind] = ["in-process", "remote"]
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BODY_LIMIT = 2048
DEMO_HANDLES = {"order-1", "order-2", "order-3", "order-4", "order-5"}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# aiohttp refuses request lines over 8190 bytes itself (400, text/plain) before the gateway sees them.
MAX_TARGET = 8000


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class RawClient:
    """Plain HTTP/1.1 to the gateway: the request target and body go out exactly as given."""

    def __init__(self, port: int, authorization: str) -> None:
        self._port = port
        self._authorization = authorization

    def send(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        try:
            all_headers = {"Authorization": self._authorization, **(headers or {})}
            connection.request(method, target, body=body, headers=all_headers)
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()


def check(answer: Answer, allowed: Collection[int], method: str = "POST") -> dict[str, Any] | None:
    """Assert the answer is allowed, never 5xx, and carries what every answer carries; the error body."""
    assert answer.status < 500, answer
    assert answer.status in allowed, answer
    assert answer.headers.get("x-request-id"), answer
    if answer.status < 400:
        return None
    assert answer.headers["content-type"].split(";")[0] == "application/json", answer
    if method == "HEAD":
        return None
    document = orjson.loads(answer.body)
    assert isinstance(document, dict), answer
    assert set(document) == {"detail", "message"}, answer
    assert isinstance(document["detail"], dict), answer
    assert isinstance(document["message"], str), answer
    return document


async def run_property(
    tmp_path: Path, backend: BackendKind, prop: Callable[[RawClient], None], rest: RestSettings | None = None
) -> None:
    """Run `prop` against one gateway, in a thread, while the gateway serves on this loop."""
    async with GatewayStack.start(tmp_path, backend=backend, rest=rest) as stack:
        client = RawClient(stack.rest_server.port, stack.rest_auth()["Authorization"])
        await asyncio.to_thread(prop, client)


# Strategies


# Text as json.loads may return it: any character, lone surrogates included (json.dumps writes them as
# `\ud800` escapes, which json.loads turns back into strings with no UTF-8 form).
ODD_CHARACTERS = st.characters(categories=["Cs", "Cc"])
TEXT = st.text(max_size=20) | st.text(ODD_CHARACTERS | st.sampled_from('a"\\/'), max_size=4)
KEYS = st.text(max_size=8) | st.text(ODD_CHARACTERS | st.sampled_from("a."), max_size=3)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | TEXT
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
        max_leaves=max_leaves,
    )


BODY_KEYS = (
    st.sampled_from(["metadata", "Metadata", "metadata ", "meta", "update", "status", "order_handle", ""])
    | KEYS
)
TOKENS = st.sampled_from(
    [
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b'"\\ud800"',
        b"1e999",
        b"-0",
        b"10" * 30,
        b",",
        b"}",
        b"]",
        b":",
        b"\xff",
    ]
)


@st.composite
def near_misses(draw: st.DrawFn) -> bytes:
    """Bodies close to the valid ones: `{"metadata": {...}}` with a wrong key, value or byte."""
    document = draw(
        st.one_of(
            st.fixed_dictionaries({"metadata": st.dictionaries(KEYS, json_values(), max_size=4)}),
            st.dictionaries(BODY_KEYS, json_values(), max_size=3),
            st.just({}),
        )
    )
    raw = json.dumps(document).encode()
    mutation = draw(st.sampled_from(["none", "truncate", "insert", "duplicate", "wrap"]))
    if mutation == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif mutation == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(TOKENS) + raw[at:]
    elif mutation == "duplicate" and raw.startswith(b"{") and raw != b"{}":
        raw = raw[:-1] + b", " + raw[1:]  # every key again
    elif mutation == "wrap":
        raw = b"[" + raw + b"]"
    return raw


BODIES = st.one_of(
    st.binary(max_size=300),
    json_values().map(lambda value: json.dumps(value).encode()),
    near_misses(),
    st.integers(BODY_LIMIT - 20, BODY_LIMIT + 20).map(lambda n: b'{"metadata": {"k": "' + b"x" * n + b'"}}'),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        None,
    ]
) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


def track_bodies() -> st.SearchStrategy[bytes]:
    """Track Orders requests, valid and nearly so."""
    geometry = st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("Point"), "coordinates": st.lists(st.floats(-200, 200), min_size=0, max_size=3)}
        ),
        json_values(4),
    )
    order = st.fixed_dictionaries(
        {"order_handle": st.text(max_size=10) | json_values(2)},
        optional={
            "type": st.sampled_from(["pick", "drop", "PICK", "", "unspecified"]) | json_values(2),
            "type_index": st.integers(-3, 3) | json_values(2),
            "destination": st.fixed_dictionaries({"geometry": geometry}, optional={"radius": json_values(1)}),
            "metadata": json_values(6),
            "scheduled_at": st.sampled_from(["2023-10-26T02:30:00.000Z", "2023-10-26", "", "x"])
            | json_values(1),
        },
    )
    body = st.fixed_dictionaries(
        {},
        optional={
            "worker_handle": st.text(max_size=10) | json_values(2),
            "track_mode": st.sampled_from(["on_time", "flex", "ON_TIME", ""]) | json_values(1),
            "orders": st.lists(order, max_size=3) | json_values(3),
            "extra": json_values(2),
        },
    )
    return body.map(lambda value: json.dumps(value).encode())


HANDLE_SOUP = st.lists(
    st.sampled_from(
        ["%FF", "%", "%2", "%zz", "%2F", "%25", "%2525", "..", ".", "%00", "%C3", "%C3%A9", "%ED%A0%80"]
    )
    | st.sampled_from(["a", "~", "+", "%2E", "-", "_", "!", "$", "'", "(", "*", ",", ";", "=", ":", "@"]),
    max_size=10,
).map("".join)
SEGMENTS = st.one_of(
    st.text(max_size=30).map(lambda text: quote(text, safe="")),
    HANDLE_SOUP,
    st.sampled_from(
        ["orders", "cancel", "complete", "disable", "track", "order-1", "order-2", "order-3", ""]
    ),
    st.integers(200, 1500).map(lambda n: "h" * n),
)
PATHS = st.lists(SEGMENTS, max_size=5).map(lambda segments: "/" + "/".join(segments)) | st.tuples(
    SEGMENTS, st.sampled_from(["", "/cancel", "/complete", "/disable", "/track", "/"])
).map(lambda parts: "/orders/" + parts[0] + parts[1])

QUERY_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)
QUERY_PARTS = st.one_of(
    st.sampled_from(["type", "type_index", "fulfillment_attempt", "Type", "order_handle", "metadata", ""]),
    st.sampled_from(
        ["pick", "drop", "0", "1", "-1", "2147483648", "1.5", "+1", "%20", "", "%FF", "%", "%zz", "+"]
    ),
    st.text(max_size=12).map(lambda text: quote(text, safe="")),
    QUERY_TEXT,
)
QUERIES = (
    st.lists(
        st.tuples(QUERY_PARTS, st.sampled_from(["=", "", "=="]), QUERY_PARTS).map("".join), max_size=6
    ).map("&".join)
    | QUERY_TEXT
)


# Properties


@pytest.mark.parametrize("backend", BACKENDS)
async def test_no_body_makes_the_gateway_fail(tmp_path: Path, backend: BackendKind) -> None:
    targets = st.sampled_from(
        [
            ("/orders/order-3/cancel", {200, 409}),
            ("/orders/order-4/complete", {200, 409}),
            ("/orders/order-5/disable", {200, 409}),
            ("/orders/order-2/cancel", {200, 409}),  # ambiguous: 422 unless the body is refused first
            ("/orders/order-1/cancel?type=drop", {200, 409}),
            ("/orders/missing/cancel", {404}),
        ]
    )

    @FUZZ
    @given(target=targets, body=BODIES, content_type=CONTENT_TYPES)
    def prop(client: RawClient, target: tuple[str, set[int]], body: bytes, content_type: str | None) -> None:
        path, outcomes = target
        headers = {} if content_type is None else {"Content-Type": content_type}
        answer = client.send("POST", path, body, headers)
        check(answer, outcomes | {413, 415, 422})

    await run_property(tmp_path, backend, prop, RestSettings(max_body_bytes=BODY_LIMIT))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_no_track_request_makes_the_gateway_fail(tmp_path: Path, backend: BackendKind) -> None:
    @FUZZ
    @given(body=track_bodies() | BODIES)
    def prop(client: RawClient, body: bytes) -> None:
        answer = client.send("POST", "/orders/track", body, {"Content-Type": "application/json"})
        check(answer, {201, 409, 413, 422})

    await run_property(tmp_path, backend, prop, RestSettings(max_body_bytes=BODY_LIMIT))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_no_path_makes_the_gateway_fail(tmp_path: Path, backend: BackendKind) -> None:
    @FUZZ
    @given(method=st.sampled_from(METHODS), path=PATHS.filter(lambda path: len(path) < MAX_TARGET))
    def prop(client: RawClient, method: str, path: str) -> None:
        answer = client.send(method, path)
        document = check(answer, {200, 201, 404, 405, 409, 415, 422}, method)
        if answer.status == 405:
            assert answer.headers["allow"]
        if answer.status == 422 and document is not None:
            assert set(document["detail"]) <= {"path", "query", "body"}, document

    await run_property(tmp_path, backend, prop)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_handle_in_the_path_is_decoded_exactly_once(tmp_path: Path, backend: BackendKind) -> None:
    handles = st.text(max_size=300) | st.text(alphabet="%25Fa/+. ", max_size=20)

    @FUZZ
    @given(handle=handles)
    def prop(client: RawClient, handle: str) -> None:
        answer = client.send("GET", "/orders/" + quote(handle, safe=""))
        document = check(answer, {200, 404, 422}, "GET")
        valid = 1 <= len(handle) <= 255 and not any(unicodedata.category(c) == "Cc" for c in handle)
        if handle in DEMO_HANDLES:
            assert answer.status in (200, 422)
        elif valid:
            assert answer.status == 404, answer
            assert document is not None
            assert document["detail"]["order_handle"] == handle
        else:
            assert answer.status == 422, answer
            assert document is not None
            assert list(document["detail"]) == ["path"]
            assert list(document["detail"]["path"]) == ["order_handle"]

    await run_property(tmp_path, backend, prop)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_no_query_string_makes_the_gateway_fail(tmp_path: Path, backend: BackendKind) -> None:
    @FUZZ
    @given(query=QUERIES, path=st.sampled_from(["/orders/order-3", "/orders/order-2", "/orders/missing"]))
    def prop(client: RawClient, query: str, path: str) -> None:
        answer = client.send("GET", f"{path}?{query}")
        document = check(answer, {200, 404, 422}, "GET")
        if answer.status == 422 and document is not None:
            assert list(document["detail"]) == ["query"], document

    await run_property(tmp_path, backend, prop)
