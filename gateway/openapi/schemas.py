"""`components.schemas`: one schema per message (per direction where they differ) and enum, built from
the message descriptors by the rules of gateway/jsonmap.

The special shapes give their own schemas (gateway/jsonmap/shapes.py: the records that also hold their
encoders and decoders), scalars are typed as jsonmap/scalars.py ranges them, enums as jsonmap/enums.py
names them, and request fields carry the domain's rules (REQUEST_FIELD_RULES of
gateway/domain/validation.py).

A response schema says what the encoder writes: a field without presence is always there
(`required`), a field with presence only when set, never `null` unless it carries
`json_null_when_unset`. A request schema says what the decoder and the domain accept: `null` means
"absent" for any field but those the domain requires. A message used in both directions is named
`<Message>` in responses and `<Message>Input` in requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.domain.validation import (
    REQUEST_FIELD_RULES,
    CountRule,
    FieldRule,
    MinimumRule,
    PresenceRule,
    RangeRule,
    TextRule,
)
from gateway.jsonmap.contracts import Direction, FieldShape, MessageShape, Schema
from gateway.jsonmap.encode import null_when_unset
from gateway.jsonmap.enums import enum_names
from gateway.jsonmap.flatoneof import FlatOneof
from gateway.jsonmap.scalars import scalar_schema
from gateway.jsonmap.shapes import FLATTENED_ONEOFS, MESSAGE_SHAPES, field_shape
from gateway.openapi.comments import Comments, described

# Any Unicode but control characters (category Cc): what TextRule checks.
_NO_CONTROL_CHARACTERS = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"


def rule_keywords(rule: FieldRule) -> Schema:
    """The JSON Schema keywords that state a rule of the domain."""
    if isinstance(rule, TextRule):
        length = {"minLength": rule.min_length} if rule.min_length else {}
        return {**length, "maxLength": rule.max_length, "pattern": _NO_CONTROL_CHARACTERS}
    if isinstance(rule, MinimumRule):
        return {"minimum": rule.minimum}
    if isinstance(rule, RangeRule):
        return {"minimum": rule.minimum, "maximum": rule.maximum}
    if isinstance(rule, CountRule):
        return {"minItems": rule.min_items, "maxItems": rule.max_items}
    if isinstance(rule, PresenceRule):
        return {}
    raise TypeError(f"no JSON Schema for the rule {rule!r}")


def nullable(schema: Schema) -> Schema:
    """The schema, or JSON `null`."""
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass
class SchemaRegistry:
    """Builds `components.schemas`; the SchemaBuilder the special shapes' schemas are given.

    Schemas are built on first reference; a name is registered before its schema is built, so that
    recursive messages refer to themselves.
    """

    comments: Comments
    response_messages: frozenset[str] = frozenset()
    schemas: dict[str, Schema] = field(default_factory=dict)
    shapes: Mapping[str, MessageShape] = field(default_factory=lambda: MESSAGE_SHAPES)
    flattened: Mapping[str, FlatOneof] = field(default_factory=lambda: FLATTENED_ONEOFS)
    _names: dict[tuple[str, Direction], str] = field(default_factory=dict)

    # --- SchemaBuilder ---------------------------------------------------------------------------

    def message_ref(self, descriptor: Descriptor, direction: Direction) -> Schema:
        shape = self.shapes.get(descriptor.full_name)
        if shape is not None and shape.same_both_ways:
            direction = Direction.RESPONSE
        key = (descriptor.full_name, direction)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self._component_name(descriptor, direction)
            self.schemas[name] = {}  # a placeholder until built, for recursive types
            self.schemas[name] = self._message_schema(descriptor, direction)
        return ref(name)

    def properties_of(
        self, fields: Iterable[FieldDescriptor], direction: Direction
    ) -> tuple[dict[str, Schema], list[str]]:
        """The JSON properties of these fields, and the names of those always written (responses) or
        needed (requests)."""
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field_descriptor in fields:
            if direction is Direction.RESPONSE:
                schema, always = self._response_property(field_descriptor)
                rule_text = ""
            else:
                schema, always = self._request_property(field_descriptor)
                rule = REQUEST_FIELD_RULES.get(field_descriptor.name)
                rule_text = rule.description if rule is not None else ""
            comment = self.comments.of(field_descriptor.full_name)
            if rule_text in comment:  # the proto comment says it already
                rule_text = ""
            properties[field_descriptor.name] = described(schema, comment, rule_text)
            if always:
                required.append(field_descriptor.name)
        return properties, required

    def component(
        self, descriptor: Descriptor, direction: Direction, schema: Schema, description: str
    ) -> Schema:
        name = self._component_name(descriptor, direction)
        self.schemas[name] = described(schema, description)
        return ref(name)

    def comment(self, full_name: str) -> str:
        return self.comments.of(full_name)

    # --- enums and parameters --------------------------------------------------------------------

    def field_shape_ref(self, own: FieldShape) -> Schema:
        """A reference to the response schema of a shape a field option asks for (`TimestampMicros`).
        Only responses differ: the decoder reads such a field as any of its message type."""
        key = (own.name, Direction.RESPONSE)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self._unique_name(own.name, own.name)
            self.schemas[name] = own.shape.schema(self, Direction.RESPONSE)
        return ref(name)

    def enum_ref(self, enum: EnumDescriptor) -> Schema:
        """An enum as the JSON names of its values without the zero one: what an implicit field writes
        and accepts (the zero value is never written, and refused in requests)."""
        key = (enum.full_name, Direction.RESPONSE)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self._unique_name(enum.name, enum.full_name)
            schema = enum_names(enum).schema(with_zero=False)
            self.schemas[name] = described(schema, self._enum_description(enum, schema["enum"]))
        return ref(name)

    def parameter_schema(self, field_descriptor: FieldDescriptor) -> Schema:
        """A path or query parameter, as gateway/rest/query.py types it: an enum never as its zero
        value, a repeated enum as a list of at least one (a comma-separated one: the parameter's
        style), a timestamp as a request's, a scalar with the domain's rule for it."""
        if field_descriptor.message_type is not None:
            return self.message_ref(field_descriptor.message_type, Direction.REQUEST)
        if field_descriptor.enum_type is not None:
            names = self.enum_ref(field_descriptor.enum_type)
            if field_descriptor.is_repeated:
                return {"type": "array", "items": names, "minItems": 1}
            return names
        rule = REQUEST_FIELD_RULES.get(field_descriptor.name)
        keywords = rule_keywords(rule) if rule is not None else {}
        return {**scalar_schema(field_descriptor), **keywords}

    # --- building --------------------------------------------------------------------------------

    def _component_name(self, descriptor: Descriptor, direction: Direction) -> str:
        """`Message`, or `MessageInput` for the request schema of a message responses use too."""
        suffix = (
            "Input"
            if direction is Direction.REQUEST and descriptor.full_name in self.response_messages
            else ""
        )
        return self._unique_name(descriptor.name + suffix, descriptor.full_name + suffix)

    def _unique_name(self, name: str, full_name: str) -> str:
        """The short name, or the full name where two packages declare the same short name."""
        return name if name not in self.schemas else full_name

    def _message_schema(self, descriptor: Descriptor, direction: Direction) -> Schema:
        shape = self.shapes.get(descriptor.full_name)
        flat = self.flattened.get(descriptor.full_name)
        if shape is not None:
            schema = shape.schema(self, direction)
        elif flat is not None:
            schema = flat.schema(descriptor, self, direction)
        else:
            schema = self._generic(descriptor, direction)
        # A special shape's own description says what its JSON is; the proto comment may describe the
        # protobuf side (google.protobuf.Timestamp's is about seconds and nanos).
        if "description" in schema:
            return schema
        return described(schema, self.comments.of(descriptor.full_name))

    def _generic(self, descriptor: Descriptor, direction: Direction) -> Schema:
        """A message as the JSON object of its fields, nothing else (the decoder refuses unknown keys,
        the encoder writes no others)."""
        properties, required = self.properties_of(descriptor.fields, direction)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema

    def _value_schema(
        self, field_descriptor: FieldDescriptor, direction: Direction, *, with_zero: bool
    ) -> Schema:
        """The schema of one value of a field (an element, for a repeated field)."""
        if field_descriptor.message_type is not None:
            if field_descriptor.message_type.GetOptions().map_entry:
                raise TypeError(
                    f"{field_descriptor.full_name}: map fields have no JSON mapping in this gateway"
                )
            own = field_shape(field_descriptor)
            if own is not None and direction is Direction.RESPONSE:
                return self.field_shape_ref(own)
            return self.message_ref(field_descriptor.message_type, direction)
        if field_descriptor.enum_type is not None:
            if with_zero:
                return enum_names(field_descriptor.enum_type).schema(with_zero=True)
            return self.enum_ref(field_descriptor.enum_type)
        return scalar_schema(field_descriptor)

    def _response_property(self, field_descriptor: FieldDescriptor) -> tuple[Schema, bool]:
        """What the encoder writes: repeated fields and fields without presence always (but an
        implicit enum is left out when zero); fields with presence when set, or as null with
        `json_null_when_unset`."""
        # An enum field with presence, or an element of a repeated one, can be written as its zero.
        with_zero = field_descriptor.has_presence or field_descriptor.is_repeated
        value = self._value_schema(field_descriptor, Direction.RESPONSE, with_zero=with_zero)
        if field_descriptor.is_repeated:
            return {"type": "array", "items": value}, True
        if field_descriptor.has_presence:
            if null_when_unset(field_descriptor):
                return nullable(value), True
            return value, False
        always = field_descriptor.enum_type is None  # an implicit enum is left out when zero
        return value, always

    def _request_property(self, field_descriptor: FieldDescriptor) -> tuple[Schema, bool]:
        """What the decoder accepts, narrowed by the domain's rules: `null` is "absent" for any
        field, except the few the domain requires."""
        with_zero = field_descriptor.has_presence or field_descriptor.is_repeated
        value = self._value_schema(field_descriptor, Direction.REQUEST, with_zero=with_zero)
        rule = REQUEST_FIELD_RULES.get(field_descriptor.name)
        keywords = rule_keywords(rule) if rule is not None else {}
        if field_descriptor.is_repeated:
            schema: Schema = {"type": "array", "items": value, **keywords}
        elif field_descriptor.message_type is None and field_descriptor.enum_type is None:
            schema = {**value, **keywords}  # a rule's minimum replaces the type's own
        else:
            schema = value
        if rule is not None and rule.required:
            return schema, True
        return nullable(schema), False

    def _enum_description(self, enum: EnumDescriptor, values: Iterable[str]) -> str:
        """The enum's comment and one line per value, since JSON Schema has no place for the latter."""
        numbers = enum_names(enum).by_name
        lines = [self.comments.of(enum.full_name)] if self.comments.of(enum.full_name) else []
        for name in values:
            comment = self.comments.of(f"{enum.full_name}.{enum.values_by_number[numbers[name]].name}")
            lines.append(f"- `{name}`: {comment}" if comment else f"- `{name}`")
        return "\n".join(lines)


def reachable(roots: Iterable[Descriptor]) -> frozenset[str]:
    """Full names of the messages reachable from `roots` through message fields."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        descriptor = stack.pop()
        if descriptor.full_name not in seen:
            seen.add(descriptor.full_name)
            stack.extend(f.message_type for f in descriptor.fields if f.message_type is not None)
    return frozenset(seen)
