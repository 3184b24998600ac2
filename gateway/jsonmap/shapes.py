"""The special shapes of the mapping, by message full name: types whose JSON is not the generic object
of their fields. Each is one record holding its encoder, decoder and schema (contracts.MessageShape,
flatoneof.FlatOneof); the encoder, the decoder and the OpenAPI document all read these tables. Every
other message follows the generic rules of encode.py and decode.py, and enums those of enums.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from google.protobuf.descriptor import FieldDescriptor

from gateway.jsonmap.contracts import FieldShape, MessageShape
from gateway.jsonmap.flatoneof import FlatOneof
from gateway.jsonmap.geojson import LINE_STRING, POINT
from gateway.jsonmap.jsonvalue import JSON_ARRAY, JSON_OBJECT, JSON_VALUE
from gateway.jsonmap.timestamps import TIMESTAMP, TIMESTAMP_MICROS
from gateway.protos import annotations_pb2, order_pb2

# Types written and read by functions of their own.
MESSAGE_SHAPES: Mapping[str, MessageShape] = MappingProxyType(
    {shape.full_name: shape for shape in (TIMESTAMP, POINT, LINE_STRING, JSON_OBJECT, JSON_VALUE, JSON_ARRAY)}
)

# Types whose oneof is flattened into their own object (both ways): a timeline event is
# `{"type": "order_cancelled", "recorded_at": ..., <the order_cancelled event's fields>}`.
FLATTENED_ONEOFS: Mapping[str, FlatOneof] = MappingProxyType(
    {
        order_pb2.TimelineEvent.DESCRIPTOR.full_name: FlatOneof(oneof="event", type_key="type"),
    }
)

# Shapes that a field option asks for, in place of the field's message type's own.
FIELD_SHAPES: Sequence[FieldShape] = (
    FieldShape(annotations_pb2.json_timestamp_micros, "TimestampMicros", TIMESTAMP_MICROS),
)


def field_shape(field: FieldDescriptor, shapes: Sequence[FieldShape] = FIELD_SHAPES) -> FieldShape | None:
    """The shape the field's options give it instead of its message type's own; None for most."""
    if field.message_type is None:
        return None
    options = field.GetOptions()
    for candidate in shapes:
        if candidate.shape.full_name == field.message_type.full_name and options.Extensions[candidate.option]:
            return candidate
    return None
