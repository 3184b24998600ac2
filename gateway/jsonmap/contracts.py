"""What the generic mapping and its named special cases share: JSON values, the signatures of encode
and decode functions, and how violation paths are spelled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from gateway.domain.errors import FieldViolation

# A JSON value as `orjson.dumps` takes it and `json.loads` returns it.
Json: TypeAlias = "None | bool | int | float | str | list[Json] | dict[str, Json]"

# Turns a message into its JSON value. Typed on `Any` because each function takes the one message
# class of its descriptor, which the type system cannot relate to a runtime descriptor.
EncodeFn: TypeAlias = Callable[[Any], Json]

# Fills an empty message from a JSON value that is not None, appending what is wrong to the list,
# each violation named by its path below the given one.
DecodeFn: TypeAlias = Callable[[Any, object, str, list[FieldViolation]], None]

# A named special case gets the descriptor it is for and a way to reach the functions of other
# message types (a timeline event encodes its event message by the generic rules).
EncoderFactory: TypeAlias = Callable[[Descriptor, Callable[[Descriptor], EncodeFn]], EncodeFn]
DecoderFactory: TypeAlias = Callable[[Descriptor, Callable[[Descriptor], DecodeFn]], DecodeFn]

MUST_BE_OBJECT = "must be an object"
MUST_BE_ARRAY = "must be an array"
MUST_BE_STRING = "must be a string"
MUST_BE_TEXT = "must be valid Unicode text (no unpaired surrogates)"
UNKNOWN_FIELD = "unknown field"


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
