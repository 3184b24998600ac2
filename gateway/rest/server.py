"""Serving a RestGateway over aiohttp's low-level server: no router or middleware layers
(the gateway routes itself), its own access log in place of aiohttp's, and the contract's
error body even for requests aiohttp refuses before they reach the gateway."""

from __future__ import annotations

import logging
import ssl
import uuid

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.rest.app import RestGateway
from gateway.rest.errors import RestError, failure_response

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT_S = 75.0


class _ContractErrorsHandler(RequestHandler):
    """aiohttp answers a request it cannot parse (a header over 8190 bytes, raw non-ASCII in the
    path, a malformed request line) itself, with a text/plain page; here it gets the contract's
    `{"detail", "message"}` body and an X-Request-ID like every other answer."""

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
        if status >= 500:
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


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _ContractErrorsHandler(self, loop=self._loop, **self._kwargs)


class RestServer:
    """A started REST listener. `port` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.ServerRunner) -> None:
        self._runner = runner
        self.port: int = runner.addresses[0][1]

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
    ) -> RestServer:
        server = _Server(gateway.handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
        # On cleanup the runner stops listening, then waits up to `shutdown_timeout`
        # for requests in flight before closing connections: the graceful shutdown.
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=grace_s)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, ssl_context=ssl_context)
        await site.start()
        return cls(runner)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish within the grace period, close connections."""
        await self._runner.cleanup()
