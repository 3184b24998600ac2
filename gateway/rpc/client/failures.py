"""How a call fails: a gRPC status code, and the google.rpc.Status the server sent with it, if any.

The codes follow gRPC's own mapping (doc/http-grpc-status-mapping.md, doc/PROTOCOL-HTTP2.md):
`grpc-status` when the server sent one; else the HTTP status when it is not 200; a stream the
server reset, by its HTTP/2 error code; a connection that went away, UNAVAILABLE.
"""

from __future__ import annotations

import base64
import binascii

import grpc

from gateway.rpc.client import frames
from gateway.rpc.status import DETAILS_KEY

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_HTTP_CODES = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
_RESET_CODES = {
    frames.REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE,
    frames.CANCEL: grpc.StatusCode.CANCELLED,
    frames.ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    frames.INADEQUATE_SECURITY: grpc.StatusCode.PERMISSION_DENIED,
}


class RpcFailed(Exception):
    """A call that returned no message: its code, and the serialized google.rpc.Status the server
    sent (`grpc-status-details-bin`), None when it sent none or no server answered.

    `unprocessed`: no server saw the call (its stream was refused, was past a GOAWAY's last stream,
    or never left this process), so it may be sent again, to any server, whatever the method.
    """

    def __init__(
        self, code: grpc.StatusCode, details: bytes | None = None, *, unprocessed: bool = False
    ) -> None:
        super().__init__(code.name)
        self.code = code
        self.details = details
        self.unprocessed = unprocessed

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """The details as gRPC metadata, the shape gateway.rpc.status reads them from."""
        return () if self.details is None else ((DETAILS_KEY, self.details),)


def unavailable(*, unprocessed: bool = False) -> RpcFailed:
    return RpcFailed(grpc.StatusCode.UNAVAILABLE, unprocessed=unprocessed)


def code_of(value: str | None) -> grpc.StatusCode:
    """The code a `grpc-status` value names; UNKNOWN for a value that names none."""
    if value is None or not value.isdigit():
        return grpc.StatusCode.UNKNOWN
    return _CODES.get(int(value), grpc.StatusCode.UNKNOWN)


def code_of_http_status(status: str | None) -> grpc.StatusCode:
    if status is None or not status.isdigit():
        return grpc.StatusCode.INTERNAL
    return _HTTP_CODES.get(int(status), grpc.StatusCode.UNKNOWN)


def reset(error_code: int) -> RpcFailed:
    """The failure of a stream the server reset with `error_code`."""
    code = _RESET_CODES.get(error_code, grpc.StatusCode.INTERNAL)
    return RpcFailed(code, unprocessed=error_code == frames.REFUSED_STREAM)


def details_of(value: str | None) -> bytes | None:
    """The bytes of a binary metadata value (base64, padded or not); None when it does not decode."""
    if value is None:
        return None
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
