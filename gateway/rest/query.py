"""The query string, typed into request fields by their descriptors. Strict: unknown,
repeated and malformed parameters are refused, each named in the 422 `query` detail.

Which fields the query may set (`takes_query`): scalars and enums; a repeated enum, as one
comma-separated list of its names (`value=cancelled,completed`: a parameter is given at most once);
a `google.protobuf.Timestamp`, as an RFC 3339 instant read by the JSON mapping's own parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.jsonmap.enums import enum_names
from gateway.jsonmap.scalars import INTEGER_RANGES
from gateway.jsonmap.timestamps import EXAMPLE, parse_timestamp

TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
MUST_BE_INSTANT = (
    f"must be a timestamp such as {EXAMPLE} (RFC 3339, with Z or an offset whose + is sent as %2B)"
)

# An integer in the query string: an optional minus and ASCII digits, nothing around them.
_INTEGER = re.compile(r"-?[0-9]+")
# Longer spellings are out of every range (2**64 has 20 digits); int() is spared huge inputs.
_MAX_INTEGER_CHARS = 24


def _decode(part: str) -> str:
    return unquote_to_bytes(part.replace("+", " ")).decode("utf-8")


def parse_query_string(raw: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The parameters of a raw query string, and problems keyed by parameter name."""
    params: dict[str, str] = {}
    problems: dict[str, list[str]] = {}
    for pair in raw.split("&") if raw else ():
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        try:
            name = _decode(raw_name)
        except UnicodeDecodeError:
            problems.setdefault("query", []).append("parameter names must be valid percent-encoded UTF-8")
            continue
        try:
            value = _decode(raw_value)
        except UnicodeDecodeError:
            problems.setdefault(name, []).append("must be valid percent-encoded UTF-8")
            continue
        if name in params:
            problems.setdefault(name, []).append("is given more than once")
        params[name] = value
    return params, problems


def takes_query(field: FieldDescriptor) -> bool:
    """Whether the query string can set the field (see the module)."""
    if field.message_type is not None:
        return not field.is_repeated and field.message_type.full_name == TIMESTAMP
    return not field.is_repeated or field.enum_type is not None


def _typed(field: FieldDescriptor, value: str) -> object:
    """The value of `field` that `value` spells; raises ValueError with what is expected."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None  # an enum field always has its enum
        names = enum_names(field.enum_type)
        number = names.by_name.get(value)
        if number is None or number == 0:
            raise ValueError("must be one of: " + ", ".join(names.choices(with_zero=False)))
        return number
    if field.type in INTEGER_RANGES:
        low, high = INTEGER_RANGES[field.type]
        if not _INTEGER.fullmatch(value):
            raise ValueError("must be an integer")
        if len(value) > _MAX_INTEGER_CHARS or not low <= int(value) <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return int(value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise ValueError("must be true or false")
        return value == "true"
    if field.type == FieldDescriptor.TYPE_STRING:
        return value
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be a number") from None
    raise ValueError("cannot be given in the query string")


def apply_query(
    message: Message, params: Mapping[str, str], fields: Mapping[str, FieldDescriptor]
) -> dict[str, list[str]]:
    """Set the fields the parameters name; return problems keyed by parameter name."""
    problems: dict[str, list[str]] = {}
    for name, value in params.items():
        field = fields.get(name)
        if field is None:
            allowed = ", ".join(fields) or "none"
            problems.setdefault(name, []).append(f"unknown query parameter (allowed: {allowed})")
            continue
        try:
            _apply(message, field, value)
        except ValueError as error:
            problems.setdefault(name, []).append(str(error))
    return problems


def _apply(message: Message, field: FieldDescriptor, value: str) -> None:
    """Set `field` of `message` from its parameter's text; raises ValueError with what is expected."""
    if field.message_type is not None:
        if field.message_type.full_name != TIMESTAMP or field.is_repeated:
            raise ValueError("cannot be given in the query string")
        try:
            seconds, nanos = parse_timestamp(value)
        except ValueError:
            raise ValueError(MUST_BE_INSTANT) from None
        instant = getattr(message, field.name)
        instant.seconds, instant.nanos = seconds, nanos
    elif field.is_repeated:
        if field.enum_type is None:
            raise ValueError("cannot be given in the query string")
        getattr(message, field.name).extend(_enum_list(field, value))
    else:
        setattr(message, field.name, _typed(field, value))


def _enum_list(field: FieldDescriptor, value: str) -> list[object]:
    """The values of a comma-separated list of enum names: at least one, each a declared value's
    JSON name other than the zero one."""
    assert field.enum_type is not None  # takes_query lets no other repeated field through
    items = value.split(",")
    try:
        if "" in items:
            raise ValueError("an empty item")
        return [_typed(field, item) for item in items]
    except ValueError:
        names = ", ".join(enum_names(field.enum_type).choices(with_zero=False))
        raise ValueError(f"must be one or more of {names}, separated by commas") from None
