"""The named special cases of the mapping, by message full name: types whose JSON is not the generic
object of their fields. Every other message follows the generic rules of encode.py and decode.py."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from google.protobuf import timestamp_pb2

from gateway.jsonmap import geojson, jsonvalue, timestamps
from gateway.jsonmap.contracts import DecodeFn, EncodeFn, InlineEncoder
from gateway.jsonmap.flatoneof import FlatOneof
from gateway.protos import json_pb2, order_pb2

_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_POINT = order_pb2.Point.DESCRIPTOR.full_name
_LINE_STRING = order_pb2.LineString.DESCRIPTOR.full_name
_JSON_OBJECT = json_pb2.JsonObject.DESCRIPTOR.full_name
_JSON_VALUE = json_pb2.JsonValue.DESCRIPTOR.full_name
_JSON_ARRAY = json_pb2.JsonArray.DESCRIPTOR.full_name
_TIMELINE_EVENT = order_pb2.TimelineEvent.DESCRIPTOR.full_name

# Types written by a function of their own.
SPECIAL_ENCODERS: Mapping[str, EncodeFn] = MappingProxyType(
    {
        _TIMESTAMP: timestamps.encode_timestamp,
        _POINT: geojson.encode_point,
        _LINE_STRING: geojson.encode_line_string,
        _JSON_OBJECT: jsonvalue.encode_object,
        _JSON_VALUE: jsonvalue.encode_value,
        _JSON_ARRAY: jsonvalue.encode_array,
    }
)

# Special cases that generated encoders also write inline, for speed; the same result as above.
INLINE_ENCODERS: Mapping[str, InlineEncoder] = MappingProxyType(
    {
        _TIMESTAMP: InlineEncoder(
            timestamps.encode_timestamp_statements, timestamps.ENCODE_TIMESTAMP_GLOBALS
        ),
    }
)

# Types read by a function of their own.
SPECIAL_DECODERS: Mapping[str, DecodeFn] = MappingProxyType(
    {
        _TIMESTAMP: timestamps.decode_timestamp_into,
        _POINT: geojson.decode_point_into,
        _LINE_STRING: geojson.decode_line_string_into,
        _JSON_OBJECT: jsonvalue.decode_object_into,
        _JSON_VALUE: jsonvalue.decode_value_into,
        _JSON_ARRAY: jsonvalue.decode_array_into,
    }
)

# Types whose oneof is flattened into their own object (both ways): a timeline event is
# `{"type": "order_cancelled", "recorded_at": ..., <the order_cancelled event's fields>}`.
FLATTENED_ONEOFS: Mapping[str, FlatOneof] = MappingProxyType(
    {
        _TIMELINE_EVENT: FlatOneof(oneof="event", type_key="type"),
    }
)
