"""JSON values (as `json.loads` returns them) to protobuf messages, strictly.

Everything wrong with the input is collected as field violations, each named by its path in proto
field terms (`orders[0].destination.geometry`), and raised together as one InvalidArgument, so a
caller learns every problem of a request at once. The rules mirror encode.py:

- keys are the proto field names; any other key is a violation;
- JSON `null` for a field means the field is absent;
- strings, booleans, integers (in range; `true` and `1.5` are not integers) and numbers (an integer is
  a number) must have their JSON type; enums must be one of their JSON names;
- the special shapes of shapes.py are read by their records' decoders.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.domain.errors import FieldViolation, invalid
from gateway.jsonmap.contracts import (
    MUST_BE_ARRAY,
    MUST_BE_OBJECT,
    MUST_BE_STRING,
    MUST_BE_TEXT,
    UNKNOWN_FIELD,
    AnyDescriptor,
    DecodeFn,
    MessageShape,
    child_path,
    descriptor_of,
    is_text,
    item_path,
)
from gateway.jsonmap.enums import enum_names
from gateway.jsonmap.flatoneof import FlatOneof
from gateway.jsonmap.scalars import INTEGER_RANGES, NUMBER_LIMITS
from gateway.jsonmap.shapes import FLATTENED_ONEOFS, MESSAGE_SHAPES

M = TypeVar("M", bound=Message)

INVALID_ARGUMENT = "INVALID_ARGUMENT"


class _Invalid(Exception):
    """A scalar that does not fit its field; carries the violation's description."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


# A scalar converter returns the value to store or raises _Invalid.
_Convert = Callable[[object], object]


def _string(value: object) -> object:
    if not isinstance(value, str):
        raise _Invalid(MUST_BE_STRING)
    if not is_text(value):
        raise _Invalid(MUST_BE_TEXT)
    return value


def _boolean(value: object) -> object:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _integer(low: int, high: int) -> _Convert:
    out_of_range = f"must be an integer from {low} to {high}"

    def convert(value: object) -> object:
        # bool is an int to Python, not to JSON. An integral float (`100.0`) is an integer to JSON
        # Schema, to the OpenAPI document and to proto3 JSON parsers alike, so it is one here too.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid("must be an integer")
        if not low <= value <= high:
            raise _Invalid(out_of_range)
        return value

    return convert


def _number(limit: float) -> _Convert:
    def convert(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("must be a number")
        try:
            number = float(value)
        except OverflowError:
            raise _Invalid("must be a finite number") from None
        if not (math.isfinite(number) and -limit <= number <= limit):
            raise _Invalid("must be a finite number")
        return number

    return convert


def _enum(enum: EnumDescriptor, *, with_zero: bool) -> _Convert:
    names = enum_names(enum)
    allowed = {name: names.by_name[name] for name in names.choices(with_zero=with_zero)}
    must_be = "must be one of: " + ", ".join(allowed)

    def convert(value: object) -> object:
        number = allowed.get(value) if isinstance(value, str) else None
        if number is None:
            raise _Invalid(must_be)
        return number

    return convert


def _converter(field: FieldDescriptor) -> _Convert:
    if field.enum_type is not None:
        # The zero value is never written for an implicit field, so a request may not name it either;
        # where it can be written (repeated, optional) it is accepted.
        return _enum(field.enum_type, with_zero=field.is_repeated or field.has_presence)
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _boolean
    if field.type in INTEGER_RANGES:
        return _integer(*INTEGER_RANGES[field.type])
    if field.type in NUMBER_LIMITS:
        return _number(NUMBER_LIMITS[field.type])
    raise TypeError(f"{field.full_name}: fields of type {field.type} have no JSON mapping in this gateway")


def _scalar_field(name: str, convert: _Convert) -> DecodeFn:
    def decode(message: Any, value: object, path: str, violations: list[FieldViolation]) -> None:
        try:
            setattr(message, name, convert(value))
        except _Invalid as error:
            violations.append(FieldViolation(path, error.description))

    return decode


def _repeated_scalar_field(name: str, convert: _Convert) -> DecodeFn:
    def decode(message: Any, value: object, path: str, violations: list[FieldViolation]) -> None:
        if not isinstance(value, list):
            violations.append(FieldViolation(path, MUST_BE_ARRAY))
            return
        target = getattr(message, name)
        for index, item in enumerate(value):
            try:
                target.append(convert(item))
            except _Invalid as error:
                violations.append(FieldViolation(item_path(path, index), error.description))

    return decode


def _message_field(name: str, decode_message: DecodeFn) -> DecodeFn:
    def decode(message: Any, value: object, path: str, violations: list[FieldViolation]) -> None:
        sub_message = getattr(message, name)
        # Given, even as `{}`, means set: presence must survive an empty object.
        sub_message.SetInParent()
        decode_message(sub_message, value, path, violations)

    return decode


def _repeated_message_field(name: str, decode_message: DecodeFn) -> DecodeFn:
    def decode(message: Any, value: object, path: str, violations: list[FieldViolation]) -> None:
        if not isinstance(value, list):
            violations.append(FieldViolation(path, MUST_BE_ARRAY))
            return
        target = getattr(message, name)
        for index, item in enumerate(value):
            decode_message(target.add(), item, item_path(path, index), violations)

    return decode


def _real_oneofs(descriptor: Descriptor) -> dict[str, str]:
    """Field name -> oneof name, for oneofs that are not the synthetic ones of `optional` fields."""
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    optional = {f.name for f in proto.field if f.proto3_optional}
    return {
        f.name: f.containing_oneof.name
        for f in descriptor.fields
        if f.containing_oneof is not None and f.name not in optional
    }


class _MessageDecoder:
    """The generic decoder of one message type: a table from JSON key to field decoder."""

    __slots__ = ("fields", "oneof_of")

    def __init__(self) -> None:
        self.fields: dict[str, DecodeFn] = {}
        self.oneof_of: dict[str, str] = {}

    def __call__(self, message: Any, data: object, path: str, violations: list[FieldViolation]) -> None:
        if not isinstance(data, dict):
            violations.append(FieldViolation(path, MUST_BE_OBJECT))
            return
        fields = self.fields
        given: dict[str, str] = {}  # oneof -> the member given, to refuse a second one
        for key, value in data.items():
            decode_field = fields.get(key)
            if decode_field is None:
                violations.append(FieldViolation(child_path(path, key), UNKNOWN_FIELD))
                continue
            if value is None:
                continue
            field_path = child_path(path, key)
            oneof = self.oneof_of.get(key)
            if oneof is not None and given.setdefault(oneof, key) != key:
                violations.append(
                    FieldViolation(field_path, f"must not be given together with {given[oneof]}")
                )
                continue
            decode_field(message, value, field_path, violations)


class JsonDecoder:
    """Decodes JSON values into messages, raising one InvalidArgument with every violation.

    Decoders are built per message type at first use, or ahead with `prepare`. An instance is safe to
    share between threads.
    """

    def __init__(
        self,
        shapes: Mapping[str, MessageShape] = MESSAGE_SHAPES,
        flattened: Mapping[str, FlatOneof] = FLATTENED_ONEOFS,
    ) -> None:
        self._special_cases: dict[str, DecodeFn] = {name: shape.decode for name, shape in shapes.items()}
        self._flattened = flattened
        self._decoders: dict[str, DecodeFn] = {}
        # Decoders being built: reachable for recursive types, published to _decoders when complete.
        self._building: dict[str, DecodeFn] = {}
        self._lock = threading.RLock()

    @overload
    def decode(self, message_type: type[M], data: object, *, path: str = "") -> M: ...

    @overload
    def decode(self, message_type: AnyDescriptor, data: object, *, path: str = "") -> Message: ...

    def decode(self, message_type: type[Message] | AnyDescriptor, data: object, *, path: str = "") -> Message:
        """A new message of the type from the JSON value; violations are named below `path`."""
        descriptor = descriptor_of(message_type)
        if isinstance(message_type, type):
            message = message_type()
        else:
            message = message_factory.GetMessageClass(descriptor)()
        violations: list[FieldViolation] = []
        self.decoder_for(descriptor)(message, data, path, violations)
        if violations:
            raise invalid(INVALID_ARGUMENT, violations)
        return message

    def prepare(self, *message_types: type[Message]) -> None:
        """Builds the decoders of these message types now, so that no request pays for it."""
        for message_type in message_types:
            self.decoder_for(message_type)

    def decoder_for(self, message_type: type[Message] | AnyDescriptor) -> DecodeFn:
        """The decoder of a message type, built with those it needs if not done yet."""
        descriptor = descriptor_of(message_type)
        decoder = self._decoders.get(descriptor.full_name)
        if decoder is not None:
            return decoder
        with self._lock:
            decoder = self._decoders.get(descriptor.full_name)
            if decoder is None:
                decoder = self._building.get(descriptor.full_name)
            if decoder is not None:
                return decoder
            if self._building:  # a field of a type being built: published with it
                return self._build(descriptor)
            try:
                decoder = self._build(descriptor)
                self._decoders.update(self._building)
            finally:
                self._building.clear()
            return decoder

    def _build(self, descriptor: Descriptor) -> DecodeFn:
        special = self._special_cases.get(descriptor.full_name)
        if special is not None:
            self._building[descriptor.full_name] = special
            return special
        flat = self._flattened.get(descriptor.full_name)
        if flat is not None:
            layout = flat.layout(descriptor)
            outer = self._fields_decoder(layout.fields, {})
            members = {name: self.decoder_for(member) for name, member in layout.members}
            decoder: DecodeFn = flat.decoder(outer, outer.fields, members)
            self._building[descriptor.full_name] = decoder
            return decoder
        generic = _MessageDecoder()
        # Registered before its fields are filled, so that a field of its own type finds it.
        self._building[descriptor.full_name] = generic
        self._fill(generic, descriptor.fields, _real_oneofs(descriptor))
        return generic

    def _fields_decoder(
        self, fields: tuple[FieldDescriptor, ...], oneof_of: dict[str, str]
    ) -> _MessageDecoder:
        decoder = _MessageDecoder()
        self._fill(decoder, fields, oneof_of)
        return decoder

    def _fill(
        self, decoder: _MessageDecoder, fields: Iterable[FieldDescriptor], oneof_of: dict[str, str]
    ) -> None:
        decoder.oneof_of = oneof_of
        for field in fields:
            decoder.fields[field.name] = self._field_decoder(field)

    def _field_decoder(self, field: FieldDescriptor) -> DecodeFn:
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                raise TypeError(f"{field.full_name}: map fields have no JSON mapping in this gateway")
            decode_message = self.decoder_for(field.message_type)
            if field.is_repeated:
                return _repeated_message_field(field.name, decode_message)
            return _message_field(field.name, decode_message)
        convert = _converter(field)
        if field.is_repeated:
            return _repeated_scalar_field(field.name, convert)
        return _scalar_field(field.name, convert)


_DEFAULT = JsonDecoder()


@overload
def decode(message_type: type[M], data: object, *, path: str = "") -> M: ...


@overload
def decode(message_type: AnyDescriptor, data: object, *, path: str = "") -> Message: ...


def decode(message_type: type[Message] | AnyDescriptor, data: object, *, path: str = "") -> Message:
    """A new message of the type from the JSON value, by the shared default decoder; raises
    InvalidArgument naming every violation below `path`."""
    return _DEFAULT.decode(message_type, data, path=path)


def prepare(*message_types: type[Message]) -> None:
    """Builds the default decoder's decoders of these message types now (call at start-up)."""
    _DEFAULT.prepare(*message_types)
