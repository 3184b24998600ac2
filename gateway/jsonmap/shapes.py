"""The named special cases of the mapping: message types whose JSON is not the generic object of
their fields, by full name. Every other message follows the generic rules of encode.py / decode.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor

from gateway.jsonmap import geojson, jsonvalue, timeline, timestamps
from gateway.jsonmap.contracts import DecodeFn, DecoderFactory, EncodeFn, EncoderFactory
from gateway.protos import json_pb2, order_pb2


def _fixed_encoder(encode: EncodeFn) -> EncoderFactory:
    def factory(descriptor: Descriptor, resolve: Callable[[Descriptor], EncodeFn]) -> EncodeFn:
        return encode

    return factory


def _fixed_decoder(decode: Callable[[Any, object, str, Any], None]) -> DecoderFactory:
    def factory(descriptor: Descriptor, resolve: Callable[[Descriptor], DecodeFn]) -> DecodeFn:
        return decode

    return factory


_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_POINT = order_pb2.Point.DESCRIPTOR.full_name
_LINE_STRING = order_pb2.LineString.DESCRIPTOR.full_name
_JSON_OBJECT = json_pb2.JsonObject.DESCRIPTOR.full_name
_JSON_VALUE = json_pb2.JsonValue.DESCRIPTOR.full_name
_JSON_ARRAY = json_pb2.JsonArray.DESCRIPTOR.full_name
_TIMELINE_EVENT = order_pb2.TimelineEvent.DESCRIPTOR.full_name

SPECIAL_ENCODERS: Mapping[str, EncoderFactory] = MappingProxyType(
    {
        _TIMESTAMP: _fixed_encoder(timestamps.encode_timestamp),
        _POINT: _fixed_encoder(geojson.encode_point),
        _LINE_STRING: _fixed_encoder(geojson.encode_line_string),
        _JSON_OBJECT: _fixed_encoder(jsonvalue.encode_object),
        _JSON_VALUE: _fixed_encoder(jsonvalue.encode_value),
        _JSON_ARRAY: _fixed_encoder(jsonvalue.encode_array),
        _TIMELINE_EVENT: timeline.timeline_event_encoder,
    }
)

SPECIAL_DECODERS: Mapping[str, DecoderFactory] = MappingProxyType(
    {
        _TIMESTAMP: _fixed_decoder(timestamps.decode_timestamp_into),
        _POINT: _fixed_decoder(geojson.decode_point_into),
        _LINE_STRING: _fixed_decoder(geojson.decode_line_string_into),
        _JSON_OBJECT: _fixed_decoder(jsonvalue.decode_object_into),
        _JSON_VALUE: _fixed_decoder(jsonvalue.decode_value_into),
        _JSON_ARRAY: _fixed_decoder(jsonvalue.decode_array_into),
        _TIMELINE_EVENT: timeline.timeline_event_decoder,
    }
)
