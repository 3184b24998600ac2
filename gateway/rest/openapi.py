"""The OpenAPI 3.1 document of the REST API, built from the same descriptors and http rules as the routes.

Nothing in it is written twice: the paths, parameters, bodies and success statuses come from
`rest_calls(SERVICE_DESCRIPTOR)`; the schemas come from the message descriptors by the JSON rules of
gateway/jsonmap (snake_case names, presence, enums by name, the same named special cases: Timestamp,
Point, LineString, JsonObject/JsonValue/JsonArray, and its flattened oneofs: TimelineEvent); the
descriptions are the proto comments, read from the descriptor set shipped with the package.

A message gets two schemas where the directions differ. A response schema says what the encoder
writes: a field without presence is always there (`required`), a field with presence only when set,
never `null` unless it carries `json_null_when_unset`. A request schema says what the decoder and
the domain accept: `null` means "absent" for any field, and the few rules of gateway/domain that a
client can check up front (handle lengths, non-negative indexes, ...) are stated, and only rules the
service enforces, since schemathesis' negative tests hold the document to them. A message used in
both directions is named `<Message>` in responses and `<Message>Input` in requests.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any, TypeAlias

import orjson
from google.protobuf import descriptor_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from gateway.domain.validation import MAX_HANDLE_LENGTH, MAX_ORDERS_PER_ROUTE, MAX_TEXT_LENGTH
from gateway.jsonmap.encode import null_when_unset
from gateway.jsonmap.enums import enum_names
from gateway.jsonmap.flatoneof import FlatOneof, flat_layout
from gateway.jsonmap.shapes import FLATTENED_ONEOFS
from gateway.jsonmap.timestamps import EXAMPLE as TIMESTAMP_EXAMPLE
from gateway.protos import SERVICE_DESCRIPTOR, json_pb2, order_pb2, protoset_path
from gateway.rest.rules import RestCall, rest_calls
from gateway.calls.auth import REALM

log = logging.getLogger(__name__)

Schema: TypeAlias = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
SECURITY_SCHEME = "basicAuth"
REQUEST_ID_HEADER = "X-Request-ID"
_PACKAGE = "hypertrack-gateway"

# ---------------------------------------------------------------------------------------------------
# Proto comments
# ---------------------------------------------------------------------------------------------------

_FILE = descriptor_pb2.FileDescriptorProto
_MESSAGE = descriptor_pb2.DescriptorProto
_ENUM = descriptor_pb2.EnumDescriptorProto
_SERVICE = descriptor_pb2.ServiceDescriptorProto


@dataclass(frozen=True, slots=True)
class Comments:
    """Leading comments of proto elements, by full name (`hypertrack.orders.v1.Order.status`)."""

    by_name: Mapping[str, str] = field(default_factory=dict)

    def of(self, full_name: str) -> str:
        return self.by_name.get(full_name, "")

    @classmethod
    def load(cls, path: Path | None = None) -> Comments:
        """The comments of a descriptor set with source info; none (and a warning) when it is missing
        or unreadable, so that the document loses its prose but not its shape."""
        path = protoset_path() if path is None else path
        try:
            files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
        except (OSError, DecodeError) as error:
            log.warning("no proto comments for the OpenAPI document: %s: %s", path, error)
            return cls()
        by_name: dict[str, str] = {}
        for file in files:
            by_name.update(_file_comments(file))
        return cls(by_name)


def _clean(comment: str) -> str:
    """A comment's text: the space after `//` and surrounding blank lines removed."""
    lines = [line.removeprefix(" ").rstrip() for line in comment.splitlines()]
    return "\n".join(lines).strip()


def _file_comments(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Full name -> comment of every message, field, enum, value, service and method of a file.

    SourceCodeInfo names an element by its path of field numbers and indexes in the
    FileDescriptorProto (`[4, 3, 2, 1]` is message_type[3].field[1]); this walks the same tree.
    """
    located = {
        tuple(location.path): _clean(location.leading_comments)
        for location in file.source_code_info.location
        if location.leading_comments
    }
    out: dict[str, str] = {}

    def note(full_name: str, path: tuple[int, ...]) -> None:
        if path in located:
            out[full_name] = located[path]

    def enum(proto: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}.{proto.name}"
        note(name, path)
        for index, value in enumerate(proto.value):
            note(f"{name}.{value.name}", (*path, _ENUM.VALUE_FIELD_NUMBER, index))

    def message(proto: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}.{proto.name}"
        note(name, path)
        for index, field_proto in enumerate(proto.field):
            note(f"{name}.{field_proto.name}", (*path, _MESSAGE.FIELD_FIELD_NUMBER, index))
        for index, nested in enumerate(proto.nested_type):
            message(nested, (*path, _MESSAGE.NESTED_TYPE_FIELD_NUMBER, index), name)
        for index, nested_enum in enumerate(proto.enum_type):
            enum(nested_enum, (*path, _MESSAGE.ENUM_TYPE_FIELD_NUMBER, index), name)

    for index, message_proto in enumerate(file.message_type):
        message(message_proto, (_FILE.MESSAGE_TYPE_FIELD_NUMBER, index), file.package)
    for index, enum_proto in enumerate(file.enum_type):
        enum(enum_proto, (_FILE.ENUM_TYPE_FIELD_NUMBER, index), file.package)
    for index, service in enumerate(file.service):
        service_name = f"{file.package}.{service.name}"
        note(service_name, (_FILE.SERVICE_FIELD_NUMBER, index))
        for method_index, method in enumerate(service.method):
            note(
                f"{service_name}.{method.name}",
                (_FILE.SERVICE_FIELD_NUMBER, index, _SERVICE.METHOD_FIELD_NUMBER, method_index),
            )
    return out


def _summary(comment: str) -> str:
    """The first sentence of a comment, for an operation's one-line summary."""
    first_paragraph = comment.split("\n\n", 1)[0].replace("\n", " ")
    sentence, dot, _ = first_paragraph.partition(". ")
    return sentence + "." if dot else first_paragraph


def _described(schema: Schema, description: str) -> Schema:
    return {**schema, "description": description} if description else schema


# ---------------------------------------------------------------------------------------------------
# Field rules of the domain that a request schema states
# ---------------------------------------------------------------------------------------------------

# Any Unicode except control characters (category Cc), as gateway/domain/validation.py checks.
_NO_CONTROL_CHARACTERS = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_HANDLE: Schema = {"minLength": 1, "maxLength": MAX_HANDLE_LENGTH, "pattern": _NO_CONTROL_CHARACTERS}
_TEXT: Schema = {"maxLength": MAX_TEXT_LENGTH, "pattern": _NO_CONTROL_CHARACTERS}
_NON_NEGATIVE: Schema = {"minimum": 0}

# What gateway/domain (validation.py, tracking.py, and check_query) refuses beyond the JSON shape,
# by request field name: every request message uses these names for the same thing. Only what the
# service enforces belongs here; schemathesis' negative tests send what these forbid and expect a 4xx.
REQUEST_FIELD_RULES: Mapping[str, Schema] = {
    "order_handle": _HANDLE,
    "worker_handle": _HANDLE,
    "device_id": _TEXT,
    "ops_group_handle": _TEXT,
    "address": _TEXT,
    "product_type": _TEXT,
    "type_index": _NON_NEGATIVE,
    "fulfillment_attempt": _NON_NEGATIVE,
    "expected_service_time": _NON_NEGATIVE,
    "capacity_used": _NON_NEGATIVE,
    "radius": {"minimum": 1},
    "orders": {"minItems": 1, "maxItems": MAX_ORDERS_PER_ROUTE},
}

# Request fields the domain refuses to do without (validate_track_request): absent, `null`, or the
# zero value is a 422, so the schema requires them and does not allow `null`.
REQUIRED_REQUEST_FIELDS = frozenset(
    {"worker_handle", "track_mode", "orders", "order_handle", "destination", "geometry"}
)


# ---------------------------------------------------------------------------------------------------
# Schemas of messages
# ---------------------------------------------------------------------------------------------------


class Direction(Enum):
    """Which side of the mapping a schema describes: what the encoder writes, or what is accepted."""

    RESPONSE = "response"
    REQUEST = "request"


_INTEGERS: dict[int, tuple[str, int, int]] = {
    FieldDescriptor.TYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: ("int64", 0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: ("int64", 0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: ("int64", -(2**63), 2**63 - 1),
    # JSON Schema integers are unbounded; `format: int64` would understate uint64.
    FieldDescriptor.TYPE_UINT64: ("", 0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: ("", 0, 2**64 - 1),
}
_NUMBERS = {FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float"}


def _scalar(field_descriptor: FieldDescriptor) -> Schema:
    """The JSON Schema of a scalar field's value, as the encoder writes it and the decoder reads it."""
    kind = field_descriptor.type
    if kind == FieldDescriptor.TYPE_STRING:
        return {"type": "string"}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in _INTEGERS:
        form, low, high = _INTEGERS[kind]
        return {"type": "integer", **({"format": form} if form else {}), "minimum": low, "maximum": high}
    if kind in _NUMBERS:
        return {"type": "number", "format": _NUMBERS[kind]}
    raise TypeError(
        f"{field_descriptor.full_name}: fields of type {kind} have no JSON mapping in this gateway"
    )


def _nullable(schema: Schema) -> Schema:
    """The schema, or JSON `null`."""
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _enum_values(enum: EnumDescriptor, *, with_zero: bool) -> list[str]:
    names = enum_names(enum)
    return [name for name, number in names.by_name.items() if with_zero or number != 0]


def _enum_description(enum: EnumDescriptor, values: Iterable[str], comments: Comments) -> str:
    """The enum's comment and one line per value, since JSON Schema has no place for the latter."""
    numbers = enum_names(enum).by_name
    lines = [comments.of(enum.full_name)] if comments.of(enum.full_name) else []
    for name in values:
        comment = comments.of(f"{enum.full_name}.{enum.values_by_number[numbers[name]].name}")
        lines.append(f"- `{name}`: {comment}" if comment else f"- `{name}`")
    return "\n".join(lines)


SchemaFactory: TypeAlias = Callable[["SchemaRegistry", Descriptor, Direction], Schema]


@dataclass
class SchemaRegistry:
    """Builds `components.schemas`: one schema per message (per direction where they differ) and enum.

    Schemas are built on first reference; a name is registered before its schema is built, so that
    recursive messages refer to themselves.
    """

    comments: Comments
    response_messages: frozenset[str] = frozenset()
    schemas: dict[str, Schema] = field(default_factory=dict)
    _names: dict[tuple[str, Direction], str] = field(default_factory=dict)

    def message_ref(self, descriptor: Descriptor, direction: Direction) -> Schema:
        if descriptor.full_name in _SAME_BOTH_WAYS:
            direction = Direction.RESPONSE
        key = (descriptor.full_name, direction)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self.component_name(descriptor, direction)
            self.schemas[name] = {}  # a placeholder until built, for recursive types
            self.schemas[name] = self.message_schema(descriptor, direction)
        return _ref(name)

    def enum_ref(self, enum: EnumDescriptor) -> Schema:
        """An enum as the JSON names of its values without the zero one: what an implicit field writes
        and accepts (the zero value is never written, and refused in requests)."""
        key = (enum.full_name, Direction.RESPONSE)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self.unique_name(enum.name, enum.full_name)
            values = _enum_values(enum, with_zero=False)
            self.schemas[name] = _described(
                {"type": "string", "enum": values}, _enum_description(enum, values, self.comments)
            )
        return _ref(name)

    def component_name(self, descriptor: Descriptor, direction: Direction) -> str:
        """`Message`, or `MessageInput` for the request schema of a message responses use too."""
        suffix = (
            "Input"
            if direction is Direction.REQUEST and descriptor.full_name in self.response_messages
            else ""
        )
        return self.unique_name(descriptor.name + suffix, descriptor.full_name + suffix)

    def unique_name(self, name: str, full_name: str) -> str:
        """The short name, or the full name where two packages declare the same short name."""
        return name if name not in self.schemas else full_name

    def message_schema(self, descriptor: Descriptor, direction: Direction) -> Schema:
        special = _SPECIAL_SCHEMAS.get(descriptor.full_name)
        flat = FLATTENED_ONEOFS.get(descriptor.full_name)
        if special is not None:
            schema = special(self, descriptor, direction)
        elif flat is not None:
            schema = flattened_schema(self, descriptor, flat, direction)
        else:
            schema = _generic(self, descriptor, direction)
        # A special case's own description says what its JSON is; the proto comment may describe the
        # protobuf side (google.protobuf.Timestamp's is about seconds and nanos).
        if "description" in schema:
            return schema
        return _described(schema, self.comments.of(descriptor.full_name))

    def properties_of(
        self, fields: Iterable[FieldDescriptor], direction: Direction
    ) -> tuple[dict[str, Schema], list[str]]:
        """The JSON properties of these fields, and the names of those always written (responses) or
        needed (requests)."""
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field_descriptor in fields:
            if direction is Direction.RESPONSE:
                schema, always = self._response_property(field_descriptor)
            else:
                schema, always = self._request_property(field_descriptor)
            properties[field_descriptor.name] = _described(
                schema, self.comments.of(field_descriptor.full_name)
            )
            if always:
                required.append(field_descriptor.name)
        return properties, required

    def value_schema(
        self, field_descriptor: FieldDescriptor, direction: Direction, *, with_zero: bool
    ) -> Schema:
        """The schema of one value of a field (an element, for a repeated field)."""
        if field_descriptor.message_type is not None:
            if field_descriptor.message_type.GetOptions().map_entry:
                raise TypeError(
                    f"{field_descriptor.full_name}: map fields have no JSON mapping in this gateway"
                )
            return self.message_ref(field_descriptor.message_type, direction)
        if field_descriptor.enum_type is not None:
            if with_zero:
                return {"type": "string", "enum": _enum_values(field_descriptor.enum_type, with_zero=True)}
            return self.enum_ref(field_descriptor.enum_type)
        return _scalar(field_descriptor)

    def _response_property(self, field_descriptor: FieldDescriptor) -> tuple[Schema, bool]:
        """What the encoder writes: repeated fields and fields without presence always (but an
        implicit enum is left out when zero); fields with presence when set, or as null with
        `json_null_when_unset`."""
        # An enum field with presence, or an element of a repeated one, can be written as its zero.
        with_zero = field_descriptor.has_presence or field_descriptor.is_repeated
        value = self.value_schema(field_descriptor, Direction.RESPONSE, with_zero=with_zero)
        if field_descriptor.is_repeated:
            return {"type": "array", "items": value}, True
        if field_descriptor.has_presence:
            if null_when_unset(field_descriptor):
                return _nullable(value), True
            return value, False
        always = field_descriptor.enum_type is None  # an implicit enum is left out when zero
        return value, always

    def _request_property(self, field_descriptor: FieldDescriptor) -> tuple[Schema, bool]:
        """What the decoder accepts, narrowed by the domain's rules: `null` is "absent" for any
        field, except the few the domain requires."""
        with_zero = field_descriptor.has_presence or field_descriptor.is_repeated
        value = self.value_schema(field_descriptor, Direction.REQUEST, with_zero=with_zero)
        rule = REQUEST_FIELD_RULES.get(field_descriptor.name, {})
        if field_descriptor.is_repeated:
            schema: Schema = {"type": "array", "items": value, **rule}
        elif field_descriptor.message_type is None and field_descriptor.enum_type is None:
            schema = {**value, **rule}  # a rule's minimum replaces the type's own
        else:
            schema = value
        if field_descriptor.name in REQUIRED_REQUEST_FIELDS:
            return schema, True
        return _nullable(schema), False


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _generic(registry: SchemaRegistry, descriptor: Descriptor, direction: Direction) -> Schema:
    """A message as the JSON object of its fields, nothing else (the decoder refuses unknown keys,
    the encoder writes no others)."""
    properties, required = registry.properties_of(descriptor.fields, direction)
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


# The named special cases of gateway/jsonmap/shapes.py, by message full name.

_RESPONSE_TIMESTAMP = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"
# What gateway/jsonmap/timestamps.py parses: RFC 3339 with up to nine fractional digits.
_REQUEST_TIMESTAMP = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _timestamp(registry: SchemaRegistry, descriptor: Descriptor, direction: Direction) -> Schema:
    if direction is Direction.RESPONSE:
        return {
            "type": "string",
            "format": "date-time",
            "pattern": _RESPONSE_TIMESTAMP,
            "examples": [TIMESTAMP_EXAMPLE],
            "description": "UTC, ISO 8601, with exactly three fractional digits and `Z`.",
        }
    return {
        "type": "string",
        "format": "date-time",
        "pattern": _REQUEST_TIMESTAMP,
        "examples": [TIMESTAMP_EXAMPLE],
        "description": "RFC 3339, with `Z` or an offset, within the years 0001 to 9999 in UTC.",
    }


def _geojson(kind: str, coordinates: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {"type": {"const": kind}, "coordinates": coordinates},
        "required": ["type", "coordinates"],
        "additionalProperties": False,
    }


def _number(minimum: float | None = None, maximum: float | None = None) -> Schema:
    schema: Schema = {"type": "number"}
    if minimum is not None:
        schema.update(minimum=minimum, maximum=maximum)
    return schema


def _point(registry: SchemaRegistry, descriptor: Descriptor, direction: Direction) -> Schema:
    """`{"type": "Point", "coordinates": [longitude, latitude]}`. Requests are held to the ranges the
    domain checks (check_point); responses show stored positions as they are."""
    if direction is Direction.REQUEST:
        items = [_number(-180, 180), _number(-90, 90)]
    else:
        items = [_number(), _number()]
    return _geojson(
        "Point", {"type": "array", "prefixItems": items, "items": False, "minItems": 2, "maxItems": 2}
    )


def _line_string(registry: SchemaRegistry, descriptor: Descriptor, direction: Direction) -> Schema:
    """`{"type": "LineString", "coordinates": [[longitude, latitude, altitude, "<timestamp>"], ...]}`;
    a position without a time has `null` in its place."""
    timestamp = registry.message_ref(timestamp_pb2.Timestamp.DESCRIPTOR, direction)
    position = {
        "type": "array",
        "prefixItems": [_number(), _number(), _number(), _nullable(timestamp)],
        "items": False,
        "minItems": 4,
        "maxItems": 4,
    }
    return _geojson("LineString", {"type": "array", "items": position})


# The JSON values of metadata are the same both ways, and any JSON: the decoder's one rule beyond JSON
# (an integer must fit in 64 bits, while `1e30` is a float and welcome) depends on how a number is
# spelled, which JSON Schema cannot see, as `1e30` is an integer to it.
def _json_value(registry: SchemaRegistry, descriptor: Descriptor, direction: Direction) -> Schema:
    return {"description": "Any JSON value. Integers must fit in 64 bits."}


def _json_object(registry: SchemaRegistry, descriptor: Descriptor, direction: Direction) -> Schema:
    return {
        "type": "object",
        "description": "Any JSON object, kept exactly as it was given. Integers must fit in 64 bits.",
    }


def _json_array(registry: SchemaRegistry, descriptor: Descriptor, direction: Direction) -> Schema:
    return {"type": "array", "description": "Any JSON array. Integers must fit in 64 bits."}


def flattened_schema(
    registry: SchemaRegistry, descriptor: Descriptor, flat: FlatOneof, direction: Direction
) -> Schema:
    """A message whose oneof is flattened (gateway/jsonmap/flatoneof.py): one object schema per member,
    holding the type key (the member's name), the message's other fields and the member's fields.
    Each variant is a component named after its member's message (`OrderCancelledEvent`)."""
    layout = flat_layout(descriptor, flat)
    outer, outer_required = registry.properties_of(layout.fields, direction)
    variants: dict[str, Schema] = {}
    for member_name, member in layout.members:
        inner, inner_required = registry.properties_of(member.fields, direction)
        comment = registry.comments.of(f"{descriptor.full_name}.{member_name}") or registry.comments.of(
            member.full_name
        )
        name = registry.component_name(member, direction)
        registry.schemas[name] = _described(
            {
                "type": "object",
                "properties": {flat.type_key: {"const": member_name}, **outer, **inner},
                "required": [flat.type_key, *outer_required, *inner_required],
                "additionalProperties": False,
            },
            comment,
        )
        variants[member_name] = _ref(name)
    return {
        "oneOf": list(variants.values()),
        "discriminator": {
            "propertyName": flat.type_key,
            "mapping": {key: ref["$ref"] for key, ref in variants.items()},
        },
    }


# The named special cases of gateway/jsonmap/shapes.py (SPECIAL_ENCODERS), by message full name.
_SPECIAL_SCHEMAS: Mapping[str, SchemaFactory] = {
    timestamp_pb2.Timestamp.DESCRIPTOR.full_name: _timestamp,
    order_pb2.Point.DESCRIPTOR.full_name: _point,
    order_pb2.LineString.DESCRIPTOR.full_name: _line_string,
    json_pb2.JsonObject.DESCRIPTOR.full_name: _json_object,
    json_pb2.JsonValue.DESCRIPTOR.full_name: _json_value,
    json_pb2.JsonArray.DESCRIPTOR.full_name: _json_array,
}
# Special cases whose JSON is the same in requests and responses: one component serves both.
_SAME_BOTH_WAYS = frozenset(
    {
        json_pb2.JsonObject.DESCRIPTOR.full_name,
        json_pb2.JsonValue.DESCRIPTOR.full_name,
        json_pb2.JsonArray.DESCRIPTOR.full_name,
    }
)
SPECIAL_SCHEMA_NAMES = frozenset(_SPECIAL_SCHEMAS)


def _reachable(roots: Iterable[Descriptor]) -> frozenset[str]:
    """Full names of the messages reachable from `roots` through message fields."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        descriptor = stack.pop()
        if descriptor.full_name not in seen:
            seen.add(descriptor.full_name)
            stack.extend(f.message_type for f in descriptor.fields if f.message_type is not None)
    return frozenset(seen)


# ---------------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------------


def _response_root(call: RestCall) -> Descriptor:
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


def _parameter_schema(registry: SchemaRegistry, field_descriptor: FieldDescriptor) -> Schema:
    """A path or query parameter: as gateway/rest/query.py types it, an enum never as its zero value."""
    if field_descriptor.enum_type is not None:
        return registry.enum_ref(field_descriptor.enum_type)
    return {**_scalar(field_descriptor), **REQUEST_FIELD_RULES.get(field_descriptor.name, {})}


def _parameter(
    registry: SchemaRegistry, field_descriptor: FieldDescriptor, location: str, *, required: bool
) -> Schema:
    parameter: Schema = {"name": field_descriptor.name, "in": location}
    description = registry.comments.of(field_descriptor.full_name)
    if description:
        parameter["description"] = description
    parameter["required"] = required
    parameter["schema"] = _parameter_schema(registry, field_descriptor)
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
        description = registry.comments.of(root.full_name)
    else:
        description = registry.comments.of(call.rpc.input_type.fields_by_name[call.body].full_name)
    body: Schema = {"description": description} if description else {}
    # An empty body is the empty message (gateway/rest/app.py); it is worth sending only where that
    # is a valid request, which the schema's required properties decide.
    body["required"] = bool(built.get("required"))
    body["content"] = {JSON: {"schema": schema}}
    return body


def _success(registry: SchemaRegistry, call: RestCall) -> Schema:
    root = _response_root(call)
    if call.response_body:
        description = registry.comments.of(call.rpc.output_type.fields_by_name[call.response_body].full_name)
    else:
        description = registry.comments.of(root.full_name)
    return {
        "description": description or "Success.",
        "headers": _REQUEST_ID_HEADERS,
        "content": {JSON: {"schema": registry.message_ref(root, Direction.RESPONSE)}},
    }


def _error_statuses(call: RestCall) -> list[int]:
    """The failures a call is documented with; any other status (a malformed HTTP request's 400, the
    rest of the gRPC code table: 403, 499, 501) falls under `default`."""
    # Credentials, validation, the admission limits (gateway/service/limits.py), and the backend.
    statuses = [401, 422, 429, 500, 503, 504]
    if call.path.variables:
        statuses.append(404)  # the record the path names does not exist
    if call.rpc.GetOptions().idempotency_level != descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS:
        statuses.append(409)  # a change the record's status does not allow
    if call.body:
        statuses += [408, 413, 415]  # the body: too slow, too large, not JSON
    return sorted(statuses)


def _operation(registry: SchemaRegistry, call: RestCall, tag: str) -> Schema:
    comment = registry.comments.of(call.rpc.full_name)
    operation: Schema = {"operationId": call.name, "tags": [tag]}
    if comment:
        operation.update(summary=_summary(comment), description=comment)
    parameters = _parameters(registry, call)
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(registry, call)
    if body is not None:
        operation["requestBody"] = body
    responses = {str(call.success_status): _success(registry, call)}
    for status in _error_statuses(call):
        responses[str(status)] = {"$ref": f"#/components/responses/{_ERROR_RESPONSES[status][0]}"}
    responses["default"] = {"$ref": "#/components/responses/Error"}
    operation["responses"] = responses
    return operation


# ---------------------------------------------------------------------------------------------------
# Error bodies and the operational routes
# ---------------------------------------------------------------------------------------------------

_REQUEST_ID_HEADERS: Schema = {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}

# status -> (component name, description)
_ERROR_RESPONSES: Mapping[int, tuple[str, str]] = {
    401: ("Unauthorized", "Missing, malformed or wrong credentials."),
    404: ("NotFound", "No order record matches the handle and the query (or no such route)."),
    408: ("RequestTimeout", "The body did not arrive in time."),
    409: ("Conflict", "The order's status does not allow the call, or the order is still open."),
    413: ("PayloadTooLarge", "The body is too large."),
    415: ("UnsupportedMediaType", "The body is not `application/json`."),
    422: ("ValidationFailed", "The request is invalid: `detail` names each field where it travels."),
    429: (
        "TooManyRequests",
        "Too many calls for the account, or too many failed authentications from the address; "
        "retry after `Retry-After` seconds.",
    ),
    500: ("InternalError", "An unexpected failure; it was logged."),
    503: ("Unavailable", "The order service is unavailable; retry later."),
    504: ("GatewayTimeout", "The order service did not answer within the deadline."),
}


def _error_schemas() -> dict[str, Schema]:
    return {
        "Error": {
            "type": "object",
            "description": "Every failure's body (gateway/rest/errors.py).",
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


def _error_responses() -> dict[str, Schema]:
    responses: dict[str, Schema] = {}
    for status, (name, description) in _ERROR_RESPONSES.items():
        schema = "ValidationError" if status == 422 else "Error"
        headers = dict(_REQUEST_ID_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = {
                "description": f'`Basic realm="{REALM}"`',
                "required": True,
                "schema": {"type": "string", "pattern": "^Basic realm="},
            }
        if status == 429:
            # Sent with the limits' own refusals; a RESOURCE_EXHAUSTED of the transport has none.
            headers["Retry-After"] = {
                "description": "Seconds to wait before the next call.",
                "required": False,
                "schema": {"type": "integer", "minimum": 1},
            }
        responses[name] = {
            "description": description,
            "headers": headers,
            "content": {JSON: {"schema": _ref(schema)}},
        }
    responses["Error"] = {
        "description": "Any other failure, with the same body: a malformed HTTP request (400), or a "
        "status of google/rpc/code.proto's table (gateway/rest/errors.py).",
        "headers": _REQUEST_ID_HEADERS,
        "content": {JSON: {"schema": _ref("Error")}},
    }
    return responses


def _json_response(description: str, schema: Schema) -> Schema:
    return {"description": description, "headers": _REQUEST_ID_HEADERS, "content": {JSON: {"schema": schema}}}


def _ops_paths() -> dict[str, Schema]:
    """GET /healthz, /readyz, /metrics and /openapi.json (gateway/rest/ops.py): no credentials."""
    readiness = {
        "type": "object",
        "properties": {
            "status": {"enum": ["ready", "not ready"]},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
        "required": ["status", "checks"],
        "additionalProperties": False,
    }
    liveness = {
        "type": "object",
        "properties": {"status": {"const": "ok"}},
        "required": ["status"],
        "additionalProperties": False,
    }

    def get(operation_id: str, summary: str, responses: Schema) -> Schema:
        return {
            "get": {
                "operationId": operation_id,
                "tags": ["Operations"],
                "summary": summary,
                "security": [],
                "responses": responses,
            }
        }

    return {
        "/healthz": get(
            "Healthz", "Liveness: the process serves HTTP.", {"200": _json_response("Alive.", liveness)}
        ),
        "/readyz": get(
            "Readyz",
            "Readiness: the database and the gRPC backend answer.",
            {
                "200": _json_response("Ready.", readiness),
                "503": _json_response("Not ready; `checks` says what failed.", readiness),
            },
        ),
        "/metrics": get(
            "Metrics",
            "Prometheus metrics, in the text exposition format.",
            {
                "200": {
                    "description": "The metrics.",
                    "headers": _REQUEST_ID_HEADERS,
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        "/openapi.json": get(
            "OpenApi", "This document.", {"200": _json_response("The OpenAPI document.", {"type": "object"})}
        ),
    }


# ---------------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version(_PACKAGE)
    except metadata.PackageNotFoundError:  # running from a tree that was never installed
        return "0.0.0"


def build_document(
    service: ServiceDescriptor = SERVICE_DESCRIPTOR, comments: Comments | None = None
) -> Schema:
    """The OpenAPI 3.1 document of the service's REST calls, as a JSON-ready dict."""
    comments = Comments.load() if comments is None else comments
    calls = rest_calls(service)
    # The error bodies first, so that no message takes their names.
    registry = SchemaRegistry(
        comments, response_messages=_reachable(_response_root(c) for c in calls), schemas=_error_schemas()
    )
    tag = service.name
    paths: dict[str, Schema] = {}
    for call in calls:
        path = paths.setdefault(openapi_path(call), {})
        method = call.http_method.lower()
        if method in path:
            raise ValueError(f"{call.rpc.full_name}: {call.http_method} {openapi_path(call)} is bound twice")
        path[method] = _operation(registry, call, tag)
    paths.update(_ops_paths())
    description = comments.of(service.full_name)
    conventions = (
        "Every response carries an `X-Request-ID` (echoed when the caller sent one, generated otherwise). "
        "A `Grpc-Timeout` header (such as `5S`) sets the deadline of the call."
    )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "HyperTrack Orders API (hypertrack-gateway)",
            "version": _version(),
            "description": "\n\n".join(part for part in (description, conventions) if part),
        },
        "tags": [
            _described({"name": tag}, description),
            {"name": "Operations", "description": "Liveness, readiness, metrics and this document."},
        ],
        "security": [{SECURITY_SCHEME: []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(registry.schemas.items())),
            "responses": _error_responses(),
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


@functools.cache
def openapi_document() -> bytes:
    """The document as JSON, built once (at start-up) and served as is."""
    return orjson.dumps(build_document())
