"""The one gRPC status -> HTTP status table, and the one error body every failure gets.

Errors are `{"detail": {...}, "message": "..."}` with Content-Type application/json. A 422
`detail` is `{"<location>": {"<field>": ["<message>", ...]}}`; other errors' `detail`
holds the ErrorInfo reason and metadata the service sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import grpc
import orjson
from aiohttp import web
from google.rpc import status_pb2

from gateway.domain.errors import FieldViolation
from gateway.rest.rules import RestCall
from gateway.rpc.status import error_info, field_violations, retry_delay_s
from gateway.calls.auth import REALM

Code = grpc.StatusCode

# google/rpc/code.proto's table, as grpc-gateway and Envoy use it, with HyperTrack's two
# conventions: INVALID_ARGUMENT -> 422 and FAILED_PRECONDITION -> 409.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 422,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 409,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
}

# What a failure says when the service sent no details of its own (the transport failed):
# never the transport's words, which may carry addresses and internals.
_GENERIC_MESSAGES = {
    Code.UNAVAILABLE: ("BACKEND_UNAVAILABLE", "the order service is unavailable; retry later"),
    Code.DEADLINE_EXCEEDED: ("DEADLINE_EXCEEDED", "the order service did not answer within the deadline"),
    Code.CANCELLED: ("CANCELLED", "the call was cancelled"),
    Code.RESOURCE_EXHAUSTED: ("RESOURCE_EXHAUSTED", "too many requests; retry later"),
    Code.UNIMPLEMENTED: ("UNIMPLEMENTED", "the order service does not implement this call"),
}
_INTERNAL = ("INTERNAL", "internal error")

JSON_HEADERS = {"Content-Type": "application/json"}


class RestError(Exception):
    """A failure found by the front end itself, before or instead of the gRPC call."""

    def __init__(
        self,
        status: int,
        message: str,
        detail: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = dict(detail or {})
        self.headers = dict(headers or {})
        self.close_connection = close_connection


def validation_error(problems: Mapping[str, Mapping[str, list[str]]]) -> RestError:
    """A 422 whose detail is {location: {field: [messages]}}."""
    parts = [
        f"{loc}.{name}: {'; '.join(msgs)}"
        for loc, fields in problems.items()
        for name, msgs in fields.items()
    ]
    return RestError(422, "invalid request: " + " | ".join(parts), {k: dict(v) for k, v in problems.items()})


def locate(call: RestCall, violations: Iterable[FieldViolation]) -> dict[str, dict[str, list[str]]]:
    """Field violations of the request message, placed where each field travels in HTTP."""
    detail: dict[str, dict[str, list[str]]] = {}
    for violation in violations:
        location, name = call.location_of(violation.field)
        detail.setdefault(location, {}).setdefault(name, []).append(violation.description)
    return detail


def _encodable(value: object) -> object:
    """`value` with lone surrogates (from a body's `"\\ud800"`, which has no UTF-8 form) escaped."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value


def error_body(detail: Mapping[str, object], message: str) -> bytes:
    body = {"detail": detail, "message": message}
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:  # an error that names what the caller sent may quote a surrogate
        return orjson.dumps(_encodable(body))


def error_response(status: int, message: str, detail: Mapping[str, object], **headers: str) -> web.Response:
    all_headers = {**JSON_HEADERS, **headers}
    if status == 401:
        all_headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    return web.Response(status=status, body=error_body(detail, message), headers=all_headers)


def rest_error_response(error: RestError) -> web.Response:
    return error_response(error.status, error.message, error.detail, **error.headers)


def rpc_error_response(
    call: RestCall, code: grpc.StatusCode, status: status_pb2.Status | None
) -> web.Response:
    """The HTTP answer to a failed call, from its code and google.rpc.Status details."""
    http_status = HTTP_STATUS.get(code, 500)
    info = error_info(status)
    if status is None or info is None:
        reason, message = _GENERIC_MESSAGES.get(code, _INTERNAL)
        return error_response(http_status, message, {"reason": reason})
    if code == Code.INVALID_ARGUMENT:
        detail: dict[str, object] = dict(locate(call, field_violations(status)))
    else:
        detail = {"reason": info.reason, **dict(info.metadata)}
    headers = {}
    retry_after = retry_delay_s(status)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return error_response(http_status, status.message, detail, **headers)
