"""The failures of the document: the error bodies' schemas, one response component per documented
status, and which of them each operation lists.

The statuses are not written here: a gRPC code's is gateway/rest/errors.py's (HTTP_STATUS), a refused
body's gateway/rest/body.py's. What this module adds is what each failure means to a caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

from gateway.calls.auth import REALM
from gateway.jsonmap.contracts import Schema
from gateway.rest import body
from gateway.rest.errors import HTTP_STATUS
from gateway.rest.rules import RestCall

JSON = "application/json"
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_HEADERS: Schema = {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}


@dataclass(frozen=True, slots=True)
class Failure:
    """A documented failure: its response component's name and what it means."""

    component: str
    description: str


def _status_of(code: str) -> int:
    """The HTTP status of a gRPC code, by its name, from the one table (rest/errors.py)."""
    for key, status in HTTP_STATUS.items():
        if getattr(key, "name", key) == code:
            return status
    raise KeyError(f"HTTP_STATUS has no status for {code}")


# What the codes the service answers with mean here, by name: their statuses are HTTP_STATUS's.
_CODE_FAILURES: Mapping[str, Failure] = {
    "UNAUTHENTICATED": Failure("Unauthorized", "Missing, malformed or wrong credentials."),
    "NOT_FOUND": Failure("NotFound", "No order record matches the handle and the query (or no such route)."),
    "FAILED_PRECONDITION": Failure(
        "Conflict", "The order's status does not allow the call, or the order is still open."
    ),
    "INVALID_ARGUMENT": Failure(
        "ValidationFailed", "The request is invalid: `detail` names each field where it travels."
    ),
    "RESOURCE_EXHAUSTED": Failure(
        "TooManyRequests",
        "Too many calls for the account, or too many failed authentications from the address; "
        "retry after `Retry-After` seconds.",
    ),
    "INTERNAL": Failure("InternalError", "An unexpected failure; it was logged."),
    "UNAVAILABLE": Failure("Unavailable", "The order service is unavailable; retry later."),
    "DEADLINE_EXCEEDED": Failure("GatewayTimeout", "The order service did not answer within the deadline."),
}
_BODY_FAILURES: Mapping[int, Failure] = {
    body.BODY_TIMEOUT_STATUS: Failure("RequestTimeout", "The body did not arrive in time."),
    body.BODY_TOO_LARGE_STATUS: Failure("PayloadTooLarge", "The body is too large."),
    body.NOT_JSON_STATUS: Failure("UnsupportedMediaType", "The body is not `application/json`."),
    body.INVALID_BODY_STATUS: Failure(
        "ValidationFailed", "The request is invalid: `detail` names each field where it travels."
    ),
}
# Failures every call may meet: credentials, validation, the admission limits, and the backend.
_EVERY_CALL = (
    "UNAUTHENTICATED",
    "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
)


def documented_failures() -> dict[int, Failure]:
    """Status -> failure, for every status an operation may list."""
    failures = {_status_of(code): failure for code, failure in _CODE_FAILURES.items()}
    for status, failure in _BODY_FAILURES.items():
        failures.setdefault(status, failure)
    return dict(sorted(failures.items()))


def error_statuses(call: RestCall) -> list[int]:
    """The failures a call is documented with; any other status (a malformed HTTP request's 400, the
    rest of the gRPC code table: 403, 499, 501) falls under `default`."""
    codes = list(_EVERY_CALL)
    if call.path.variables:
        codes.append("NOT_FOUND")  # the record the path names does not exist
    if call.rpc.GetOptions().idempotency_level != descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS:
        codes.append("FAILED_PRECONDITION")  # a change the record's status does not allow
    statuses = {_status_of(code) for code in codes}
    if call.body:
        statuses.update(body.BODY_STATUSES)
    return sorted(statuses)


def error_schemas() -> dict[str, Schema]:
    """The error bodies of gateway/rest/errors.py: `{"detail": {...}, "message": "..."}`."""
    return {
        "Error": {
            "type": "object",
            "description": "Every failure's body.",
            "properties": {
                "detail": {
                    "type": "object",
                    "description": "What went wrong, for programs: usually `reason` (such as "
                    "`ORDER_NOT_FOUND`) and the values it concerns.",
                    "properties": {"reason": {"type": "string"}},
                },
                "message": {"type": "string", "description": "What went wrong, for people."},
            },
            "required": ["detail", "message"],
            "additionalProperties": False,
        },
        "ValidationError": {
            "type": "object",
            "description": "The body of a 422: the messages of each invalid field, by where it travels.",
            "properties": {
                "detail": {
                    "type": "object",
                    "properties": {
                        location: {"$ref": "#/components/schemas/FieldErrors"}
                        for location in ("path", "query", "body", "header")
                    },
                    "additionalProperties": False,
                },
                "message": {"type": "string"},
            },
            "required": ["detail", "message"],
            "additionalProperties": False,
        },
        "FieldErrors": {
            "type": "object",
            "description": "Field name -> what is wrong with it.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    }


def _ref(schema: str) -> Schema:
    return {"$ref": f"#/components/schemas/{schema}"}


def error_responses() -> dict[str, Schema]:
    """`components.responses`: one per documented failure, and `Error` for any other."""
    responses: dict[str, Schema] = {}
    validation = _status_of("INVALID_ARGUMENT")
    for status, failure in documented_failures().items():
        headers = dict(REQUEST_ID_HEADERS)
        if status == _status_of("UNAUTHENTICATED"):
            headers["WWW-Authenticate"] = {
                "description": f'`Basic realm="{REALM}"`',
                "required": True,
                "schema": {"type": "string", "pattern": "^Basic realm="},
            }
        if status == _status_of("RESOURCE_EXHAUSTED"):
            # Sent with the limits' own refusals; a RESOURCE_EXHAUSTED of the transport has none.
            headers["Retry-After"] = {
                "description": "Seconds to wait before the next call.",
                "required": False,
                "schema": {"type": "integer", "minimum": 1},
            }
        responses[failure.component] = {
            "description": failure.description,
            "headers": headers,
            "content": {JSON: {"schema": _ref("ValidationError" if status == validation else "Error")}},
        }
    responses["Error"] = {
        "description": "Any other failure, with the same body: a malformed HTTP request (400), or a "
        "status of google/rpc/code.proto's table.",
        "headers": REQUEST_ID_HEADERS,
        "content": {JSON: {"schema": _ref("Error")}},
    }
    return responses


def response_ref(status: int) -> Schema:
    """The reference an operation lists for a documented failure."""
    return {"$ref": f"#/components/responses/{documented_failures()[status].component}"}
