"""Serving a RestGateway over aiohttp's low-level server: no router or middleware layers
(the gateway routes itself), and its own access log in place of aiohttp's."""

from __future__ import annotations

import ssl

from aiohttp import web

from gateway.rest.app import RestGateway

KEEPALIVE_TIMEOUT_S = 75.0


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
        server = web.Server(gateway.handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
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
