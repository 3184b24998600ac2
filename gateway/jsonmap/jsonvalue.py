"""`JsonObject`, `JsonValue` and `JsonArray` as the plain JSON they hold.

Metadata must come back exactly as given: member order, integers versus floats (`1` stays `1`, `1.0`
stays `1.0`), 64-bit integers with every digit, nesting and nulls.
"""

from __future__ import annotations

import math
from typing import Any, cast

from google.protobuf import struct_pb2

from gateway.domain.errors import FieldViolation
from gateway.domain.validation import MAX_METADATA_DEPTH, NESTED_TOO_DEEPLY
from gateway.jsonmap.contracts import (
    MUST_BE_ARRAY,
    MUST_BE_OBJECT,
    MUST_BE_TEXT,
    Direction,
    Json,
    MessageShape,
    Schema,
    SchemaBuilder,
    child_path,
    is_text,
    item_path,
)
from gateway.protos import json_pb2

# Containers (objects and arrays) one value may nest: the domain's bound, which every surface shares;
# here deeper input is refused before it can exhaust the stack.
MAX_DEPTH = MAX_METADATA_DEPTH
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# The generated stubs and types-protobuf disagree on the enum's Python type; the value is 0 either way.
_NULL = cast("struct_pb2.NullValue", struct_pb2.NULL_VALUE)
_SCALAR_KINDS = frozenset({"string_value", "integer_value", "number_value", "bool_value"})
# The class's method, called as `_which_kind(value, "kind")`: upb resolves `value.WhichOneof` by name
# on every call, which costs more than the call itself.
_which_kind = json_pb2.JsonValue.WhichOneof


def encode_value(value: json_pb2.JsonValue) -> Json:
    """The JSON value; an unset value is `null`, like `null_value`."""
    kind = _which_kind(value, "kind")
    if kind in _SCALAR_KINDS:
        scalar: Json = getattr(value, kind)
        return scalar
    if kind == "object_value":
        return encode_object(value.object_value)
    if kind == "array_value":
        return [encode_value(item) for item in value.array_value.values[:]]
    return None


def encode_object(obj: json_pb2.JsonObject) -> dict[str, Json]:
    """The JSON object, members in their stored order."""
    # A loop rather than a comprehension over encode_value: metadata is mostly flat strings and
    # numbers, and reading those here saves a call per member. `[:]` (here and below) copies a
    # repeated field into a list in one call; iterating the container itself goes through the
    # sequence protocol and ends in a raised IndexError.
    out: dict[str, Json] = {}
    for member in obj.members[:]:
        value = member.value
        kind = _which_kind(value, "kind")
        out[member.key] = getattr(value, kind) if kind in _SCALAR_KINDS else encode_value(value)
    return out


def encode_array(array: json_pb2.JsonArray) -> list[Json]:
    """The JSON array."""
    return [encode_value(item) for item in array.values[:]]


class _TooDeep(Exception):
    """Unwinds a decode that went past MAX_DEPTH, so the violation is reported once, at the root."""


def _fill_value(
    value: json_pb2.JsonValue, data: object, path: str, violations: list[FieldViolation], depth: int
) -> None:
    # `bool` before `int`: True is an int to Python, but a distinct kind to JSON.
    if data is None:
        value.null_value = _NULL
    elif isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, int):
        if INT64_MIN <= data <= INT64_MAX:
            value.integer_value = data
        else:
            violations.append(FieldViolation(path, "must be an integer that fits in 64 bits"))
    elif isinstance(data, float):
        if math.isfinite(data):
            value.number_value = data
        else:
            violations.append(FieldViolation(path, "must be a finite number"))
    elif isinstance(data, str):
        if is_text(data):
            value.string_value = data
        else:
            violations.append(FieldViolation(path, MUST_BE_TEXT))
    elif isinstance(data, dict):
        value.object_value.SetInParent()
        _fill_object(value.object_value, data, path, violations, depth + 1)
    elif isinstance(data, list):
        value.array_value.SetInParent()
        _fill_array(value.array_value, data, path, violations, depth + 1)
    else:
        violations.append(FieldViolation(path, "must be a JSON value"))


def _fill_object(
    obj: json_pb2.JsonObject,
    data: dict[Any, object],
    path: str,
    violations: list[FieldViolation],
    depth: int,
) -> None:
    if depth > MAX_DEPTH:
        raise _TooDeep
    for key, item in data.items():
        if not (isinstance(key, str) and is_text(key)):
            violations.append(FieldViolation(path, "keys must be strings of valid Unicode text"))
            continue
        member = obj.members.add()
        member.key = key
        _fill_value(member.value, item, child_path(path, key), violations, depth)


def _fill_array(
    array: json_pb2.JsonArray, data: list[object], path: str, violations: list[FieldViolation], depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise _TooDeep
    for index, item in enumerate(data):
        _fill_value(array.values.add(), item, item_path(path, index), violations, depth)


def decode_value_into(
    value: json_pb2.JsonValue, data: object, path: str, violations: list[FieldViolation]
) -> None:
    """Fills a JsonValue from any JSON value."""
    try:
        _fill_value(value, data, path, violations, 0)
    except _TooDeep:
        violations.append(FieldViolation(path, NESTED_TOO_DEEPLY))


def decode_object_into(
    obj: json_pb2.JsonObject, data: object, path: str, violations: list[FieldViolation]
) -> None:
    """Fills a JsonObject from a JSON object."""
    if not isinstance(data, dict):
        violations.append(FieldViolation(path, MUST_BE_OBJECT))
        return
    try:
        _fill_object(obj, data, path, violations, 1)
    except _TooDeep:
        violations.append(FieldViolation(path, NESTED_TOO_DEEPLY))


def decode_array_into(
    array: json_pb2.JsonArray, data: object, path: str, violations: list[FieldViolation]
) -> None:
    """Fills a JsonArray from a JSON array."""
    if not isinstance(data, list):
        violations.append(FieldViolation(path, MUST_BE_ARRAY))
        return
    try:
        _fill_array(array, data, path, violations, 1)
    except _TooDeep:
        violations.append(FieldViolation(path, NESTED_TOO_DEEPLY))


# The schemas are the same both ways, and any JSON: the decoder's one rule beyond JSON (an integer must
# fit in 64 bits, while `1e30` is a float and welcome) depends on how a number is spelled, which JSON
# Schema cannot see, as `1e30` is an integer to it. So it is said in words.
def value_schema(builder: SchemaBuilder, direction: Direction) -> Schema:
    return {"description": "Any JSON value. Integers must fit in 64 bits."}


def object_schema(builder: SchemaBuilder, direction: Direction) -> Schema:
    return {
        "type": "object",
        "description": "Any JSON object, kept exactly as it was given. Integers must fit in 64 bits.",
    }


def array_schema(builder: SchemaBuilder, direction: Direction) -> Schema:
    return {"type": "array", "description": "Any JSON array. Integers must fit in 64 bits."}


JSON_VALUE = MessageShape(
    full_name=json_pb2.JsonValue.DESCRIPTOR.full_name,
    encode=encode_value,
    decode=decode_value_into,
    schema=value_schema,
    same_both_ways=True,
)
JSON_OBJECT = MessageShape(
    full_name=json_pb2.JsonObject.DESCRIPTOR.full_name,
    encode=encode_object,
    decode=decode_object_into,
    schema=object_schema,
    same_both_ways=True,
)
JSON_ARRAY = MessageShape(
    full_name=json_pb2.JsonArray.DESCRIPTOR.full_name,
    encode=encode_array,
    decode=decode_array_into,
    schema=array_schema,
    same_both_ways=True,
)
