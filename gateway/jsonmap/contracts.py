"""What the generic mapping and its named special cases share: JSON values, the signatures of encode
and decode functions, and how violation paths are spelled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, cast

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from gateway.domain.errors import FieldViolation

# A JSON value as `orjson.dumps` takes it and `json.loads` returns it.
Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

# Turns a message into its JSON value. Typed on `Any` because each function takes the one message
# class of its descriptor, which the type system cannot relate to a runtime descriptor.
EncodeFn: TypeAlias = Callable[[Any], Json]

# Fills an empty message from a JSON value, appending what is wrong to the list, each violation
# named by its path below the given one. It gets None only where None is a value (a JsonValue's
# null, an element of an array): a None field is absent and never reaches it.
DecodeFn: TypeAlias = Callable[[Any, object, str, list[FieldViolation]], None]

MUST_BE_OBJECT = "must be an object"
MUST_BE_ARRAY = "must be an array"
MUST_BE_STRING = "must be a string"
MUST_BE_TEXT = "must be valid Unicode text (no unpaired surrogates)"
UNKNOWN_FIELD = "unknown field"


def descriptor_of(message_type: type[Message]) -> Descriptor:
    """The descriptor of a generated message class. (The stubs type `DESCRIPTOR` as a union with upb's
    own descriptor class, which is a `Descriptor` at run time.)"""
    return cast(Descriptor, message_type.DESCRIPTOR)


def child_path(path: str, name: object) -> str:
    """The path of a field or member below `path` (`orders[0]` + `destination`)."""
    return f"{path}.{name}" if path else str(name)


def item_path(path: str, index: int) -> str:
    """The path of an element of the repeated field at `path` (`orders` + 0)."""
    return f"{path}[{index}]"


def is_text(value: str) -> bool:
    """Whether protobuf can store the string: `json.loads` lets unpaired surrogates through (from
    `"\\ud800"`), which have no UTF-8 encoding."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
