"""Operational routes beside the API: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

from gateway.observability.metrics import Metrics
from gateway.rest.app import Handler
from gateway.rest.errors import JSON_HEADERS

ReadinessCheck = Callable[[], Awaitable[bool]]


def ops_routes(
    metrics: Metrics, readiness: Mapping[str, ReadinessCheck], openapi_document: bytes
) -> list[tuple[str, str, Handler]]:
    """GET /healthz, /readyz, /metrics and /openapi.json."""

    async def healthz(request: web.BaseRequest) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', headers=JSON_HEADERS)

    async def readyz(request: web.BaseRequest) -> web.Response:
        checks = {}
        for name, check in readiness.items():
            checks[name] = await check()
        ready = all(checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return web.Response(status=200 if ready else 503, body=orjson.dumps(body), headers=JSON_HEADERS)

    async def metrics_page(request: web.BaseRequest) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(request: web.BaseRequest) -> web.Response:
        return web.Response(body=openapi_document, headers=JSON_HEADERS)

    return [
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
        ("GET", "/metrics", metrics_page),
        ("GET", "/openapi.json", openapi),
    ]
