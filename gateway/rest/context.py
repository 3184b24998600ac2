"""Request headers into gRPC call context: credentials, request id, trace context, deadline,
and who the client is.

As grpc-gateway's runtime/context.go: `Authorization` becomes `authorization` metadata,
`X-Request-ID` is kept (or made) and passed on, `traceparent`/`tracestate` pass through (unless
the gateway traces: then its own span is the call's parent, and the backend says so), and `Grpc-Timeout` becomes the call's deadline, with a default and a cap. The client's address
is the TCP peer's, or, when the peer is a trusted proxy, the one its `X-Forwarded-For` names.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from gateway.calls.admission import Network, forwarded_client, is_trusted
from gateway.calls.auth import parse_basic
from gateway.domain.errors import Unauthenticated
from gateway.rest.errors import RestError, validation_error

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_GRPC_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class DeadlinePolicy:
    """Deadline of a forwarded call: the caller's Grpc-Timeout, else `default_s`, never over `max_s`."""

    default_s: float = 10.0
    max_s: float = 60.0

    def timeout(self, headers: Mapping[str, str]) -> float:
        raw = headers.get("Grpc-Timeout")
        if raw is None:
            return min(self.default_s, self.max_s)
        match = _GRPC_TIMEOUT.match(raw.strip())
        if match is None:
            raise validation_error(
                {
                    "header": {
                        "Grpc-Timeout": ["must be 1 to 8 digits and a unit: H, M, S, m, u or n (e.g. 5S)"]
                    }
                }
            )
        return min(int(match.group(1)) * _UNIT_SECONDS[match.group(2)], self.max_s)


class RequestIds:
    """New request ids: 32 hex digits, a random prefix per process and a counter, so they are unique
    across processes and restarts without the cost of a random UUID per request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def request_id(headers: Mapping[str, str], ids: RequestIds) -> str:
    """The caller's X-Request-ID when it is printable ASCII of at most 128 characters, else a new one."""
    given = headers.get("X-Request-ID")
    if given is not None and _REQUEST_ID.match(given):
        return given
    return ids.new()


def client_address(
    remote: str | None, headers: CIMultiDictProxy[str], trusted_proxies: tuple[Network, ...]
) -> str:
    """The client's address: the TCP peer's, unless the peer is one of `trusted_proxies`; then the
    right-most `X-Forwarded-For` address that is not itself a trusted proxy (a malformed entry ends
    the walk). With no trusted proxies, the peer's, at no cost."""
    if not trusted_proxies or remote is None or not is_trusted(remote, trusted_proxies):
        return remote or ""
    forwarded = headers.getall("X-Forwarded-For", ())
    return forwarded_client(remote, forwarded, trusted_proxies) if forwarded else remote


def check_authorization(headers: CIMultiDictProxy[str]) -> None:
    """Refuse a request whose credentials cannot be right: two Authorization headers (400: which
    one counts differs from proxy to server), or none or a malformed one (401, with the body the
    call itself would answer). Well-formed credentials are checked by the call."""
    values = headers.getall("Authorization", ())
    if len(values) > 1:
        raise RestError(
            400, "more than one Authorization header: send exactly one", {"reason": "DUPLICATE_AUTHORIZATION"}
        )
    try:
        parse_basic(values[0] if values else None)
    except Unauthenticated as error:
        raise RestError(401, error.message, {"reason": error.reason, **error.metadata}) from None


def call_metadata(
    headers: Mapping[str, str], rid: str, *, trace_headers: bool = True
) -> tuple[tuple[str, str], ...]:
    """The metadata of the forwarded call. Who the client is travels apart from it (see
    `Backend.call`), never in the caller's own headers. `trace_headers`: pass the caller's trace
    context on as it came (when the gateway does not trace)."""
    metadata = [("x-request-id", rid)]
    authorization = headers.get("Authorization")
    if authorization is not None:
        metadata.append(("authorization", authorization))
    if not trace_headers:
        return tuple(metadata)
    for name in _TRACE_HEADERS:
        value = headers.get(name)
        if value is not None and value.isascii() and value.isprintable():
            metadata.append((name, value))
    return tuple(metadata)
