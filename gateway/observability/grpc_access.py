"""What watches each call that arrives through the gRPC server: its server span, when tracing is
on, and its access log line, when the access log is on.

The line is the REST request line's sibling, written in the same batches (`AccessLog`):
`{"message": "call", "method", "code", "duration_ms", "peer", "request_id", "trace_id"?}`.
Calls the REST front end makes in its own process are REST requests, logged as such, and never
pass here. Like the REST line, it carries no metadata but the request id: never credentials.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc

from gateway.calls.admission import Metadata, metadata_value
from gateway.observability.logs import AccessLog

if TYPE_CHECKING:  # OpenTelemetry is loaded only when tracing is on
    from gateway.observability.tracing import Tracing

T = TypeVar("T")


class ServedContext(Protocol):
    """The part of grpc.aio.ServicerContext the watch reads."""

    def invocation_metadata(self) -> Metadata | None: ...

    def peer(self) -> str: ...

    def time_remaining(self) -> float | None: ...

    def code(self) -> Any: ...


class ServedCalls:
    """The servicer's CallWatch: `tracing` and `access_log` are each None when off."""

    def __init__(self, service: str, *, tracing: Tracing | None, access_log: AccessLog | None) -> None:
        self._service = service
        self._tracing = tracing
        self._access_log = access_log

    async def __call__(self, method: str, context: ServedContext, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        metadata = context.invocation_metadata() or ()
        span = None
        if self._tracing is not None:
            span = self._tracing.server_call(self._service, method, metadata, context.peer() or "")
        code = grpc.StatusCode.OK
        try:
            return await call
        except asyncio.CancelledError:
            # grpc cancels the handler when its caller goes away or its deadline passes.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            # The servicer answers every failure through context.abort, which records the code.
            aborted = context.code()
            code = aborted if isinstance(aborted, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            raise
        finally:
            if span is not None:
                span.end(code)
            if self._access_log is not None:
                line: dict[str, Any] = {
                    "request_id": metadata_value(metadata, "x-request-id"),
                    "method": f"/{self._service}/{method}",
                    "code": code.name,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "peer": context.peer() or None,
                }
                if span is not None:
                    line["trace_id"] = span.trace_id
                self._access_log.add("call", line)
