"""The OpenAPI document: valid OpenAPI 3.1, one operation per REST call derived from the rules, and
schemas that say what the JSON mapping really writes (checked against the reference example and against
the encoder's output for arbitrary messages) and what the error bodies look like."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.calls.events import order_event
from gateway.demo import reference_order
from gateway.domain.tracking import build_orders
from gateway.events.signing import signature_header
from gateway.jsonmap import decode, encode
from gateway.jsonmap.contracts import Direction
from gateway.jsonmap.scalars import INTEGER_RANGES
from gateway.jsonmap.shapes import FLATTENED_ONEOFS, MESSAGE_SHAPES
from gateway.jsonmap.timestamps import MAX_SECONDS, MIN_SECONDS
from gateway.observability.metrics import Metrics
from gateway.openapi import Comments, build_document, openapi_document, openapi_path
from gateway.openapi.document import SERVERS
from gateway.openapi.schemas import SchemaRegistry
from gateway.protos import SERVICE_DESCRIPTOR, events_pb2, json_pb2, orders_service_pb2
from gateway.rest import body
from gateway.rest.errors import HTTP_STATUS, error_body, validation_error
from gateway.rest.ops import ADMIN_ROUTES, DOCS, OPS_ROUTES, ops_routes
from gateway.rest.rules import RestCall, rest_calls

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "cancel-order-example.json"
CALLS = rest_calls(SERVICE_DESCRIPTOR)
DOCUMENT: dict[str, Any] = build_document()
_DOCUMENT_URI = "urn:hypertrack-gateway:openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(
    _DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


@functools.cache
def validator(component: str) -> Draft202012Validator:
    """A validator of a component schema, its `$ref`s resolved within the document, formats checked."""
    return Draft202012Validator(
        {"$ref": f"{_DOCUMENT_URI}#/components/schemas/{component}"},
        registry=_REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def errors_of(component: str, instance: object) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator(component).iter_errors(instance)]


def operation(call: RestCall) -> dict[str, Any]:
    operation_object: dict[str, Any] = DOCUMENT["paths"][openapi_path(call)][call.http_method.lower()]
    return operation_object


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """The object a `{"$ref": "#/..."}` names, or the node itself."""
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


# --- the document as a whole ----------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)


def test_served_document_is_built_once_and_is_the_built_document() -> None:
    served = openapi_document()
    assert openapi_document() is served
    assert orjson.loads(served) == DOCUMENT


def test_api_paths_are_exactly_those_of_the_rules_and_ops_paths_those_of_ops_routes() -> None:
    secured = {
        path for path, item in DOCUMENT["paths"].items() if all("security" not in op for op in item.values())
    }
    assert secured == {openapi_path(call) for call in CALLS}
    unsecured = set(DOCUMENT["paths"]) - secured
    assert unsecured == {route.path for route in OPS_ROUTES}
    # The docs page's assets are served, not documented: they are the page's, not the API's.
    served = {path for _, path, _ in ops_routes(Metrics(), {}, b"")}
    assert served - unsecured == {p for p in served if p.startswith(f"{DOCS.path}/")} != set()
    operations = [
        (path, method) for path, item in DOCUMENT["paths"].items() for method in item if path in secured
    ]
    assert len(operations) == len(CALLS)


def test_api_calls_need_basic_credentials_and_ops_routes_none() -> None:
    assert DOCUMENT["components"]["securitySchemes"]["basicAuth"] == {
        "type": "http",
        "scheme": "basic",
        "description": "`Authorization: Basic base64(AccountID:SecretKey)`.",
    }
    assert DOCUMENT["security"] == [{"basicAuth": []}]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert DOCUMENT["paths"][path]["get"]["security"] == []


def test_the_server_is_the_one_the_document_is_read_from_even_behind_a_proxy() -> None:
    # Relative to the document's URL: behind a proxy that serves the API under a prefix, the
    # calls go under the same prefix; no host or port of the process's own is named.
    assert DOCUMENT["servers"] == SERVERS
    assert [server["url"] for server in SERVERS] == ["."]


def test_with_an_admin_port_the_document_lists_no_admin_routes() -> None:
    without = build_document(admin_routes=False)
    validate(without, cls=OpenAPIV31SpecValidator)
    assert set(DOCUMENT["paths"]) - set(without["paths"]) == {route.path for route in ADMIN_ROUTES}
    assert orjson.loads(openapi_document(admin_routes=False)) == without


def test_the_schema_of_each_special_shape_is_its_records() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    documented_shapes = {"Timestamp", "Point", "LineString", "JsonObject"}  # what the service's messages hold
    assert documented_shapes <= {name.rsplit(".", 1)[1] for name in MESSAGE_SHAPES}
    for shape in MESSAGE_SHAPES.values():
        name = shape.full_name.rsplit(".", 1)[1]
        assert (name in schemas) == (name in documented_shapes)
        directions = [Direction.RESPONSE] if shape.same_both_ways else list(Direction)
        for direction in directions:
            suffix = "Input" if direction is Direction.REQUEST else ""
            if name + suffix not in schemas:  # no request carries it
                continue
            own = shape.schema(SchemaRegistry(Comments()), direction)
            documented = {k: v for k, v in schemas[name + suffix].items() if k != "description"}
            assert documented == {k: v for k, v in own.items() if k != "description"}, name


def test_ops_paths_are_the_records_of_ops_routes() -> None:
    for route in OPS_ROUTES:
        op = DOCUMENT["paths"][route.path][route.method.lower()]
        assert op["operationId"] == route.operation_id
        assert set(op["responses"]) == {str(status) for status in route.responses}


def test_error_statuses_are_those_of_the_status_tables() -> None:
    by_code = {code.name: status for code, status in HTTP_STATUS.items()}
    responses = DOCUMENT["components"]["responses"]
    for code, component in [
        ("UNAUTHENTICATED", "Unauthorized"),
        ("NOT_FOUND", "NotFound"),
        ("FAILED_PRECONDITION", "Conflict"),
        ("INVALID_ARGUMENT", "ValidationFailed"),
        ("RESOURCE_EXHAUSTED", "TooManyRequests"),
        ("UNAVAILABLE", "Unavailable"),
        ("DEADLINE_EXCEEDED", "GatewayTimeout"),
    ]:
        assert component in responses
        for call in CALLS:
            listed = operation(call)["responses"].get(str(by_code[code]))
            assert listed is None or listed == {"$ref": f"#/components/responses/{component}"}
    for call in CALLS:
        if call.body:
            assert {str(s) for s in body.BODY_STATUSES} <= set(operation(call)["responses"])


# --- one operation per REST call ------------------------------------------------------------------


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.name)
def test_operation_of_each_call(call: RestCall) -> None:
    op = operation(call)
    assert op["operationId"] == call.name
    assert op["summary"] and op["description"]  # from the proto comments
    parameters = op.get("parameters", [])
    path_parameters = [(p["name"], p["required"]) for p in parameters if p["in"] == "path"]
    query_parameters = [(p["name"], p["required"]) for p in parameters if p["in"] == "query"]
    assert path_parameters == [(name, True) for _, name in call.path.variables]
    assert query_parameters == [(name, False) for name in call.query_fields]
    for _, name in call.path.variables:
        assert "{" + name + "}" in openapi_path(call)
    assert ("requestBody" in op) == bool(call.body)
    responses = op["responses"]
    assert str(call.success_status) in responses
    assert {"401", "422", "429", "500", "503", "504", "default"} <= set(responses)


def test_paths_and_statuses_of_the_contract() -> None:
    by_name = {call.name: call for call in CALLS}
    assert {name: (c.http_method, openapi_path(c)) for name, c in by_name.items()} == {
        "TrackOrders": ("POST", "/orders/track"),
        "GetOrder": ("GET", "/orders/{order_handle}"),
        "CancelOrder": ("POST", "/orders/{order_handle}/cancel"),
        "CompleteOrder": ("POST", "/orders/{order_handle}/complete"),
        "DisableOrder": ("POST", "/orders/{order_handle}/disable"),
        "ListOrderWebhooks": ("GET", "/orders/{order_handle}/webhooks"),
    }
    statuses = {name: set(operation(c)["responses"]) for name, c in by_name.items()}
    assert "201" in statuses["TrackOrders"]
    assert "404" not in statuses["TrackOrders"]
    for name in ("CancelOrder", "CompleteOrder", "DisableOrder"):
        assert {"200", "401", "404", "409", "413", "415", "422"} <= statuses[name]
    assert {"200", "401", "404", "422"} <= statuses["GetOrder"]
    assert not {"409", "413", "415"} & statuses["GetOrder"]  # no change, no body
    assert {"200", "401", "422"} <= statuses["ListOrderWebhooks"]
    assert not {"409", "413", "415"} & statuses["ListOrderWebhooks"]


def test_query_parameters_are_typed_as_the_query_parser_reads_them() -> None:
    cancel = next(c for c in CALLS if c.name == "CancelOrder")
    parameters = {p["name"]: p for p in operation(cancel)["parameters"]}
    assert resolve(parameters["type"]["schema"])["enum"] == ["pick", "drop"]  # never "unspecified"
    for name in ("type_index", "fulfillment_attempt"):
        schema = parameters[name]["schema"]
        assert schema["type"] == "integer"
        assert schema["minimum"] == 0  # check_query refuses negatives
        assert schema["maximum"] == 2**31 - 1
    handle = parameters["order_handle"]["schema"]
    assert (handle["type"], handle["minLength"], handle["maxLength"]) == ("string", 1, 255)


def test_request_bodies() -> None:
    for call in CALLS:
        body = operation(call).get("requestBody")
        if call.name == "TrackOrders":
            assert body is not None
            assert body["required"] is True
            assert body["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/TrackOrdersRequest"
            }
        elif call.name in ("GetOrder", "ListOrderWebhooks"):
            assert body is None
        else:  # cancel, complete, disable: absent, {} or {"metadata": {...}}
            assert body is not None
            assert body["required"] is False
            assert body["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/OrderUpdate"
            }
    assert errors_of("OrderUpdate", {}) == []
    assert errors_of("OrderUpdate", {"metadata": {"customerID": "12654", "n": [1, 2.5, None, {}]}}) == []
    assert errors_of("OrderUpdate", {"metadata": None}) == []  # null is "absent"
    assert errors_of("OrderUpdate", {"reason": "x"})  # no other key
    assert errors_of("OrderUpdate", {"metadata": []})
    assert errors_of("OrderUpdate", None)


def test_success_responses_are_the_response_body_field() -> None:
    for call in CALLS:
        success = operation(call)["responses"][str(call.success_status)]
        schema = success["content"]["application/json"]["schema"]
        expected = {
            "TrackOrders": "TrackOrdersResponse",
            "ListOrderWebhooks": "ListOrderWebhooksResponse",
        }.get(call.name, "Order")
        assert schema == {"$ref": f"#/components/schemas/{expected}"}
        assert success["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/RequestId"}


# --- the order schema -----------------------------------------------------------------------------


@pytest.fixture
def example() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(REFERENCE.read_bytes())
    return loaded


def test_reference_example_validates_against_order_schema(example: dict[str, Any]) -> None:
    assert errors_of("Order", example) == []


def test_each_reference_event_matches_exactly_its_own_variant(example: dict[str, Any]) -> None:
    variants = resolve(DOCUMENT["components"]["schemas"]["TimelineEvent"])["discriminator"]["mapping"]
    for event in example["timeline"]:
        matching = [t for t, ref in variants.items() if errors_of(ref.rsplit("/", 1)[1], event) == []]
        assert matching == [event["type"]]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda o: o.pop("order_handle"), "a field without presence is always written"),
        (lambda o: o.update(unknown=1), "no other keys"),
        (lambda o: o.update(status="unspecified"), "the zero value is never written"),
        (lambda o: o.update(status="CANCELLED"), "enums by their lowercase names"),
        (lambda o: o.update(cancelled_at="2023-10-26T01:37:03Z"), "timestamps have milliseconds"),
        (lambda o: o.update(type_index="0"), "integers are numbers"),
        (lambda o: o.update(type_index=1.5), "integers are integers"),
        (lambda o: o.update(visited_destination=None), "null only where json_null_when_unset"),
        (lambda o: o["destination"]["geometry"].update(type="point"), "GeoJSON Point"),
        (lambda o: o["destination"]["geometry"]["coordinates"].append(0.0), "a Point is [lon, lat]"),
        (lambda o: o["polyline"]["coordinates"][0].pop(), "positions are [lon, lat, alt, time]"),
        (lambda o: o["timeline"][3].pop("driver_handle"), "json_null_when_unset fields are always written"),
        (lambda o: o["timeline"][0].update(type="order_lost"), "only the event types of the oneof"),
        (lambda o: o["timeline"][0].update(distance=1), "each event has only its own fields"),
    ],
)
def test_order_schema_refuses_what_the_encoder_never_writes(
    example: dict[str, Any], change: Callable[[dict[str, Any]], object], why: str
) -> None:
    changed = copy.deepcopy(example)
    change(changed)
    assert errors_of("Order", changed), why


def test_what_may_be_absent_or_null() -> None:
    minimal = {"order_handle": "x", "fulfillment_attempt": 0, "type_index": 0, "timeline": []}
    assert errors_of("Order", minimal) == []
    assert errors_of("Order", {**minimal, "metadata": {"big": 2**70, "float": 1e300, "nested": [None]}}) == []
    ended = {"type": "driver_activity_ended", "driver_handle": None, "activity": "stop", "distance": None}
    assert errors_of("TimelineEvent", ended) == []
    assert errors_of("TimelineEvent", {**ended, "recorded_at": "2023-10-26T01:34:24.103Z", "steps": 0}) == []
    line = {
        "type": "LineString",
        "coordinates": [[1.0, 2.0, 3.0, None], [1, 2, 3, "2023-10-26T01:34:24.103Z"]],
    }
    assert errors_of("LineString", line) == []


# Arbitrary messages of every type a response reaches, driven by the descriptors, encoded by the real
# encoder: whatever it writes must validate against the schema of the message.
_JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_SPECIAL_MESSAGES: dict[str, st.SearchStrategy[Message]] = {
    timestamp_pb2.Timestamp.DESCRIPTOR.full_name: st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(MIN_SECONDS, MAX_SECONDS),
        nanos=st.integers(0, 999_999_999),
    ),
    json_pb2.JsonObject.DESCRIPTOR.full_name: st.dictionaries(
        st.text(max_size=5), _JSON_VALUES, max_size=3
    ).map(lambda d: decode(json_pb2.JsonObject, d)),
    json_pb2.JsonValue.DESCRIPTOR.full_name: _JSON_VALUES.map(lambda v: decode(json_pb2.JsonValue, v)),
    json_pb2.JsonArray.DESCRIPTOR.full_name: st.lists(_JSON_VALUES, max_size=3).map(
        lambda v: decode(json_pb2.JsonArray, v)
    ),
}


def _scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.enum_type is not None:
        return st.sampled_from([value.number for value in field.enum_type.values])
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=8)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    low, high = INTEGER_RANGES[field.type]
    return st.integers(low, high)


@functools.cache
def messages(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Messages of the type with any subset of their fields set (oneof members: the last one set wins)."""
    if descriptor.full_name in _SPECIAL_MESSAGES:
        return _SPECIAL_MESSAGES[descriptor.full_name]
    values: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        one = st.deferred(lambda f=field: messages(f.message_type)) if field.message_type else _scalars(field)
        values[field.name] = st.lists(one, max_size=2) if field.is_repeated else one
    message_class = GetMessageClass(descriptor)

    def build(chosen: dict[str, Any]) -> Message:
        message = message_class()
        for name, value in chosen.items():
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                getattr(message, name).extend(value)
            elif field.message_type is not None:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    flat = FLATTENED_ONEOFS.get(descriptor.full_name)
    if flat is None:
        return st.fixed_dictionaries({}, optional=values).map(build)
    # A flattened oneof always has a member: the decoder refuses an object without a type, and the
    # domain writes no event without one, so an empty event is no response's.
    members = [f.name for f in descriptor.oneofs_by_name[flat.oneof].fields]
    return st.sampled_from(members).flatmap(
        lambda member: st.fixed_dictionaries(
            {member: values[member]}, optional={k: v for k, v in values.items() if k not in members}
        ).map(build)
    )


@settings(max_examples=150, deadline=None)
@given(messages(orders_service_pb2.TrackOrdersResponse.DESCRIPTOR))
def test_whatever_the_encoder_writes_validates_against_the_response_schema(response: Message) -> None:
    encoded = orjson.loads(orjson.dumps(encode(response)))  # as a client reads it
    assert errors_of("TrackOrdersResponse", encoded) == []


@settings(max_examples=100, deadline=None)
@given(messages(orders_service_pb2.ListOrderWebhooksResponse.DESCRIPTOR))
def test_whatever_the_replay_writes_validates_against_its_schema(response: Message) -> None:
    encoded = orjson.loads(orjson.dumps(encode(response)))
    assert errors_of("ListOrderWebhooksResponse", encoded) == []


def test_real_events_validate_with_six_fractional_digits() -> None:
    event = order_event("demo", reference_order(), 1698287400123000, 1698287400123456)
    written = encode(event)
    assert errors_of("OrderEvent", written) == []
    assert written["created_at"] == "2023-10-26T02:30:00.123456Z"  # type: ignore[index,call-overload]
    webhook = events_pb2.OrderWebhook.FromString(event.SerializeToString())
    webhook.delivery_http_status = 500
    webhook.retry_count = 1
    page = {"webhooks": [encode(webhook)], "pagination_token": None}
    assert errors_of("ListOrderWebhooksResponse", page) == []
    # Three digits are an order's, not an event's.
    wrong = {**written, "created_at": "2023-10-26T02:30:00.123Z"}  # type: ignore[dict-item]
    assert errors_of("OrderEvent", wrong)


def test_the_replay_parameters_are_typed_as_the_query_parser_reads_them() -> None:
    replay = next(c for c in CALLS if c.name == "ListOrderWebhooks")
    parameters = {p["name"]: p for p in operation(replay)["parameters"]}
    value = parameters["value"]
    assert (value["style"], value["explode"]) == ("form", False)  # value=cancelled,completed
    assert value["schema"]["type"] == "array" and value["schema"]["minItems"] == 1
    assert "cancelled" in resolve(value["schema"]["items"])["enum"]
    for name in ("from_time", "to_time"):
        instant = resolve(parameters[name]["schema"])
        assert (instant["type"], instant["format"]) == ("string", "date-time")
    limit = parameters["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 100)  # the domain's PAGE_SIZE
    assert resolve(parameters["sort_direction"]["schema"])["enum"] == ["asc", "desc"]
    assert parameters["pagination_token"]["schema"] == {"type": "string"}
    # Only the repeated field is a list.
    assert [name for name, p in parameters.items() if "explode" in p] == ["value"]


def test_the_webhook_is_documented_with_its_body_and_headers() -> None:
    post = DOCUMENT["webhooks"]["orderEvents"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/OrderEvent"}}
    headers = {p["name"]: p for p in post["parameters"]}
    assert set(headers) == {"X-HyperTrack-Delivery-Id", "X-HyperTrack-Signature"}
    assert all(p["in"] == "header" and p["required"] for p in headers.values())
    signed = signature_header("whsec_x", b"[]", timestamp=1698287400)
    assert Draft202012Validator(headers["X-HyperTrack-Signature"]["schema"]).is_valid(signed)
    assert set(post["responses"]) == {"2XX", "4XX", "default"}
    assert post["security"] == []  # the receiver is the partner's


def test_real_orders_validate() -> None:
    assert errors_of("Order", encode(reference_order())) == []
    request = decode(
        orders_service_pb2.TrackOrdersRequest,
        {
            "worker_handle": "w",
            "track_mode": "flex",
            "orders": [
                {"order_handle": "a", "destination": {"geometry": {"type": "Point", "coordinates": [1, 2]}}},
                {"order_handle": "a", "type": "pick", "metadata": {"k": [1, 1.0]}, "destination": {}},
            ],
        },
    )
    orders = build_orders(request, {}, now_ms=1_700_000_000_000, route_handle="r", new_share_url=lambda: "u")
    for order in orders:
        assert errors_of("Order", encode(order)) == []


# --- request schemas ------------------------------------------------------------------------------

TRACK = {
    "worker_handle": "James",
    "device_id": "52193948-1A79-47CC-AB81-2FB0A59536D1",
    "track_mode": "on_time",
    "ops_group_handle": None,  # null is "absent"
    "orders": [
        {
            "order_handle": "order-9",
            "type": "pick",
            "type_index": 0,
            "scheduled_at": "2023-10-26T02:30:00+02:00",
            "destination": {"geometry": {"type": "Point", "coordinates": [-121.86, 37.32]}, "radius": 50},
            "metadata": {"customerID": "12654"},
        }
    ],
}


def test_a_valid_track_request_validates_and_decodes() -> None:
    assert errors_of("TrackOrdersRequest", TRACK) == []
    decode(orders_service_pb2.TrackOrdersRequest, TRACK)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda r: r.pop("worker_handle"), "required by validate_track_request"),
        (lambda r: r.update(track_mode=None), "required, so not nullable"),
        (lambda r: r.update(orders=[]), "at least one order"),
        (lambda r: r.update(worker_handle=""), "handles are 1 to 255 characters"),
        (lambda r: r.update(worker_handle="a\u0085b"), "no control characters"),
        (lambda r: r["orders"][0].update(type_index=-1), "non-negative"),
        (lambda r: r["orders"][0].update(type="unspecified"), "an implicit enum never takes its zero"),
        (lambda r: r["orders"][0]["destination"].update(radius=0), "radius > 0"),
        (lambda r: r["orders"][0]["destination"]["geometry"].update(coordinates=[0, 91]), "latitude -90..90"),
        (lambda r: r["orders"][0].pop("destination"), "a destination is required"),
        (lambda r: r["orders"][0].update(scheduled_at="2023-10-26 02:30"), "RFC 3339"),
        (
            lambda r: r["orders"][0].update(scheduled_at="2023-10-26T02:30:00.1234567890Z"),
            "at most nanoseconds",
        ),
        (lambda r: r.update(status="tracking"), "no other keys"),
    ],
)
def test_request_schema_refuses_what_the_service_refuses(
    change: Callable[[dict[str, Any]], object], why: str
) -> None:
    changed = copy.deepcopy(TRACK)
    change(changed)
    assert errors_of("TrackOrdersRequest", changed), why


def test_a_message_in_both_directions_gets_two_schemas() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert "required" not in schemas["Destination"]  # what is written: only what is set
    assert schemas["DestinationInput"]["required"] == ["geometry"]  # what the domain needs
    assert schemas["Timestamp"]["pattern"] != schemas["TimestampInput"]["pattern"]
    assert "JsonObjectInput" not in schemas  # the same both ways: one schema


# --- error bodies ---------------------------------------------------------------------------------


def test_error_bodies_validate() -> None:
    not_found = orjson.loads(error_body({"reason": "ORDER_NOT_FOUND", "order_handle": "x"}, "not found"))
    assert errors_of("Error", not_found) == []
    assert errors_of("Error", orjson.loads(error_body({}, "no such route"))) == []
    assert errors_of("Error", orjson.loads(error_body({"allowed": ["GET"]}, "method not allowed"))) == []
    invalid = validation_error(
        {"query": {"type": ["must be one of: pick, drop"]}, "body": {"x": ["unknown"]}}
    )
    assert errors_of("ValidationError", orjson.loads(error_body(invalid.detail, invalid.message))) == []


@pytest.mark.parametrize(
    "body",
    [
        {"detail": {}},
        {"message": "m"},
        {"detail": "x", "message": "m"},
        {"detail": {}, "message": "m", "extra": 1},
    ],
)
def test_error_schema_needs_detail_object_and_message(body: dict[str, Any]) -> None:
    assert errors_of("Error", body)


@pytest.mark.parametrize(
    "detail",
    [
        {"cookie": {"a": ["m"]}},
        {"query": {"a": "m"}},
        {"query": {"a": []}},
        {"query": ["a"]},
    ],
)
def test_validation_error_detail_is_the_location_map(detail: dict[str, Any]) -> None:
    assert errors_of("ValidationError", {"detail": detail, "message": "m"})


def test_error_responses_carry_their_headers() -> None:
    responses = DOCUMENT["components"]["responses"]
    unauthorized = responses["Unauthorized"]
    assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True
    assert unauthorized["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert responses["TooManyRequests"]["headers"]["Retry-After"]["schema"] == {
        "type": "integer",
        "minimum": 1,
    }
    validation = responses["ValidationFailed"]["content"]["application/json"]["schema"]
    assert validation == {"$ref": "#/components/schemas/ValidationError"}
    for response in responses.values():
        assert response["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/RequestId"}


# --- proto comments -------------------------------------------------------------------------------


def test_descriptions_come_from_the_proto_comments() -> None:
    cancel = operation(next(c for c in CALLS if c.name == "CancelOrder"))
    assert cancel["summary"] == "Cancels an order."
    assert cancel["description"].startswith("Cancels an order. Idempotent:")
    order = DOCUMENT["components"]["schemas"]["Order"]
    assert order["properties"]["status"]["description"] == "The life-cycle status."
    assert (
        "- `cancelled`: Cancelled. Terminal."
        in DOCUMENT["components"]["schemas"]["OrderStatus"]["description"]
    )


def test_without_the_descriptor_set_the_document_keeps_its_shape(tmp_path: Path) -> None:
    comments = Comments.load(tmp_path / "missing.protoset")
    assert comments.by_name == {}
    (tmp_path / "broken.protoset").write_bytes(b"\xff not a descriptor set")
    assert Comments.load(tmp_path / "broken.protoset").by_name == {}
    bare = build_document(comments=comments)
    validate(bare, cls=OpenAPIV31SpecValidator)
    assert set(bare["paths"]) == set(DOCUMENT["paths"])
    assert "description" not in bare["components"]["schemas"]["Order"]
    assert "summary" not in bare["paths"]["/orders/{order_handle}/cancel"]["post"]
