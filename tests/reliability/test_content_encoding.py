"""A body's Content-Encoding, over real sockets and both backends: a coding aiohttp decodes (gzip,
deflate) works; a body that does not decode as its coding says is 400, and one in a coding the
server does not support 415, each with the contract's error body, changing nothing and logging no
error; the server keeps serving.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.rest.body import DECODED_CODINGS
from gateway.testing import BackendKind, GatewayStack
from tests.reliability.rawhttp import RawResponse, contract_error, exchange, request

CANCEL = "/orders/order-1/cancel"
ORDER = "/orders/order-1"
JSON = {"Content-Type": "application/json"}
METADATA_BODY = json.dumps({"metadata": {"note": "compressed"}}).encode()

CORRUPT = [
    pytest.param("gzip", b"notgzip", id="gzip-not-gzip"),
    pytest.param("deflate", b"notdeflate", id="deflate-not-deflate"),
    pytest.param("gzip", b"\x1f\x8b\x08\x00" + b"\xff" * 20, id="gzip-bad-stream"),
    pytest.param("GZIP", b"notgzip", id="gzip-upper-case"),
]
# A deflate stream that stops short is found only at the body's end, by aiohttp's parser, which
# refuses the request itself: the server's malformed-request answer.
TRUNCATED = zlib.compress(METADATA_BODY)[:-6]
UNSUPPORTED = [
    pytest.param("compress", METADATA_BODY, id="compress"),
    pytest.param("x-foo", METADATA_BODY, id="x-foo"),
    pytest.param("gzip, gzip", gzip.compress(gzip.compress(METADATA_BODY)), id="two-codings"),
    pytest.param("identity, gzip", gzip.compress(METADATA_BODY), id="identity-then-gzip"),
    # Codings aiohttp knows but has no decoder for without optional packages: refused with the head.
    *[
        pytest.param(coding, METADATA_BODY, id=coding)
        for coding, module in (("br", "brotli"), ("zstd", "backports.zstd"))
        if importlib.util.find_spec(module.partition(".")[0]) is None
    ],
]
GOOD = [
    pytest.param("gzip", gzip.compress(METADATA_BODY), id="gzip"),
    pytest.param("deflate", zlib.compress(METADATA_BODY), id="deflate"),
    pytest.param("identity", METADATA_BODY, id="identity"),
]


@pytest.fixture(params=["in-process", "remote"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    backend: BackendKind = request.param
    async with GatewayStack.start(tmp_path, backend=backend) as running:
        yield running


async def send(
    stack: GatewayStack, coding: str, body: bytes, *, credentials: bool = True, path: str = CANCEL
) -> RawResponse:
    headers: dict[str, str] = {**JSON, "Content-Encoding": coding}
    if credentials:
        headers.update(stack.rest_auth())
    answer, connection = await exchange(
        stack.rest_server.port, request("POST", path, headers=headers, body=body)
    )
    await connection.close()
    return answer


async def order(stack: GatewayStack) -> dict[str, Any]:
    answer, connection = await exchange(
        stack.rest_server.port, request("GET", ORDER, headers=stack.rest_auth())
    )
    await connection.close()
    assert answer.status == 200, str(answer)
    document: dict[str, Any] = answer.json()
    return document


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


async def still_serving(stack: GatewayStack) -> None:
    """The order is untouched, and a plain cancel on a new connection works."""
    assert (await order(stack))["status"] != "cancelled"
    answer = await send(stack, "identity", b"{}")
    assert answer.status == 200, str(answer)
    assert answer.json()["status"] == "cancelled"


@pytest.mark.parametrize(("coding", "body"), CORRUPT)
async def test_a_body_that_does_not_decode_is_400(
    stack: GatewayStack, coding: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = await send(stack, coding, body)
        assert contract_error(answer, 400) == {
            "reason": "BAD_CONTENT_ENCODING",
            "content_encoding": coding.lower(),
        }
        assert answer.headers.get("Connection") == "close"  # the rest of the body cannot be read
        await still_serving(stack)
    assert errors_logged(caplog) == []


async def test_a_deflate_body_cut_short_is_400(stack: GatewayStack, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        answer = await send(stack, "deflate", TRUNCATED)
        assert contract_error(answer, 400)["reason"] in ("BAD_CONTENT_ENCODING", "BAD_REQUEST")
        await still_serving(stack)
    assert errors_logged(caplog) == []


async def test_without_credentials_a_body_that_does_not_decode_is_no_internal_error(
    stack: GatewayStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Whether the credentials or the body are refused first, neither is a 500 or a logged error."""
    with caplog.at_level(logging.INFO):
        answer = await send(stack, "gzip", b"notgzip", credentials=False)
        assert answer.status in (400, 401), str(answer)
        contract_error(answer, answer.status)
        await still_serving(stack)
    assert errors_logged(caplog) == []


@pytest.mark.parametrize(("coding", "body"), UNSUPPORTED)
async def test_a_coding_the_server_does_not_support_is_415(
    stack: GatewayStack, coding: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = await send(stack, coding, body)
        detail = contract_error(answer, 415)
        assert detail["content_encoding"] == coding
        assert detail["supported"] == ["identity", *DECODED_CODINGS]
        assert answer.headers.get("Accept-Encoding") == ", ".join(DECODED_CODINGS)
        await still_serving(stack)
    assert errors_logged(caplog) == []


@pytest.mark.parametrize(("coding", "body"), GOOD)
async def test_a_body_in_a_supported_coding_is_decoded(stack: GatewayStack, coding: str, body: bytes) -> None:
    answer = await send(stack, coding, body)
    assert answer.status == 200, str(answer)
    document = answer.json()
    assert document["status"] == "cancelled"
    assert document["metadata"]["note"] == "compressed"
