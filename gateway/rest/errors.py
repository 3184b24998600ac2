"""The one gRPC status -> HTTP status table, and the one function that turns any failure on the
REST side into a response with the one error body.

Errors are `{"detail": {...}, "message": "..."}` with Content-Type application/json. A 422
`detail` is `{"<location>": {"<field>": ["<message>", ...]}}`; other errors' `detail` holds the
error's reason and metadata.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import grpc
import orjson
from aiohttp import web

from gateway.calls.auth import REALM
from gateway.domain.errors import FieldViolation, InvalidArgument, OrderError
from gateway.rest.router import MethodNotAllowed, NoRoute
from gateway.rest.rules import RestCall
from gateway.rpc.status import bounded, code_of, internal_error

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


EXPECTED_FAILURES = (RestError, OrderError, NoRoute, MethodNotAllowed)
"""The failures a request may meet on the way, each answered with its own status."""


def failure_response(error: Exception, *, method: str = "", call: RestCall | None = None) -> web.Response:
    """The answer to a request that failed with `error`: a RestError from the front end's own
    checks, an OrderError from either backend, no route (404), a route without `method` (405);
    anything else is a bug, answered 500 without its insides. `call` is the call the request was
    for, if any: a 422's field violations are placed where its fields travel in HTTP."""
    if isinstance(error, RestError):
        return error_response(error.status, error.message, error.detail, **error.headers)
    if isinstance(error, NoRoute):
        return error_response(404, "no such route", {})
    if isinstance(error, MethodNotAllowed):
        allowed = ", ".join(error.allowed)
        return error_response(
            405, f"method {method} not allowed; allowed: {allowed}", {"allowed": error.allowed}, Allow=allowed
        )
    return _order_error_response(error if isinstance(error, OrderError) else internal_error(), call)


def _order_error_response(error: OrderError, call: RestCall | None) -> web.Response:
    error = bounded(error)  # the same texts whether the error came through gRPC or not
    detail: Mapping[str, object]
    if isinstance(error, InvalidArgument) and call is not None:
        detail = locate(call, error.violations)
    else:
        # Sorted: a remote error's metadata comes out of a protobuf map, whose order is arbitrary.
        detail = {"reason": error.reason, **dict(sorted(error.metadata.items()))}
    headers = {}
    if error.retry_after_s is not None:  # in whole seconds, and never 0, which would invite a storm
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return error_response(HTTP_STATUS[code_of(error)], error.message, detail, **headers)
