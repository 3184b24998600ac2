"""One JSON object per log line on stderr. Request lines carry the request id, route,
status and duration; nothing here ever logs headers, bodies or credentials."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, BinaryIO

import orjson

ACCESS_LOGGER = "hypertrack_gateway.access"
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _timestamp(created: float) -> str:
    seconds = int(created)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...extra fields, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and aiohttp log at INFO about every connection; keep them to warnings.
    for noisy in ("aiohttp.access", "aiohttp.server", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class AccessLog:
    """The RequestObserver that writes one JSON line per answered request, in batches.

    A write per line costs a system call per request, a large share of the REST throughput at full
    speed; lines are gathered and written together at most `flush_interval_s` later, and on
    `flush()` at shutdown. The line has the fields of the other log lines (JsonFormatter).
    """

    def __init__(self, stream: BinaryIO | None = None, *, flush_interval_s: float = 0.05) -> None:
        self._log = logging.getLogger(ACCESS_LOGGER)
        self._stream = stream
        self._flush_interval_s = flush_interval_s
        self._lines: list[bytes] = []
        self._flush_handle: asyncio.TimerHandle | None = None

    def __call__(
        self,
        *,
        route: str,
        method: str,
        status: int,
        seconds: float,
        request_id: str,
        remote: str | None,
        trace_id: str | None = None,
    ) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        line = {
            "ts": _timestamp(time.time()),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "message": "request",
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "remote": remote,
        }
        if trace_id is not None:
            line["trace_id"] = trace_id
        self._gather(line)

    def flush(self) -> None:
        """Write the gathered lines now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        stream = self._stream or sys.stderr.buffer
        stream.write(data)
        stream.flush()

    def add(self, message: str, fields: dict[str, Any]) -> None:
        """A line of another kind (a gRPC call's): the common fields, then `fields`, in the same batches."""
        if not self._log.isEnabledFor(logging.INFO):
            return
        line = {"ts": _timestamp(time.time()), "level": "info", "logger": ACCESS_LOGGER, "message": message}
        line.update(fields)
        self._gather(line)

    def _gather(self, line: dict[str, Any]) -> None:
        self._lines.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self._flush_interval_s, self.flush)
