"""Protobuf messages to JSON values, on the hot path of every REST response.

The first time a message type is encoded, its encoder and those of every message type it reaches are
generated as straight-line Python source from the descriptors and compiled with `exec`: one statement
per field, no per-field loop or dispatch at run time. The rules of the contract:

- keys are the proto field names, in declaration order;
- a field with presence (message, `optional` scalar, oneof member) is written only when set, or as
  `null` when it carries `(json_null_when_unset) = true`; a field without presence is always written;
  an implicit enum is left out when 0 (`*_UNSPECIFIED`); repeated fields are always written as lists;
- enums are written by their JSON names (enums.py);
- the special shapes of shapes.py are written by their own encoders, or by their statements copied
  into the generated code (timestamps, where a call per timestamp would show), and messages with a
  flattened oneof by the source their record writes (flatoneof.py);
- a field whose options ask for a shape of its own (FIELD_SHAPES: `json_timestamp_micros`) is
  written by that shape instead of its message type's.

What remains at run time is mostly upb attribute access, one C call per field read; the figures are
in the README's performance section.
"""

from __future__ import annotations

import keyword
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.jsonmap.contracts import (
    AnyDescriptor,
    EncodeFn,
    FieldShape,
    InlineEncoder,
    Json,
    MessageShape,
    descriptor_of,
)
from gateway.jsonmap.enums import enum_names
from gateway.jsonmap.flatoneof import FlatOneof
from gateway.jsonmap.shapes import FIELD_SHAPES, FLATTENED_ONEOFS, MESSAGE_SHAPES, field_shape
from gateway.protos import annotations_pb2

_UNSUPPORTED_TYPES = {
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_GROUP: "group",
}


# The stubs type a generated extension as a plain FieldDescriptor, which `Extensions[]` does not take.
_NULL_WHEN_UNSET: Any = annotations_pb2.json_null_when_unset


def null_when_unset(field: FieldDescriptor) -> bool:
    """Whether the field carries `(hypertrack.orders.v1.json_null_when_unset) = true`."""
    return bool(field.GetOptions().Extensions[_NULL_WHEN_UNSET])


def _reachable(root: Descriptor, known: Mapping[str, object]) -> list[Descriptor]:
    """The message types reachable from `root` through message fields, not yet in `known`."""
    found: dict[str, Descriptor] = {}
    stack = [root]
    while stack:
        descriptor = stack.pop()
        if descriptor.full_name in found or descriptor.full_name in known:
            continue
        found[descriptor.full_name] = descriptor
        stack.extend(f.message_type for f in descriptor.fields if f.message_type is not None)
    return list(found.values())


class JsonEncoder:
    """Encodes messages as JSON values (dicts, lists, str, int, float, bool, None) for `orjson.dumps`.

    Encoders are compiled per message type at first use, or ahead with `prepare` at start-up. An
    instance is safe to share between threads; compiling takes a lock, encoding does not.
    """

    def __init__(
        self,
        shapes: Mapping[str, MessageShape] = MESSAGE_SHAPES,
        flattened: Mapping[str, FlatOneof] = FLATTENED_ONEOFS,
        field_shapes: Sequence[FieldShape] = FIELD_SHAPES,
    ) -> None:
        # Read out of the records once, here: generated encoders reach the functions as globals.
        self._special_cases: dict[str, EncodeFn] = {name: shape.encode for name, shape in shapes.items()}
        self._flattened = flattened
        self._inline: dict[str, InlineEncoder] = {
            name: shape.inline for name, shape in shapes.items() if shape.inline is not None
        }
        self._field_shapes = field_shapes
        # The globals of the generated source: encoders (`_m<N>`, `_f_<name>` of field shapes), enum
        # tables (`_e_<name>`), class methods (`_HasField_<name>`) and what inline special cases use.
        self._namespace: dict[str, object] = {"__builtins__": {"getattr": getattr}}
        for inline_encoder in self._inline.values():
            self._namespace.update(inline_encoder.globals)
        for field_shape_ in field_shapes:
            self._namespace[f"_f_{field_shape_.name}"] = field_shape_.shape.encode
            if field_shape_.shape.inline is not None:
                self._namespace.update(field_shape_.shape.inline.globals)
        self._names: dict[str, str] = {}
        self._functions: dict[str, EncodeFn] = {}
        self._by_class: dict[type[Message], EncodeFn] = {}
        self._lock = threading.Lock()

    def encode(self, message: Message) -> Json:
        """The message as a JSON value (a dict for all but the special cases such as Timestamp)."""
        try:
            function = self._by_class[type(message)]
        except KeyError:
            function = self._by_class[type(message)] = self.compile(type(message))
        return function(message)

    def encode_json(self, message: Message) -> bytes:
        """The message as UTF-8 JSON text."""
        return orjson.dumps(self.encode(message))

    def prepare(self, *message_types: type[Message]) -> None:
        """Compiles the encoders of these message types now, so that no request pays for it."""
        for message_type in message_types:
            self._by_class[message_type] = self.compile(message_type)

    def compile(self, message_type: type[Message] | AnyDescriptor) -> EncodeFn:
        """The encoder of a message type, compiled with those it needs if not done yet."""
        descriptor = descriptor_of(message_type)
        with self._lock:
            if descriptor.full_name not in self._functions:
                self._compile_reachable(descriptor)
            return self._functions[descriptor.full_name]

    def source(self, message_type: type[Message] | AnyDescriptor) -> str:
        """The generated source of a message type's encoder, for reading and debugging."""
        descriptor = descriptor_of(message_type)
        self.compile(descriptor)
        with self._lock:
            special = self._special_cases.get(descriptor.full_name)
            if special is not None:
                return f"# {descriptor.full_name}: {special.__module__}.{special.__qualname__}\n"
            return self._source(descriptor)

    def _compile_reachable(self, root: Descriptor) -> None:
        descriptors = _reachable(root, self._functions)
        for descriptor in descriptors:
            name = self._names.setdefault(descriptor.full_name, f"_m{len(self._names)}")
            special = self._special_cases.get(descriptor.full_name)
            if special is not None:
                self._namespace[name] = special
        # Generated encoders call each other through globals, looked up at call time, so the order of
        # definition does not matter and recursive message types work. Threads encoding meanwhile
        # cannot reach the new functions before they are all defined: they are listed after exec.
        source = "\n".join(self._source(d) for d in descriptors if d.full_name not in self._special_cases)
        exec(compile(source, "<gateway.jsonmap.encode>", "exec"), self._namespace)
        for descriptor in descriptors:
            function = self._namespace[self._names[descriptor.full_name]]
            self._functions[descriptor.full_name] = function  # type: ignore[assignment]

    def _source(self, descriptor: Descriptor) -> str:
        flat = self._flattened.get(descriptor.full_name)
        if flat is not None:
            return flat.encoder_source(descriptor, self)
        has = self.method(descriptor, "HasField")
        leading: list[str] = []  # unconditional entries before the first conditional one
        body: list[str] = []
        for field in descriptor.fields:
            entry, lines = self._field_code(field, "m", has)
            if entry is None:
                body.extend(lines)
            elif body:
                body.append(f"d[{field.name!r}] = {entry}")
            else:
                leading.append(f"{field.name!r}: {entry}")
        return "\n".join(
            [
                f"def {self._names[descriptor.full_name]}(m):",
                f"    # {descriptor.full_name}",
                "    d = {" + ", ".join(leading) + "}",
                *(f"    {line}" for line in body),
                "    return d",
                "",
            ]
        )

    def statements(self, fields: Iterable[FieldDescriptor], source: str, has: str) -> list[str]:
        """Statements adding the fields of the message in `source` to the existing dict `d`."""
        statements: list[str] = []
        for field in fields:
            entry, lines = self._field_code(field, source, has)
            statements += lines if entry is None else [f"d[{field.name!r}] = {entry}"]
        return statements

    def _field_code(self, field: FieldDescriptor, source: str, has: str) -> tuple[str | None, list[str]]:
        """How one field of the message in `source` is written: `(expression, [])` when it always is,
        else `(None, statements)` that add it to `d` when they should; `has` names the message class's
        HasField."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            raise TypeError(f"{field.full_name}: map fields have no JSON mapping in this gateway")
        if field.type in _UNSUPPORTED_TYPES:
            raise TypeError(
                f"{field.full_name}: {_UNSUPPORTED_TYPES[field.type]} fields have no JSON mapping"
            )
        key = repr(field.name)
        attribute = _attribute(source, field.name)
        if field.is_repeated:
            # `[:]` copies a repeated field into a list in one call; iterating the container itself
            # goes through the sequence protocol and ends in a raised IndexError.
            if field.message_type is None and field.enum_type is None:
                return f"{attribute}[:]", []
            return f"[{self._value('x', field)} for x in {attribute}[:]]", []
        if field.has_presence:
            own = field_shape(field, self._field_shapes)
            if own is not None:
                inline = own.shape.inline
            else:
                inline = self._inline.get(field.message_type.full_name) if field.message_type else None
            if inline is not None:
                setting = inline.statements(attribute, f"d[{key}]")
            else:
                setting = [f"d[{key}] = {self._value(attribute, field)}"]
            lines = [f"if {has}({source}, {key}):", *(f"    {line}" for line in setting)]
            if null_when_unset(field):
                lines += ["else:", f"    d[{key}] = None"]
            return None, lines
        if field.enum_type is not None:
            return None, [f"v = {attribute}", "if v:", f"    d[{key}] = {self._value('v', field)}"]
        return attribute, []

    def _value(self, expression: str, field: FieldDescriptor) -> str:
        """The JSON value of one value (or element) of the field."""
        own = field_shape(field, self._field_shapes)
        if own is not None:
            return f"_f_{own.name}({expression})"
        if field.message_type is not None:
            return f"{self._names[field.message_type.full_name]}({expression})"
        if field.enum_type is not None:
            # `.get(n, n)`: a number without a name is written as the number (see enums.py).
            return f"{self._enum_table(field.enum_type)}.get({expression}, {expression})"
        return expression

    def method(self, descriptor: Descriptor, method: str) -> str:
        """A global holding the method of the message class, to be called as `method(message, ...)`:
        upb resolves `message.HasField` by name on every call, which costs more than the call."""
        name = f"_{method}_{descriptor.full_name.replace('.', '_')}"
        if name not in self._namespace:
            self._namespace[name] = getattr(message_factory.GetMessageClass(descriptor), method)
        return name

    def function_name(self, descriptor: Descriptor) -> str:
        """The global naming the encoder of a message type."""
        return self._names[descriptor.full_name]

    def attribute(self, source: str, name: str) -> str:
        """Python reading field `name` of the message in variable `source`."""
        return _attribute(source, name)

    def _enum_table(self, enum: EnumDescriptor) -> str:
        name = f"_e_{enum.full_name.replace('.', '_')}"
        if name not in self._namespace:
            self._namespace[name] = enum_names(enum).by_number
        return name


def _attribute(source: str, name: str) -> str:
    """Python reading field `name` of the message in variable `source`."""
    return f"getattr({source}, {name!r})" if keyword.iskeyword(name) else f"{source}.{name}"


_DEFAULT = JsonEncoder()


def encode(message: Message) -> Json:
    """The message as a JSON value, by the shared default encoder."""
    return _DEFAULT.encode(message)


def encode_json(message: Message) -> bytes:
    """The message as UTF-8 JSON text, by the shared default encoder."""
    return orjson.dumps(_DEFAULT.encode(message))


def prepare(*message_types: type[Message]) -> None:
    """Compiles the default encoder's encoders of these message types now (call at start-up)."""
    _DEFAULT.prepare(*message_types)
