"""Operational routes beside the API: liveness, readiness, metrics and the OpenAPI document.

Each route is a record that says what it answers (OpsRoute), so that the OpenAPI document lists these
routes from here; `ops_routes` binds the records to their handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.observability.metrics import Metrics
from gateway.rest.app import Handler
from gateway.rest.errors import JSON_HEADERS

ReadinessCheck = Callable[[], Awaitable[bool]]

JSON = "application/json"
READY = "ready"
NOT_READY = "not ready"


@dataclass(frozen=True, slots=True)
class OpsResponse:
    """One answer of an operational route: its description, media type and body's JSON Schema."""

    description: str
    media_type: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OpsRoute:
    """An operational route: GET without credentials, and what it answers, by status."""

    path: str
    operation_id: str
    summary: str
    responses: Mapping[int, OpsResponse]
    method: str = "GET"


_LIVENESS = {
    "type": "object",
    "properties": {"status": {"const": "ok"}},
    "required": ["status"],
    "additionalProperties": False,
}
_READINESS = {
    "type": "object",
    "properties": {
        "status": {"enum": [READY, NOT_READY]},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
    "required": ["status", "checks"],
    "additionalProperties": False,
}

HEALTHZ = OpsRoute(
    "/healthz", "Healthz", "Liveness: the process serves HTTP.", {200: OpsResponse("Alive.", JSON, _LIVENESS)}
)
READYZ = OpsRoute(
    "/readyz",
    "Readyz",
    "Readiness: the database and the gRPC backend answer.",
    {
        200: OpsResponse("Ready.", JSON, _READINESS),
        503: OpsResponse("Not ready; `checks` says what failed.", JSON, _READINESS),
    },
)
METRICS = OpsRoute(
    "/metrics",
    "Metrics",
    "Prometheus metrics, in the text exposition format.",
    {200: OpsResponse("The metrics.", "text/plain", {"type": "string"})},
)
OPENAPI = OpsRoute(
    "/openapi.json",
    "OpenApi",
    "This document.",
    {200: OpsResponse("The OpenAPI document.", JSON, {"type": "object"})},
)
OPS_ROUTES = (HEALTHZ, READYZ, METRICS, OPENAPI)


def ops_routes(
    metrics: Metrics, readiness: Mapping[str, ReadinessCheck], openapi_document: bytes
) -> list[tuple[str, str, Handler]]:
    """The handlers of OPS_ROUTES, as (method, path, handler)."""

    async def healthz(request: web.BaseRequest) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', headers=JSON_HEADERS)

    async def readyz(request: web.BaseRequest) -> web.Response:
        checks = {}
        for name, check in readiness.items():
            checks[name] = await check()
        ready = all(checks.values())
        body = {"status": READY if ready else NOT_READY, "checks": checks}
        return web.Response(status=200 if ready else 503, body=orjson.dumps(body), headers=JSON_HEADERS)

    async def metrics_page(request: web.BaseRequest) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(request: web.BaseRequest) -> web.Response:
        return web.Response(body=openapi_document, headers=JSON_HEADERS)

    handlers: dict[str, Handler] = {
        HEALTHZ.path: healthz,
        READYZ.path: readyz,
        METRICS.path: metrics_page,
        OPENAPI.path: openapi,
    }
    return [(route.method, route.path, handlers[route.path]) for route in OPS_ROUTES]
