"""The OpenAPI 3.1 document of the REST API, built from the sources that own each rule.

Nothing in it is written twice: the paths, parameters, bodies and success statuses come from the
google.api.http rules (gateway/rest/rules.py); the schemas from the message descriptors by the JSON
mapping's own records (gateway/jsonmap: scalars, enums and the special shapes, each holding its
encoder, decoder and schema); the request fields' limits from the domain's rule table
(gateway/domain/validation.py); the error statuses from gateway/rest/errors.py and body.py; the
operational routes from gateway/rest/ops.py; the webhook's headers and retries from gateway/events;
the descriptions from the proto comments.

- comments.py: the proto comments, from the descriptor set shipped with the package
- schemas.py: messages and enums -> `components.schemas`
- paths.py: REST calls and operational routes -> `paths`
- errors.py: the error bodies and the failures each operation lists
- webhooks.py: what the gateway POSTs to an account's webhook (the top-level `webhooks`)
- document.py: the document
"""

from __future__ import annotations

import functools

import orjson

from gateway.openapi.comments import Comments
from gateway.openapi.document import build_document
from gateway.openapi.paths import openapi_path


@functools.cache
def openapi_document(*, admin_routes: bool = True) -> bytes:
    """The document as JSON, built once (at start-up) and served as is. `admin_routes`: whether
    /healthz, /readyz and /metrics are on the REST port (no admin port)."""
    return orjson.dumps(build_document(admin_routes=admin_routes))


__all__ = ["Comments", "build_document", "openapi_document", "openapi_path"]
