"""Operational routes beside the API: liveness, readiness and metrics (the admin routes), and the
OpenAPI document with a page that renders it (the docs routes).

Each route is a record that says what it answers (OpsRoute), so that the OpenAPI document lists these
routes from here; `admin_routes` and `docs_routes` bind the records to their handlers. The admin
routes are served on the REST port, or on a listener of their own (`AdminApp`, `--admin-port`), away
from the partners' port; the docs routes always on the REST port.

The docs page is Swagger UI, from the assets the `swagger-ui-py` package ships (a Swagger UI that
reads OpenAPI 3.1), served by this server: no page of ours loads anything from elsewhere, and its
Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.observability.metrics import Metrics
from gateway.rest.app import Handler
from gateway.rest.context import RequestIds, request_id
from gateway.rest.errors import EXPECTED_FAILURES, JSON_HEADERS, failure_response
from gateway.rest.pattern import PathTemplate, split_path
from gateway.rest.router import Route, Router

ReadinessCheck = Callable[[], Awaitable[bool]]

JSON = "application/json"
HTML = "text/html"
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
DOCS = OpsRoute(
    "/docs",
    "Docs",
    "This document, to read in a browser (Swagger UI).",
    {200: OpsResponse("The page.", HTML, {"type": "string"})},
)
ADMIN_ROUTES = (HEALTHZ, READYZ, METRICS)
"""On the admin port when there is one, else on the REST port."""
DOCS_ROUTES = (OPENAPI, DOCS)
"""Always on the REST port."""
OPS_ROUTES = ADMIN_ROUTES + DOCS_ROUTES


def admin_routes(metrics: Metrics, readiness: Mapping[str, ReadinessCheck]) -> list[tuple[str, str, Handler]]:
    """The handlers of ADMIN_ROUTES, as (method, path, handler)."""

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
        body, content_type = await metrics.scrape()
        return web.Response(body=body, headers={"Content-Type": content_type})

    handlers: dict[str, Handler] = {HEALTHZ.path: healthz, READYZ.path: readyz, METRICS.path: metrics_page}
    return [(route.method, route.path, handlers[route.path]) for route in ADMIN_ROUTES]


# --- the docs page --------------------------------------------------------------------------------

DOCS_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # Swagger UI's icons are data: URLs in its stylesheet
        "connect-src 'self'",  # the document, and "Try it out"
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
_PAGE_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page names everything relative to itself, so that it works behind a proxy that serves the
# gateway under a path prefix: /prefix/docs loads /prefix/docs/... and /prefix/openapi.json.
_PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>HyperTrack Orders API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""
# A script of its own rather than inline: the policy allows no inline script. No validator: Swagger
# UI would send the document to a public service to check it.
_START = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"""
_SWAGGER_UI_PACKAGE = "swagger_ui"
DOCS_ASSETS = {
    # path under /docs/ -> (file in the package's static directory, or None for ours; media type)
    "swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "favicon-32x32.png": ("favicon-32x32.png", "image/png"),
    "start.js": (None, "text/javascript; charset=utf-8"),
}
_ASSET_MAX_AGE_S = 3600


def swagger_ui_directory() -> Path:
    """The static files of Swagger UI, found without importing the package (which would load its
    own web framework adapters)."""
    spec = importlib.util.find_spec(_SWAGGER_UI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package (a dependency of the gateway) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def _asset(name: str) -> tuple[bytes, bytes]:
    """An asset's bytes and their gzip, read once: they are the package's files, fixed for the
    process's life."""
    file, _ = DOCS_ASSETS[name]
    data = _START if file is None else (swagger_ui_directory() / file).read_bytes()
    return data, gzip.compress(data, mtime=0)


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            return quality not in ("0", "0.0", "0.00", "0.000")
    return False


def docs_routes(openapi_document: bytes) -> list[tuple[str, str, Handler]]:
    """The handlers of DOCS_ROUTES and of the docs page's assets, as (method, path, handler)."""
    swagger_ui_directory()  # fails at start-up, not on the first reader, when the package is missing

    async def openapi(request: web.BaseRequest) -> web.Response:
        return web.Response(body=openapi_document, headers=JSON_HEADERS)

    async def docs(request: web.BaseRequest) -> web.Response:
        headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache", **_PAGE_HEADERS}
        return web.Response(body=_PAGE, headers=headers)

    def asset(name: str) -> Handler:
        media_type = DOCS_ASSETS[name][1]

        async def serve(request: web.BaseRequest) -> web.Response:
            plain, gzipped = _asset(name)
            headers = {
                "Content-Type": media_type,
                "Cache-Control": f"public, max-age={_ASSET_MAX_AGE_S}",
                "Vary": "Accept-Encoding",
                **_PAGE_HEADERS,
            }
            if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
                headers["Content-Encoding"] = "gzip"
                return web.Response(body=gzipped, headers=headers)
            return web.Response(body=plain, headers=headers)

        return serve

    routes: list[tuple[str, str, Handler]] = [
        (OPENAPI.method, OPENAPI.path, openapi),
        (DOCS.method, DOCS.path, docs),
    ]
    routes += [("GET", f"{DOCS.path}/{name}", asset(name)) for name in DOCS_ASSETS]
    return routes


def ops_routes(
    metrics: Metrics, readiness: Mapping[str, ReadinessCheck], openapi_document: bytes
) -> list[tuple[str, str, Handler]]:
    """All operational routes, as one REST port without an admin port serves them."""
    return admin_routes(metrics, readiness) + docs_routes(openapi_document)


class AdminApp:
    """The admin routes on a listener of their own: every other path is 404, as on the REST port,
    with the contract's error body and an X-Request-ID."""

    def __init__(self, routes: Sequence[tuple[str, str, Handler]]) -> None:
        self._router: Router[Handler] = Router(
            [Route(method, PathTemplate.compile(path), handler) for method, path, handler in routes]
        )
        self._request_ids = RequestIds()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = request_id(request.headers, self._request_ids)
        try:
            route = self._router.match(request.method, split_path(request.raw_path))
            response = await route.target(request)
        except EXPECTED_FAILURES as error:
            response = failure_response(error, method=request.method)
        response.headers["X-Request-ID"] = rid
        return response
