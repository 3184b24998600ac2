"""Request bodies: strict JSON, the content type, and the size limit."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_protocol import RequestPayloadError

from gateway.domain.errors import InvalidArgument
from gateway.jsonmap import decode
from gateway.protos import orders_service_pb2
from gateway.rest.body import (
    DECODED_CODINGS,
    MAX_DEPTH,
    content_coding,
    parse_json,
    read_body,
    require_json_content_type,
)
from gateway.rest.errors import RestError


def refused(raw: bytes) -> dict[str, Any]:
    """The 422 detail parse_json answers `raw` with."""
    with pytest.raises(RestError) as raised:
        parse_json(raw)
    assert raised.value.status == 422
    return raised.value.detail


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"{}", {}),
        (b' {"metadata": {"a": [1, 2.5, null, true, "x"]}} ', {"metadata": {"a": [1, 2.5, None, True, "x"]}}),
        (b"[]", []),
        (b"null", None),
        ('{"k": "zürich-🚚"}'.encode(), {"k": "zürich-🚚"}),
        (b'{"k": "\\u00fc"}', {"k": "ü"}),
        (b'{"a": {"k": 1}, "b": {"k": 2}}', {"a": {"k": 1}, "b": {"k": 2}}),  # the same key in two objects
    ],
)
def test_valid_json_is_parsed(raw: bytes, value: object) -> None:
    assert parse_json(raw) == value


def test_numbers_keep_their_kind() -> None:
    value = parse_json(b'{"i": 1, "f": 1.0, "e": 1e2}')
    assert [type(v) for v in value.values()] == [int, float, float]


def test_key_order_is_kept() -> None:
    assert list(parse_json(b'{"z": 1, "a": 2, "m": 3}')) == ["z", "a", "m"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"metadata": {}, "metadata": {}}', "metadata"),
        (b'{"a": 1, "b": 2, "a": 1}', "a"),
        (b'{"metadata": {"k": 1, "k": 2}}', "k"),
        (b'[{"x": 1, "x": 1}]', "x"),
        (b'{"\\u0061": 1, "a": 2}', "a"),  # the same key, escaped once
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(raw: bytes, key: str) -> None:
    assert refused(raw) == {"body": {key: ["is given more than once"]}}


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"metadata": {"k": NaN}}',
        b'{"metadata": {"k": Infinity}}',
        b'{"metadata": {"k": -Infinity}}',
        b"[1, -Infinity]",
    ],
)
def test_nan_and_infinity_are_not_json(raw: bytes) -> None:
    detail = refused(raw)
    assert list(detail) == ["body"]
    assert detail["body"]["body"][0].startswith("is not valid JSON")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"{'a': 1}",
        b'{"a": 1,}',
        b"[1, 2",
        b'{"a" 1}',
        b"{} {}",
        b"01",
        b'"\x01"',  # a raw control character inside a string
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"1" * 5000,  # more digits than Python converts
        b'{"a": undefined}',
    ],
)
def test_malformed_json_is_refused(raw: bytes) -> None:
    detail = refused(raw)
    assert list(detail) == ["body"]
    assert list(detail["body"]) == ["body"]
    assert detail["body"]["body"][0].startswith("is not valid JSON")


@pytest.mark.parametrize(
    "raw", [b'{"k": "\xff"}', b'{"k": "\xc3"}', b"\xfe\xff{}", '{"k": "ü"}'.encode("latin-1")]
)
def test_a_body_that_is_not_utf8_is_refused(raw: bytes) -> None:
    assert refused(raw) == {"body": {"body": ["must be UTF-8"]}}


def nested(kind: str, depth: int) -> bytes:
    """`depth` arrays or objects, each inside the one before."""
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 10_000, 100_000])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_deep_nesting_is_refused(kind: str, depth: int) -> None:
    assert refused(nested(kind, depth)) == {"body": {"body": [f"is nested deeper than {MAX_DEPTH} levels"]}}


@pytest.mark.parametrize("kind", ["array", "object"])
def test_nesting_up_to_the_limit_is_allowed(kind: str) -> None:
    value = parse_json(nested(kind, MAX_DEPTH))
    for _ in range(MAX_DEPTH - 1):
        value = value[0] if kind == "array" else value["a"]
    assert value in ([], {})


@pytest.mark.parametrize("number", [10**30, -(10**30), 2**64, 2**63])
def test_huge_integers_pass_the_parser_and_are_refused_by_the_mapping(number: int) -> None:
    raw = json.dumps({"metadata": {"k": number}}).encode()
    value = parse_json(raw)
    assert value == {"metadata": {"k": number}}
    with pytest.raises(InvalidArgument) as raised:
        decode(orders_service_pb2.OrderUpdate, value, path="update")
    assert [v.field for v in raised.value.violations] == ["update.metadata.k"]


def test_a_number_too_large_for_a_float_is_refused_by_the_mapping() -> None:
    value = parse_json(b'{"metadata": {"k": 1e400}}')
    with pytest.raises(InvalidArgument) as raised:
        decode(orders_service_pb2.OrderUpdate, value, path="update")
    assert [v.field for v in raised.value.violations] == ["update.metadata.k"]


def test_a_lone_surrogate_passes_the_parser_and_is_refused_by_the_mapping() -> None:
    value = parse_json(b'{"metadata": {"k": "\\ud800"}}')
    assert value == {"metadata": {"k": "\ud800"}}
    with pytest.raises(InvalidArgument) as raised:
        decode(orders_service_pb2.OrderUpdate, value, path="update")
    assert [v.field for v in raised.value.violations] == ["update.metadata.k"]


# The content type


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", " application/json ;x=y"],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    require_json_content_type(make_mocked_request("POST", "/", headers={"Content-Type": content_type}))


@pytest.mark.parametrize(
    ("headers", "shown"),
    [
        ({"Content-Type": "text/plain"}, "text/plain"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "application/x-www-form-urlencoded"),
        ({"Content-Type": "application/jsonx"}, "application/jsonx"),
        ({"Content-Type": "application/merge-patch+json"}, "application/merge-patch+json"),
        ({"Content-Type": ""}, "none"),
        ({}, "none"),
    ],
)
def test_other_content_types_are_415(headers: dict[str, str], shown: str) -> None:
    with pytest.raises(RestError) as raised:
        require_json_content_type(make_mocked_request("POST", "/", headers=headers))
    assert raised.value.status == 415
    assert raised.value.detail == {"content_type": shown}


# The size limit


def request_with(
    chunks: list[bytes], *, headers: dict[str, str] | None = None, eof: bool = True
) -> web.Request:
    payload = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    for chunk in chunks:
        payload.feed_data(chunk)
    if eof:
        payload.feed_eof()
    return make_mocked_request("POST", "/", headers=headers or {}, payload=payload)


async def test_a_body_within_the_limit_is_read_whole() -> None:
    request = request_with([b'{"meta', b'data": {}}'])
    assert await read_body(request, max_bytes=20, timeout_s=5) == b'{"metadata": {}}'


async def test_an_absent_body_is_empty() -> None:
    assert await read_body(make_mocked_request("POST", "/"), max_bytes=10, timeout_s=5) == b""


async def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    request = request_with([], headers={"Content-Length": "11"}, eof=False)
    with pytest.raises(RestError) as raised:
        await read_body(request, max_bytes=10, timeout_s=5)
    assert raised.value.status == 413
    assert raised.value.detail == {"max_bytes": 10}


async def test_a_streamed_body_over_the_limit_is_413() -> None:
    request = request_with([b"x" * 6, b"x" * 5])  # no Content-Length: chunked
    with pytest.raises(RestError) as raised:
        await read_body(request, max_bytes=10, timeout_s=5)
    assert raised.value.status == 413


async def test_a_body_of_exactly_the_limit_is_read() -> None:
    assert await read_body(request_with([b"x" * 10]), max_bytes=10, timeout_s=5) == b"x" * 10


async def test_a_body_that_does_not_arrive_in_time_is_408_and_closes_the_connection() -> None:
    request = request_with([b"{"], eof=False)
    with pytest.raises(RestError) as raised:
        await read_body(request, max_bytes=10, timeout_s=0.01)
    assert raised.value.status == 408
    assert raised.value.headers == {"Connection": "close"}


# The content coding


@pytest.mark.parametrize(
    ("headers", "coding"),
    [
        ({}, None),
        ({"Content-Encoding": "identity"}, None),
        ({"Content-Encoding": "gzip"}, "gzip"),
        ({"Content-Encoding": " Deflate "}, "deflate"),
    ],
)
def test_codings_aiohttp_decodes_are_accepted(headers: dict[str, str], coding: str | None) -> None:
    assert content_coding(make_mocked_request("POST", "/", headers=headers)) == coding


@pytest.mark.parametrize("value", ["compress", "x-foo", "gzip, gzip", "identity, gzip", "gzip;q=1"])
def test_other_codings_are_415_naming_the_supported_ones(value: str) -> None:
    with pytest.raises(RestError) as raised:
        content_coding(make_mocked_request("POST", "/", headers={"Content-Encoding": value}))
    assert raised.value.status == 415
    assert raised.value.detail == {"content_encoding": value, "supported": ["identity", *DECODED_CODINGS]}
    assert raised.value.headers == {"Accept-Encoding": ", ".join(DECODED_CODINGS)}


async def test_a_body_that_does_not_decode_is_400_and_closes_the_connection() -> None:
    request = request_with([], headers={"Content-Encoding": "gzip"}, eof=False)
    failure = RequestPayloadError("cannot decode")
    failure.__cause__ = ContentEncodingError("Can not decode content-encoding: gzip")
    request.content.set_exception(failure)
    with pytest.raises(RestError) as raised:
        await read_body(request, max_bytes=10, timeout_s=5)
    assert raised.value.status == 400
    assert raised.value.detail == {"reason": "BAD_CONTENT_ENCODING", "content_encoding": "gzip"}
    assert raised.value.close_connection and raised.value.headers == {"Connection": "close"}
