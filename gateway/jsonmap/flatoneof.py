"""A message whose oneof is flattened into its own JSON object, the member named by a type key.

`TimelineEvent` keeps each event type as its own message in the oneof `event`, so that every event
has exactly its own fields; the contract flattens it: `{"type": "order_assigned", "recorded_at": ...,
"order_handle": ..., "driver_handle": ...}`. The JSON object holds the type key, then the message's
other fields, then the fields of the member that is set.

FlatOneof is the shape's one record: the source of its generated encoder, its decoder and its schema.
The generic machinery each side needs (encode.py's source writer, decode.py's field decoders, the
OpenAPI document's properties) comes in through the protocols below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.domain.errors import FieldViolation
from gateway.jsonmap.contracts import (
    MUST_BE_OBJECT,
    DecodeFn,
    Direction,
    Schema,
    SchemaBuilder,
    child_path,
)


@dataclass(frozen=True, slots=True)
class FlatLayout:
    """A checked layout: the fields outside the oneof, and the members as (name, message type)."""

    flat: FlatOneof
    fields: tuple[FieldDescriptor, ...]
    members: tuple[tuple[str, Descriptor], ...]


class SourceWriter(Protocol):
    """What encode.py offers a shape that writes its encoder as source."""

    def function_name(self, descriptor: Descriptor) -> str:
        """The global naming the encoder of a message type."""
        ...

    def method(self, descriptor: Descriptor, method: str) -> str:
        """A global holding the method of the message class, to be called as `method(message, ...)`."""
        ...

    def attribute(self, source: str, name: str) -> str:
        """Python reading field `name` of the message in variable `source`."""
        ...

    def statements(self, fields: Iterable[FieldDescriptor], source: str, has: str) -> list[str]:
        """Statements adding the fields of the message in `source` to the existing dict `d`."""
        ...


class _FlatOneofDecoder:
    """Reads the flat object: the type key picks the member; keys of the message's other fields are
    its own, every other key is the member's. Violations inside the member are named in proto terms
    (`timeline[1].order_assigned.driver_handle`), a bad or missing type by the key (`timeline[1].type`)."""

    __slots__ = ("members", "must_be", "outer", "outer_keys", "type_key")

    def __init__(
        self, type_key: str, outer: DecodeFn, outer_keys: frozenset[str], members: Mapping[str, DecodeFn]
    ) -> None:
        self.type_key = type_key
        self.outer = outer
        self.outer_keys = outer_keys
        self.members = dict(members)
        self.must_be = "must be one of: " + ", ".join(members)

    def __call__(self, message: Any, data: object, path: str, violations: list[FieldViolation]) -> None:
        if not isinstance(data, dict):
            violations.append(FieldViolation(path, MUST_BE_OBJECT))
            return
        name = data.get(self.type_key)
        outer: dict[object, object] = {}
        inner: dict[object, object] = {}
        for key, value in data.items():
            if key != self.type_key:
                (outer if key in self.outer_keys else inner)[key] = value
        self.outer(message, outer, path, violations)
        decode_member = self.members.get(name) if isinstance(name, str) else None
        if decode_member is None:
            violations.append(FieldViolation(child_path(path, self.type_key), self.must_be))
            return
        member = getattr(message, cast(str, name))
        member.SetInParent()
        decode_member(member, inner, child_path(path, name), violations)


@dataclass(frozen=True, slots=True)
class FlatOneof:
    """How one message type is flattened: its oneof `oneof`, named by the JSON key `type_key`."""

    oneof: str
    type_key: str = "type"

    def layout(self, descriptor: Descriptor) -> FlatLayout:
        """The layout of the message, after checking that flattening loses nothing: a failure here is
        a change to the protos, caught when the mapping is compiled rather than by a key that silently
        goes missing or is written twice."""
        oneof = descriptor.oneofs_by_name.get(self.oneof)
        if oneof is None:
            raise TypeError(f"{descriptor.full_name}: no oneof {self.oneof!r} to flatten")
        member_names = {member.name for member in oneof.fields}
        fields = tuple(f for f in descriptor.fields if f.name not in member_names)
        outer_keys = {self.type_key} | {f.name for f in fields}
        if self.type_key in {f.name for f in fields}:
            raise TypeError(f"{descriptor.full_name}: field {self.type_key!r} clashes with the type key")
        members: list[tuple[str, Descriptor]] = []
        for member in oneof.fields:
            if member.message_type is None:
                raise TypeError(f"{member.full_name}: a flattened oneof member must be a message")
            clash = {f.name for f in member.message_type.fields} & outer_keys
            if clash:
                raise TypeError(
                    f"{member.message_type.full_name}: fields {sorted(clash)} clash with the flat JSON"
                )
            members.append((member.name, member.message_type))
        return FlatLayout(self, fields, tuple(members))

    def encoder_source(self, descriptor: Descriptor, writer: SourceWriter) -> str:
        """The generated encoder: one function for the message and every member, so a member's fields
        go straight into the one dict, with no call, no second dict and no merge per event."""
        layout = self.layout(descriptor)
        oneof, type_key = self.oneof, self.type_key
        body = [
            f"k = {writer.method(descriptor, 'WhichOneof')}(m, {oneof!r})",
            f"d = {{}} if k is None else {{{type_key!r}: k}}",
            *writer.statements(layout.fields, "m", writer.method(descriptor, "HasField")),
        ]
        for index, (name, member) in enumerate(layout.members):
            member_has = writer.method(member, "HasField")
            body.append(f"{'if' if index == 0 else 'elif'} k == {name!r}:")
            body.append(f"    e = {writer.attribute('m', name)}")
            body += [f"    {line}" for line in writer.statements(member.fields, "e", member_has)]
        return "\n".join(
            [
                f"def {writer.function_name(descriptor)}(m):",
                f"    # {descriptor.full_name}, oneof {oneof} flattened, named by {type_key!r}",
                *(f"    {line}" for line in body),
                "    return d",
                "",
            ]
        )

    def decoder(
        self, outer: DecodeFn, outer_keys: Iterable[str], members: Mapping[str, DecodeFn]
    ) -> DecodeFn:
        """The decoder, from the decoder of the message's other fields (whose keys are `outer_keys`)
        and each member's, by member name."""
        return _FlatOneofDecoder(self.type_key, outer, frozenset(outer_keys), members)

    def schema(self, descriptor: Descriptor, builder: SchemaBuilder, direction: Direction) -> Schema:
        """One object schema per member, holding the type key (the member's name), the message's other
        fields and the member's fields; each a component named after the member's message
        (`OrderCancelledEvent`), picked by the type key."""
        layout = self.layout(descriptor)
        outer, outer_required = builder.properties_of(layout.fields, direction)
        variants: dict[str, Schema] = {}
        for member_name, member in layout.members:
            inner, inner_required = builder.properties_of(member.fields, direction)
            comment = builder.comment(f"{descriptor.full_name}.{member_name}") or builder.comment(
                member.full_name
            )
            variant = {
                "type": "object",
                "properties": {self.type_key: {"const": member_name}, **outer, **inner},
                "required": [self.type_key, *outer_required, *inner_required],
                "additionalProperties": False,
            }
            variants[member_name] = builder.component(member, direction, variant, comment)
        return {
            "oneOf": list(variants.values()),
            "discriminator": {
                "propertyName": self.type_key,
                "mapping": {key: ref["$ref"] for key, ref in variants.items()},
            },
        }
