"""Protobuf messages to JSON values, on the hot path of every REST response.

The first time a message type is encoded, its encoder and those of every message type it reaches are
generated as straight-line Python source from the descriptors and compiled with `exec`: one statement
per field, no per-field loop or dispatch at run time. The rules of the contract:

- keys are the proto field names, in declaration order;
- a field with presence (message, `optional` scalar, oneof member) is written only when set, or as
  `null` when it carries `(json_null_when_unset) = true`; a field without presence is always written;
  an implicit enum is left out when 0 (`*_UNSPECIFIED`); repeated fields are always written as lists;
- enums are written by their JSON names (enums.py);
- the message types of shapes.py are written by their own functions.
"""

from __future__ import annotations

import keyword
import threading
from collections.abc import Mapping

import orjson
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.jsonmap.contracts import EncodeFn, EncoderFactory, Json
from gateway.jsonmap.enums import enum_names
from gateway.jsonmap.shapes import SPECIAL_ENCODERS
from gateway.protos import annotations_pb2

_UNSUPPORTED_TYPES = {
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_GROUP: "group",
}


def null_when_unset(field: FieldDescriptor) -> bool:
    """Whether the field carries `(hypertrack.orders.v1.json_null_when_unset) = true`."""
    return bool(field.GetOptions().Extensions[annotations_pb2.json_null_when_unset])


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

    def __init__(self, special_cases: Mapping[str, EncoderFactory] = SPECIAL_ENCODERS) -> None:
        self._special_cases = special_cases
        # The globals of the generated source: encoders (`_m<N>`) and enum tables (`_e<N>`).
        self._namespace: dict[str, object] = {"__builtins__": {"getattr": getattr, "list": list}}
        self._names: dict[str, str] = {}
        self._functions: dict[str, EncodeFn] = {}
        self._by_class: dict[type[Message], EncodeFn] = {}
        self._lock = threading.RLock()

    def encode(self, message: Message) -> Json:
        """The message as a JSON value (a dict for all but the special cases such as Timestamp)."""
        try:
            function = self._by_class[type(message)]
        except KeyError:
            function = self._by_class[type(message)] = self.compile(message.DESCRIPTOR)
        return function(message)

    def encode_json(self, message: Message) -> bytes:
        """The message as UTF-8 JSON text."""
        return orjson.dumps(self.encode(message))

    def prepare(self, *message_types: type[Message]) -> None:
        """Compiles the encoders of these message types now, so that no request pays for it."""
        for message_type in message_types:
            self._by_class[message_type] = self.compile(message_type.DESCRIPTOR)

    def compile(self, descriptor: Descriptor) -> EncodeFn:
        """The encoder of a message type, compiled together with those it needs if not done yet."""
        with self._lock:
            function = self._functions.get(descriptor.full_name)
            if function is None:
                self._compile_reachable(descriptor)
                function = self._functions[descriptor.full_name]
            return function

    def source(self, descriptor: Descriptor) -> str:
        """The generated source of a generic message type's encoder (for reading and debugging)."""
        with self._lock:
            self.compile(descriptor)
            return self._source(descriptor)

    def _compile_reachable(self, root: Descriptor) -> None:
        descriptors = _reachable(root, self._functions)
        for descriptor in descriptors:
            self._names[descriptor.full_name] = f"_m{len(self._names)}"
        generic = [d for d in descriptors if d.full_name not in self._special_cases]
        special = [d for d in descriptors if d.full_name in self._special_cases]
        # Generated functions call each other through globals, looked up at call time, so the order
        # of definition does not matter and recursive message types work.
        code = compile("\n\n".join(self._source(d) for d in generic), "<gateway.jsonmap.encode>", "exec")
        exec(code, self._namespace)
        for descriptor in generic:
            function = self._namespace[self._names[descriptor.full_name]]
            self._functions[descriptor.full_name] = function  # type: ignore[assignment]
        for descriptor in special:
            function = self._special_cases[descriptor.full_name](descriptor, self.compile)
            self._namespace[self._names[descriptor.full_name]] = function
            self._functions[descriptor.full_name] = function

    def _enum_table(self, enum: EnumDescriptor) -> str:
        name = f"_e_{enum.full_name.replace('.', '_')}"
        if name not in self._namespace:
            self._namespace[name] = enum_names(enum).by_number
        return name

    def _source(self, descriptor: Descriptor) -> str:
        leading: list[str] = []  # unconditional entries before the first conditional one
        body: list[str] = []
        for field in descriptor.fields:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                raise TypeError(f"{field.full_name}: map fields have no JSON mapping in this gateway")
            if field.type in _UNSUPPORTED_TYPES:
                raise TypeError(f"{field.full_name}: {_UNSUPPORTED_TYPES[field.type]} fields have no JSON mapping")
            key = repr(field.name)
            attribute = (
                f"getattr(m, {field.name!r})" if keyword.iskeyword(field.name) else f"m.{field.name}"
            )
            if field.is_repeated:
                entry = f"[{self._value('x', field)} for x in {attribute}]"
                if field.message_type is None and field.enum_type is None:
                    entry = f"list({attribute})"
            elif field.has_presence:
                body.append(f"if m.HasField({key}):")
                body.append(f"    d[{key}] = {self._value(attribute, field)}")
                if null_when_unset(field):
                    body.append("else:")
                    body.append(f"    d[{key}] = None")
                continue
            elif field.enum_type is not None:
                body.append(f"v = {attribute}")
                body.append("if v:")
                body.append(f"    d[{key}] = {self._value('v', field)}")
                continue
            else:
                entry = attribute
            if body:
                body.append(f"d[{key}] = {entry}")
            else:
                leading.append(f"{key}: {entry}")
        lines = [
            f"def {self._names[descriptor.full_name]}(m):",
            f"    # {descriptor.full_name}",
            "    d = {" + ", ".join(leading) + "}",
            *(f"    {line}" for line in body),
            "    return d",
        ]
        return "\n".join(lines) + "\n"

    def _value(self, expression: str, field: FieldDescriptor) -> str:
        """The JSON value of one (non-repeated or element) value of the field."""
        if field.message_type is not None:
            return f"{self._names[field.message_type.full_name]}({expression})"
        if field.enum_type is not None:
            return f"{self._enum_table(field.enum_type)}[{expression}]"
        return expression


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
