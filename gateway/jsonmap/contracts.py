"""What the generic mapping and its named special cases share: JSON values, the signatures of encode
and decode functions, the record of a special shape (its encoder, decoder and schema together), and
how violation paths are spelled."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.domain.errors import FieldViolation

if TYPE_CHECKING:
    from google._upb._message import Descriptor as UpbDescriptor
    from google._upb._message import EnumDescriptor as UpbEnumDescriptor

# What the stubs call `SomeMessage.DESCRIPTOR` and `field.message_type`: a union with upb's own
# classes, which at run time are the `google.protobuf.descriptor` ones. The public functions take
# either, so that callers need no cast.
AnyDescriptor: TypeAlias = "Descriptor | UpbDescriptor"
AnyEnumDescriptor: TypeAlias = "EnumDescriptor | UpbEnumDescriptor"

# A JSON value as `orjson.dumps` takes it and `json.loads` returns it.
Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

# Turns a message into its JSON value. Typed on `Any` because each function takes the one message
# class of its descriptor, which the type system cannot relate to a runtime descriptor.
EncodeFn: TypeAlias = Callable[[Any], Json]

# Fills an empty message from a JSON value, appending what is wrong to the list, each violation
# named by its path below the given one. A field given as null is absent and skipped before its
# decoder is called; None still arrives as a value in its own right (the whole input, an element of
# an array, a JsonValue), where the decoder says whether it is acceptable.
DecodeFn: TypeAlias = Callable[[Any, object, str, list[FieldViolation]], None]


@dataclass(frozen=True, slots=True)
class InlineEncoder:
    """A special case's encoder as statements for generated encoders, where a call per value costs
    too much: `statements(value, target)` assigns `target` the JSON of the message that the
    expression `value` reads, using the names in `globals`."""

    statements: Callable[[str, str], list[str]]
    globals: Mapping[str, object]


# A JSON Schema (2020-12, as OpenAPI 3.1 uses it) as a JSON-ready dict.
Schema: TypeAlias = dict[str, Any]


class Direction(Enum):
    """Which side of the mapping a schema describes: what the encoder writes (a response), or what
    the decoder and the domain accept (a request)."""

    RESPONSE = "response"
    REQUEST = "request"


class SchemaBuilder(Protocol):
    """What a special shape's schema may ask of the document it is part of (gateway/openapi)."""

    def message_ref(self, descriptor: Descriptor, direction: Direction) -> Schema:
        """A reference to the schema of a message type, built if need be."""
        ...

    def properties_of(
        self, fields: Iterable[FieldDescriptor], direction: Direction
    ) -> tuple[dict[str, Schema], list[str]]:
        """The JSON properties of these fields, and the names of those always written or needed."""
        ...

    def component(
        self, descriptor: Descriptor, direction: Direction, schema: Schema, description: str
    ) -> Schema:
        """Registers `schema` as the component of `descriptor`; a reference to it."""
        ...

    def comment(self, full_name: str) -> str:
        """The proto comment of an element, or ''."""
        ...


# The JSON Schema of a special shape in one direction.
SchemaFn: TypeAlias = Callable[[SchemaBuilder, Direction], Schema]


@dataclass(frozen=True, slots=True)
class MessageShape:
    """A message type whose JSON is not the generic object of its fields, as one record: how it is
    written, how it is read, and what its JSON Schema says, so that the three cannot drift apart.

    `inline` is the encoder again as statements for generated encoders, where a call per value costs
    too much; `same_both_ways` says one schema serves requests and responses."""

    full_name: str
    encode: EncodeFn
    decode: DecodeFn
    schema: SchemaFn
    inline: InlineEncoder | None = None
    same_both_ways: bool = False


@dataclass(frozen=True, slots=True)
class FieldShape:
    """A shape a field option gives a field in place of its message type's own: a Timestamp field
    carrying `(json_timestamp_micros) = true` is written with six fractional digits. `option` is
    the extension (a boolean field option), `name` the schema component of the shape."""

    option: Any
    name: str
    shape: MessageShape


MUST_BE_OBJECT = "must be an object"
MUST_BE_ARRAY = "must be an array"
MUST_BE_STRING = "must be a string"
MUST_BE_TEXT = "must be valid Unicode text (no unpaired surrogates)"
UNKNOWN_FIELD = "unknown field"


def descriptor_of(message_type: type[Message] | AnyDescriptor) -> Descriptor:
    """The descriptor of a message class, or the descriptor itself."""
    if isinstance(message_type, type):
        return cast(Descriptor, message_type.DESCRIPTOR)
    return cast(Descriptor, message_type)


def enum_descriptor(enum: AnyEnumDescriptor) -> EnumDescriptor:
    """The enum descriptor, typed as `google.protobuf.descriptor.EnumDescriptor`."""
    return cast(EnumDescriptor, enum)


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
