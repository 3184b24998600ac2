"""The request body: size limit, content coding, content type, and strict JSON.

Strict means: UTF-8 only, no NaN or Infinity, no duplicate keys, bounded nesting. The
standard library parser is used for request bodies because it can refuse duplicate
keys (orjson keeps the last silently); bodies here are small, responses use orjson.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from gateway.rest.errors import RestError, validation_error

try:
    from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
except ImportError:  # an aiohttp without them decodes neither
    HAS_BROTLI = HAS_ZSTD = False

MAX_DEPTH = 64

# The content codings aiohttp's parser decodes before the body reaches read_body (br and zstd
# only with their libraries installed; without them the parser itself refuses the request).
DECODED_CODINGS = ("gzip", "deflate", *(("br",) if HAS_BROTLI else ()), *(("zstd",) if HAS_ZSTD else ()))

# The statuses a body is refused with, named for the handlers here and the OpenAPI document.
BAD_ENCODING_STATUS = 400  # its Content-Encoding does not decode: a framing error, like a malformed request
BODY_TIMEOUT_STATUS = 408  # it did not arrive in time
BODY_TOO_LARGE_STATUS = 413  # larger than the limit
NOT_JSON_STATUS = 415  # its Content-Type is not application/json, or its Content-Encoding is unsupported
INVALID_BODY_STATUS = 422  # not UTF-8, not strict JSON, nested too deep (validation_error's status)
CLIENT_GONE_STATUS = 499  # the caller closed the connection first: logged, never received
BODY_STATUSES = (BODY_TIMEOUT_STATUS, BODY_TOO_LARGE_STATUS, NOT_JSON_STATUS, INVALID_BODY_STATUS)


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


class _Constant(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    raise _Constant(f"{name} is not valid JSON")


def _depth(value: object, limit: int) -> bool:
    """Whether `value` nests no deeper than `limit`."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body; raises a 422 on the `body` location."""
    if raw == b"{}":
        return {}  # the most common body by far needs no parser
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant
        )
    except UnicodeDecodeError:
        raise validation_error({"body": {"body": ["must be UTF-8"]}}) from None
    except _DuplicateKey as error:
        raise validation_error({"body": {str(error): ["is given more than once"]}}) from None
    except RecursionError:
        raise validation_error({"body": {"body": [f"is nested deeper than {MAX_DEPTH} levels"]}}) from None
    except (json.JSONDecodeError, _Constant) as error:
        raise validation_error({"body": {"body": [f"is not valid JSON: {error}"]}}) from None
    except ValueError:
        # int() refuses more digits than sys.get_int_max_str_digits(); its message tells a
        # Python programmer what to call, which is nothing a caller should read.
        raise validation_error(
            {"body": {"body": ["is not valid JSON: a number has too many digits"]}}
        ) from None
    if not _depth(value, MAX_DEPTH):
        raise validation_error({"body": {"body": [f"is nested deeper than {MAX_DEPTH} levels"]}})
    return value


def _too_large(max_bytes: int) -> RestError:
    return RestError(
        BODY_TOO_LARGE_STATUS, f"the body is larger than {max_bytes} bytes", {"max_bytes": max_bytes}
    )


def content_coding(request: web.BaseRequest) -> str | None:
    """The body's one content coding, already decoded by aiohttp (None: identity); any other
    Content-Encoding, which aiohttp passes on undecoded, or several codings at once, is 415."""
    values = request.headers.getall("Content-Encoding", [])
    codings = [c.strip().lower() for value in values for c in value.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    # aiohttp decodes a body only when its one Content-Encoding is exactly one coding it knows.
    if len(values) == 1 and (coding := values[0].strip().lower()) in DECODED_CODINGS:
        return coding
    raise unsupported_coding(", ".join(values))


def unsupported_coding(shown: str) -> RestError:
    """The 415 of a Content-Encoding this server does not decode."""
    return RestError(
        NOT_JSON_STATUS,
        f"the body's Content-Encoding {shown!r} is not supported: send it as {', '.join(DECODED_CODINGS)}"
        " or identity",
        {"content_encoding": shown, "supported": ["identity", *DECODED_CODINGS]},
        {"Accept-Encoding": ", ".join(DECODED_CODINGS)},
    )


def _undecodable(coding: str | None, error: RequestPayloadError) -> RestError:
    """A body aiohttp could not read: its content coding does not decode (or, without one, its
    chunked framing is broken). The rest of it cannot be read either: the connection closes."""
    if coding is not None and isinstance(error.__cause__, ContentEncodingError):
        message = f"the body does not decode as its Content-Encoding ({coding}) says"
        detail = {"reason": "BAD_CONTENT_ENCODING", "content_encoding": coding}
    else:
        message = "the body's framing is malformed"
        detail = {"reason": "BAD_REQUEST"}
    return RestError(BAD_ENCODING_STATUS, message, detail, {"Connection": "close"}, close_connection=True)


async def read_body(request: web.BaseRequest, *, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, decoded from its Content-Encoding (else 415; 400 if it does not decode),
    at most `max_bytes` of it (else 413), within `timeout_s` (else 408)."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise _too_large(max_bytes)
    if not request.body_exists:
        return b""
    coding = content_coding(request)
    content = request.content
    try:
        if content.is_eof():
            # The whole body came with the headers (small bodies always do): no waiting, so no timer.
            body = content.read_nowait()
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
            return body
        return await _read_streamed(request, max_bytes=max_bytes, timeout_s=timeout_s)
    except RequestPayloadError as error:
        raise _undecodable(coding, error) from None


async def _read_streamed(request: web.BaseRequest, *, max_bytes: int, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
    except ConnectionError:
        # The caller went away (or half-closed) before its body was complete: nobody is left to
        # answer, but the access log and metrics say so (499), not an internal failure (500).
        raise RestError(
            CLIENT_GONE_STATUS, "the connection closed before the body arrived", {"reason": "CANCELLED"}
        ) from None
    except TimeoutError:
        raise RestError(
            BODY_TIMEOUT_STATUS,
            f"the body did not arrive within {timeout_s:g} seconds",
            {},
            {"Connection": "close"},
            close_connection=True,
        ) from None
    return b"".join(chunks)


def require_json_content_type(request: web.BaseRequest) -> None:
    """A body must say it is JSON; anything else is 415."""
    content_type = request.headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        shown = media_type or "none"
        raise RestError(
            NOT_JSON_STATUS,
            f"the body must be application/json (Content-Type was {shown})",
            {"content_type": shown},
        )
