"""Scalar fields in JSON: the range of each integer type and the limit of each number type, as every
reader of outside input checks them (decode.py, the REST query string) and as the OpenAPI document
states them. Strings and booleans are JSON's own; bytes and groups have no mapping here."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType

from google.protobuf.descriptor import FieldDescriptor

from gateway.jsonmap.contracts import Schema

FLOAT32_MAX = 3.4028234663852886e38

# (lowest, highest) of each integer field type.
INTEGER_RANGES: Mapping[int, tuple[int, int]] = MappingProxyType(
    {
        FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
        FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
        FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
        FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
        FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
        FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
        FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
        FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
        FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
        FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    }
)
# The largest magnitude of each number field type: beyond it a value is not finite once stored.
NUMBER_LIMITS: Mapping[int, float] = MappingProxyType(
    {
        FieldDescriptor.TYPE_DOUBLE: sys.float_info.max,
        FieldDescriptor.TYPE_FLOAT: FLOAT32_MAX,
    }
)
_NUMBER_FORMATS = {FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float"}


def integer_format(low: int, high: int) -> str | None:
    """OpenAPI's format of an integer range: the smallest of int32 and int64 that holds it, or none
    (JSON Schema integers are unbounded; `format: int64` would understate uint64)."""
    for name, bits in (("int32", 32), ("int64", 64)):
        if -(2 ** (bits - 1)) <= low and high < 2 ** (bits - 1):
            return name
    return None


def scalar_schema(field: FieldDescriptor) -> Schema:
    """The JSON Schema of one value of a scalar (not enum) field, as the encoder writes it and the
    decoder reads it."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return {"type": "string"}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in INTEGER_RANGES:
        low, high = INTEGER_RANGES[kind]
        form = integer_format(low, high)
        return {"type": "integer", **({"format": form} if form else {}), "minimum": low, "maximum": high}
    if kind in _NUMBER_FORMATS:
        return {"type": "number", "format": _NUMBER_FORMATS[kind]}
    raise TypeError(f"{field.full_name}: fields of type {kind} have no JSON mapping in this gateway")
