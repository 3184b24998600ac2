"""Serving a RestGateway over aiohttp's low-level server: no router or middleware layers
(the gateway routes itself), its own access log in place of aiohttp's, and the contract's
error body even for requests aiohttp refuses before they reach the gateway.

A flood of connections degrades service rather than taking it down: the open connections are
capped; at the cap, idle connections are closed to make room (idle keep-alive ones first, then
the oldest that have not sent a request), and only when none is idle is a new connection refused,
with a 503 written at once. A connection must send a complete request head within the header
timeout, whether it is new or coming back from keep-alive; one idle after an answer is closed
after the keep-alive timeout. Both timeouts use aiohttp's one keep-alive timer per connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestHandler

from gateway.rest.app import RestGateway
from gateway.rest.body import unsupported_coding
from gateway.rest.errors import RestError, failure_response

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 5.0
KEEPALIVE_TIMEOUT_S = 15.0
WARNING_INTERVAL_S = 10.0
"""At most one warning per interval about the cap, however many connections it closes or refuses."""


class _ContractErrorsHandler(RequestHandler):
    """aiohttp answers a request it cannot parse (a header over 8190 bytes, raw non-ASCII in the
    path, a malformed request line) itself, with a text/plain page; here it gets the contract's
    `{"detail", "message"}` body and an X-Request-ID like every other answer.

    It also keeps the server's connection cap and the header timeout (see the module)."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = cast(_Server, self._manager)
        if not server.admit(self):
            server.refuse(cast(asyncio.Transport, transport))
            # Never started: the server has nothing to forget when the connection is lost.
            self._manager = None
            return
        super().connection_made(transport)
        # aiohttp's keep-alive timer closes a connection still waiting for a request when it fires:
        # for a new connection it fires at the header timeout.
        handle = self._keepalive_handle
        if handle is not None:
            handle.cancel()
        close_time = self._loop.time() + server.header_timeout_s
        self._next_keepalive_close_time = close_time
        self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # a request is being answered, or one has just arrived whole: the usual case
        # Bytes of a head that is not complete yet: it must be within the header timeout from now,
        # even when the keep-alive timeout would leave it longer.
        server = self._manager
        if server is None:
            return
        close_time = self._loop.time() + cast(_Server, server).header_timeout_s
        if close_time < self._next_keepalive_close_time:
            self._next_keepalive_close_time = close_time
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    @property
    def idle(self) -> bool:
        """Waiting for a request (none in progress), so closing it loses no work."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    @property
    def served(self) -> bool:
        """Has had a request on this connection (so it is an idle keep-alive connection when idle)."""
        return self._request_count > 0

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun; no error body can follow")
        # The parser's message quotes the offending bytes (a header line, which may be the
        # Authorization header): only the kind of error is logged, never what the caller sent.
        log.debug("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
        if (coding := _coding_without_decoder(exc)) is not None:
            refusal = unsupported_coding(coding)
        elif status >= 500:
            refusal = RestError(status, "internal error", {"reason": "INTERNAL"})
        else:
            refusal = RestError(
                status,
                "malformed HTTP request (request line, headers or encoding)",
                {"reason": "BAD_REQUEST"},
            )
        response = failure_response(refusal)
        response.headers["X-Request-ID"] = uuid.uuid4().hex
        response.force_close()
        return response


# aiohttp knows these codings but decodes them only with optional packages; without them it refuses
# the request while parsing its head, with no headers left to read the coding from, only its message.
_DECODER_NAMES = {"brotli (br)": "br", "zstandard (zstd)": "zstd"}


def _coding_without_decoder(error: BaseException | None) -> str | None:
    if not isinstance(error, ContentEncodingError):
        return None
    return next((coding for name, coding in _DECODER_NAMES.items() if name in str(error)), None)


def _refusal() -> tuple[bytes, bytes]:
    """The 503 written to a connection refused at the cap, in two parts around its X-Request-ID:
    the contract's error body, built once, and `Connection: close`."""
    response = failure_response(
        RestError(
            503,
            "too many connections; retry shortly",
            {"reason": "TOO_MANY_CONNECTIONS"},
            {"Retry-After": "1"},
        )
    )
    body = cast(bytes, response.body)
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Content-Type: {response.headers['Content-Type']}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n"
        "X-Request-ID: "
    ).encode()
    return head, b"\r\n\r\n" + body


class _Server(web.Server):
    """aiohttp's low-level server with a cap on open connections (None: no cap)."""

    def __init__(
        self,
        handler: Any,
        *,
        max_connections: int | None,
        header_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        # The open connections in the order they were opened, oldest first.
        self._open: dict[_ContractErrorsHandler, None] = {}
        self._refusal = _refusal()
        self.reaped = 0
        self.refused = 0
        self._warned_at = -WARNING_INTERVAL_S

    def __call__(self) -> RequestHandler:
        return _ContractErrorsHandler(self, loop=self._loop, **self._kwargs)

    def admit(self, handler: _ContractErrorsHandler) -> bool:
        """Whether a new connection may open: under the cap, or once idle ones are closed."""
        cap = self.max_connections
        if cap is not None and len(self._open) >= cap and not self._reap(cap):
            return False
        self._open[handler] = None
        return True

    def _reap(self, cap: int) -> bool:
        """Close a batch of idle connections, idle keep-alive ones first, then the oldest that
        have sent no request; whether any was closed. A batch, so the scan is paid once for many
        new connections, not once for each."""
        batch = max(1, cap // 32)
        keepalive: list[_ContractErrorsHandler] = []
        silent: list[_ContractErrorsHandler] = []
        for handler in self._open:
            if handler.idle:
                if handler.served:
                    keepalive.append(handler)
                    if len(keepalive) >= batch:
                        break
                elif len(silent) < batch:
                    silent.append(handler)
        victims = (keepalive + silent)[:batch]
        for handler in victims:
            del self._open[handler]
            handler.force_close()
        self.reaped += len(victims)
        self._warn()
        return bool(victims)

    def refuse(self, transport: asyncio.Transport) -> None:
        head, tail = self._refusal
        transport.write(head + uuid.uuid4().hex.encode() + tail)
        transport.close()
        self.refused += 1
        self._warn()

    def _warn(self) -> None:
        now = self._loop.time()
        if now - self._warned_at >= WARNING_INTERVAL_S:
            self._warned_at = now
            log.warning(
                "REST connection cap reached: idle connections closed, new ones refused when none is idle",
                extra={
                    "max_connections": self.max_connections,
                    "closed_idle": self.reaped,
                    "refused": self.refused,
                },
            )

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(cast(_ContractErrorsHandler, handler), None)
        super().connection_lost(handler, exc)


class RestServer:
    """A started REST listener. `port` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.ServerRunner, server: _Server) -> None:
        self._runner = runner
        self._server = server
        self.port: int = runner.addresses[0][1]

    @property
    def open_connections(self) -> int:
        return len(self._server._open)

    @classmethod
    async def start(
        cls,
        gateway: RestGateway,
        *,
        host: str,
        port: int,
        grace_s: float = 10.0,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
    ) -> RestServer:
        """`max_connections` caps the open connections (None: no cap); `header_timeout_s` is the
        time a connection gets to send a complete request head, `keepalive_timeout_s` the time an
        idle one is kept after an answer."""
        server = _Server(
            gateway.handle,
            max_connections=max_connections,
            header_timeout_s=header_timeout_s,
            access_log=None,
            keepalive_timeout=keepalive_timeout_s,
        )
        # On cleanup the runner stops listening, then waits up to `shutdown_timeout`
        # for requests in flight before closing connections: the graceful shutdown.
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=grace_s)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, ssl_context=ssl_context)
        await site.start()
        return cls(runner, server)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish within the grace period, close connections."""
        await self._runner.cleanup()
