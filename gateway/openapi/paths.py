"""`paths`: one operation per REST call, from the google.api.http rules as gateway/rest/rules.py
compiles them for the router, and the operational routes as gateway/rest/ops.py declares them."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.jsonmap.contracts import Direction, Schema
from gateway.openapi.comments import summary
from gateway.openapi.errors import JSON, REQUEST_ID_HEADERS, error_statuses, response_ref
from gateway.openapi.schemas import SchemaRegistry
from gateway.rest.ops import DOCS_ROUTES, OPS_ROUTES, OpsRoute
from gateway.rest.rules import RestCall

OPS_TAG = "Operations"


def response_root(call: RestCall) -> Descriptor:
    """The message the success body holds: the response, or its `response_body` field."""
    output = call.rpc.output_type
    if not call.response_body:
        return output
    message_type = output.fields_by_name[call.response_body].message_type
    if message_type is None:
        raise TypeError(f"{call.rpc.full_name}: response_body {call.response_body!r} must be a message field")
    return message_type


def _request_root(call: RestCall) -> Descriptor | None:
    """The message the request body holds: the request (`*`), one of its fields, or none."""
    if call.body == "*":
        return call.rpc.input_type
    if not call.body:
        return None
    message_type = call.rpc.input_type.fields_by_name[call.body].message_type
    if message_type is None:
        raise TypeError(f"{call.rpc.full_name}: body {call.body!r} must be a message field")
    return message_type


def openapi_path(call: RestCall) -> str:
    """The call's path template in OpenAPI spelling: `{field=*}` is `{field}`."""
    names = dict(call.path.variables)
    segments = []
    for index, literal in enumerate(call.path.literals):
        if literal is not None:
            segments.append(literal)
        elif index in names:
            segments.append("{" + names[index] + "}")
        else:
            raise ValueError(f"{call.rpc.full_name}: an unnamed `*` segment has no OpenAPI spelling")
    return "/" + "/".join(segments)


def _parameter(
    registry: SchemaRegistry, field_descriptor: FieldDescriptor, location: str, *, required: bool
) -> Schema:
    parameter: Schema = {"name": field_descriptor.name, "in": location}
    description = registry.comment(field_descriptor.full_name)
    if description:
        parameter["description"] = description
    parameter["required"] = required
    if field_descriptor.is_repeated:
        # One parameter holding a comma-separated list (`value=cancelled,completed`), as
        # gateway/rest/query.py reads it; the same name given twice is refused.
        parameter["style"] = "form"
        parameter["explode"] = False
    parameter["schema"] = registry.parameter_schema(field_descriptor)
    return parameter


def _parameters(registry: SchemaRegistry, call: RestCall) -> list[Schema]:
    fields = call.rpc.input_type.fields_by_name
    path = [_parameter(registry, fields[name], "path", required=True) for _, name in call.path.variables]
    query = [_parameter(registry, f, "query", required=False) for f in call.query_fields.values()]
    return path + query


def _request_body(registry: SchemaRegistry, call: RestCall) -> Schema | None:
    root = _request_root(call)
    if root is None:
        return None
    schema = registry.message_ref(root, Direction.REQUEST)
    built = registry.schemas[schema["$ref"].rsplit("/", 1)[1]]
    if call.body == "*":
        description = registry.comment(root.full_name)
    else:
        description = registry.comment(call.rpc.input_type.fields_by_name[call.body].full_name)
    request_body: Schema = {"description": description} if description else {}
    # An empty body is the empty message (gateway/rest/app.py); it is worth sending only where that
    # is a valid request, which the schema's required properties decide.
    request_body["required"] = bool(built.get("required"))
    request_body["content"] = {JSON: {"schema": schema}}
    return request_body


def _success(registry: SchemaRegistry, call: RestCall) -> Schema:
    root = response_root(call)
    if call.response_body:
        description = registry.comment(call.rpc.output_type.fields_by_name[call.response_body].full_name)
    else:
        description = registry.comment(root.full_name)
    return {
        "description": description or "Success.",
        "headers": REQUEST_ID_HEADERS,
        "content": {JSON: {"schema": registry.message_ref(root, Direction.RESPONSE)}},
    }


def operation(registry: SchemaRegistry, call: RestCall, tag: str) -> Schema:
    """The operation of one REST call."""
    comment = registry.comment(call.rpc.full_name)
    op: Schema = {"operationId": call.name, "tags": [tag]}
    if comment:
        op.update(summary=summary(comment), description=comment)
    parameters = _parameters(registry, call)
    if parameters:
        op["parameters"] = parameters
    request_body = _request_body(registry, call)
    if request_body is not None:
        op["requestBody"] = request_body
    responses = {str(call.success_status): _success(registry, call)}
    for status in error_statuses(call):
        responses[str(status)] = response_ref(status)
    responses["default"] = {"$ref": "#/components/responses/Error"}
    op["responses"] = responses
    return op


def api_paths(registry: SchemaRegistry, calls: list[RestCall], tag: str) -> dict[str, Schema]:
    """The path items of the REST calls; ValueError if two bind the same method and path."""
    paths: dict[str, Schema] = {}
    for call in calls:
        path = paths.setdefault(openapi_path(call), {})
        method = call.http_method.lower()
        if method in path:
            raise ValueError(f"{call.rpc.full_name}: {call.http_method} {openapi_path(call)} is bound twice")
        path[method] = operation(registry, call, tag)
    return paths


def _ops_operation(route: OpsRoute) -> Schema:
    return {
        "operationId": route.operation_id,
        "tags": [OPS_TAG],
        "summary": route.summary,
        "security": [],
        "responses": {
            str(status): {
                "description": response.description,
                "headers": REQUEST_ID_HEADERS,
                "content": {response.media_type: {"schema": dict(response.schema)}},
            }
            for status, response in sorted(route.responses.items())
        },
    }


def ops_paths(*, admin_routes: bool = True) -> dict[str, Schema]:
    """The operational routes of gateway/rest/ops.py: no credentials. Without `admin_routes` (they
    are on an admin port of their own), only the docs routes."""
    paths: dict[str, Schema] = {}
    for route in OPS_ROUTES if admin_routes else DOCS_ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _ops_operation(route)
    return paths
