"""The OpenAPI 3.1 document of the REST API, assembled from the parts that own each rule."""

from __future__ import annotations

from importlib import metadata

from google.protobuf.descriptor import ServiceDescriptor

from gateway.jsonmap.contracts import Schema
from gateway.openapi.comments import Comments, described
from gateway.openapi.errors import REQUEST_ID_HEADER, error_responses, error_schemas
from gateway.openapi.paths import OPS_TAG, api_paths, ops_paths, response_root
from gateway.openapi.schemas import SchemaRegistry, reachable
from gateway.openapi.webhooks import webhooks
from gateway.protos import SERVICE_DESCRIPTOR
from gateway.rest.rules import rest_calls

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "basicAuth"
_PACKAGE = "hypertrack-gateway"
_CONVENTIONS = (
    f"Every response carries an `{REQUEST_ID_HEADER}` (echoed when the caller sent one, generated "
    "otherwise). A `Grpc-Timeout` header (such as `5S`) sets the deadline of the call."
)


def _version() -> str:
    try:
        return metadata.version(_PACKAGE)
    except metadata.PackageNotFoundError:  # running from a tree that was never installed
        return "0.0.0"


SERVERS = [
    {
        "url": ".",
        "description": "The server this document is read from. Relative to the document's own URL,"
        " so that it holds behind a proxy, under the proxy's host and any path prefix.",
    }
]


def build_document(
    service: ServiceDescriptor = SERVICE_DESCRIPTOR,
    comments: Comments | None = None,
    *,
    admin_routes: bool = True,
) -> Schema:
    """The OpenAPI 3.1 document of the service's REST calls, as a JSON-ready dict. `admin_routes`:
    whether /healthz, /readyz and /metrics are on the same port (no admin port)."""
    comments = Comments.load() if comments is None else comments
    calls = rest_calls(service)
    # The error bodies first, so that no message takes their names.
    registry = SchemaRegistry(
        comments, response_messages=reachable(response_root(c) for c in calls), schemas=error_schemas()
    )
    tag = service.name
    paths = api_paths(registry, calls, tag)
    paths.update(ops_paths(admin_routes=admin_routes))
    sent = webhooks(registry)
    description = comments.of(service.full_name)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "HyperTrack Orders API (hypertrack-gateway)",
            "version": _version(),
            "description": "\n\n".join(part for part in (description, _CONVENTIONS) if part),
        },
        "servers": SERVERS,
        "tags": [
            described({"name": tag}, description),
            {
                "name": OPS_TAG,
                "description": "Liveness, readiness, metrics and this document."
                if admin_routes
                else "This document.",
            },
        ],
        "security": [{SECURITY_SCHEME: []}],
        "paths": paths,
        "webhooks": sent,
        "components": {
            "schemas": dict(sorted(registry.schemas.items())),
            "responses": error_responses(),
            "headers": {
                "RequestId": {
                    "description": "The request's id: the caller's, or one made for it.",
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "basic",
                    "description": "`Authorization: Basic base64(AccountID:SecretKey)`.",
                }
            },
        },
    }
