"""The special shapes of the mapping, by message full name: types whose JSON is not the generic object
of their fields. Each is one record holding its encoder, decoder and schema (contracts.MessageShape,
flatoneof.FlatOneof); the encoder, the decoder and the OpenAPI document all read these tables. Every
other message follows the generic rules of encode.py and decode.py, and enums those of enums.py."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.jsonmap.contracts import MessageShape
from gateway.jsonmap.flatoneof import FlatOneof
from gateway.jsonmap.geojson import LINE_STRING, POINT
from gateway.jsonmap.jsonvalue import JSON_ARRAY, JSON_OBJECT, JSON_VALUE
from gateway.jsonmap.timestamps import TIMESTAMP
from gateway.protos import order_pb2

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
