"""`Point` and `LineString` as GeoJSON geometries.

A Point is `{"type": "Point", "coordinates": [longitude, latitude]}`; a LineString of tracked positions
is `{"type": "LineString", "coordinates": [[longitude, latitude, altitude, "<recorded_at>"], ...]}`.
Ranges (a latitude within -90..90) are a rule of the domain, checked there; this module checks shape,
and its request schema states the domain's ranges.
"""

from __future__ import annotations

import math

from google.protobuf import timestamp_pb2

from gateway.domain.errors import FieldViolation
from gateway.domain.validation import LATITUDE_RANGE, LONGITUDE_RANGE
from gateway.jsonmap.contracts import (
    UNKNOWN_FIELD,
    Direction,
    Json,
    MessageShape,
    Schema,
    SchemaBuilder,
    child_path,
    item_path,
)
from gateway.jsonmap.timestamps import decode_timestamp_into, encode_timestamp
from gateway.protos import order_pb2

_MEMBERS = frozenset({"type", "coordinates"})
# The class's method, called as `_point_has_field(point, name)`: upb resolves `point.HasField` by
# name on every call, which costs more than the call itself.
_point_has_field = order_pb2.PolylinePoint.HasField

POINT_SHAPE = 'must be a GeoJSON Point: {"type": "Point", "coordinates": [longitude, latitude]}'
POINT_TYPE = 'must have "type": "Point"'
POINT_COORDINATES = "coordinates must be [longitude, latitude], two finite numbers"
LINE_SHAPE = 'must be a GeoJSON LineString: {"type": "LineString", "coordinates": [...]}'
LINE_TYPE = 'must have "type": "LineString"'
LINE_COORDINATES = 'coordinates must be an array of [longitude, latitude, altitude, "<timestamp>"]'
POSITION = 'must be [longitude, latitude, altitude, "<timestamp>"], three finite numbers and a timestamp'


def encode_point(point: order_pb2.Point) -> dict[str, Json]:
    """The GeoJSON Point."""
    return {"type": "Point", "coordinates": [point.longitude, point.latitude]}


def encode_line_string(line: order_pb2.LineString) -> dict[str, Json]:
    """The GeoJSON LineString; a position without a time has `null` in its place."""
    return {
        "type": "LineString",
        "coordinates": [
            [
                p.longitude,
                p.latitude,
                p.altitude,
                encode_timestamp(p.recorded_at) if _point_has_field(p, "recorded_at") else None,
            ]
            for p in line.points[:]  # one call, rather than iterating the container
        ],
    }


def _finite_numbers(values: object, count: int) -> list[float] | None:
    """The values as floats when they are an array of `count` finite JSON numbers, else None."""
    if not isinstance(values, list) or len(values) != count:
        return None
    numbers: list[float] = []
    for value in values:
        # bool is an int to Python but not a number to JSON; huge ints overflow float().
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        try:
            number = float(value)
        except OverflowError:
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    return numbers


def decode_point_into(
    point: order_pb2.Point, data: object, path: str, violations: list[FieldViolation]
) -> None:
    """Fills a Point from a GeoJSON Point."""
    if not isinstance(data, dict):
        violations.append(FieldViolation(path, POINT_SHAPE))
        return
    violations.extend(
        FieldViolation(child_path(path, key), UNKNOWN_FIELD) for key in data if key not in _MEMBERS
    )
    if data.get("type") != "Point":
        violations.append(FieldViolation(path, POINT_TYPE))
    coordinates = data.get("coordinates")
    numbers = _finite_numbers(coordinates, 2)
    if numbers is None:
        violations.append(FieldViolation(path, POINT_COORDINATES))
        return
    point.longitude, point.latitude = numbers


def decode_line_string_into(
    line: order_pb2.LineString, data: object, path: str, violations: list[FieldViolation]
) -> None:
    """Fills a LineString from a GeoJSON LineString; a position's problems are named by its index
    (`polyline.points[2]`)."""
    if not isinstance(data, dict):
        violations.append(FieldViolation(path, LINE_SHAPE))
        return
    violations.extend(
        FieldViolation(child_path(path, key), UNKNOWN_FIELD) for key in data if key not in _MEMBERS
    )
    if data.get("type") != "LineString":
        violations.append(FieldViolation(path, LINE_TYPE))
    coordinates = data.get("coordinates")
    if not isinstance(coordinates, list):
        violations.append(FieldViolation(path, LINE_COORDINATES))
        return
    points_path = child_path(path, "points")
    for index, position in enumerate(coordinates):
        position_path = item_path(points_path, index)
        # A position is three numbers and a time: split it so the numbers are checked as one array.
        numbers, recorded_at = None, None
        if isinstance(position, list) and len(position) == 4:
            numbers, recorded_at = _finite_numbers(position[:3], 3), position[3]
        if numbers is None:
            violations.append(FieldViolation(position_path, POSITION))
            continue
        point = line.points.add()
        point.longitude, point.latitude, point.altitude = numbers
        # null is "no time", as for any field; the encoder writes an unset time that way.
        if recorded_at is not None:
            decode_timestamp_into(
                point.recorded_at, recorded_at, child_path(position_path, "recorded_at"), violations
            )


def _geometry_schema(kind: str, coordinates: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {"type": {"const": kind}, "coordinates": coordinates},
        "required": ["type", "coordinates"],
        "additionalProperties": False,
    }


def _number(bounds: tuple[float, float] | None = None) -> Schema:
    schema: Schema = {"type": "number"}
    if bounds is not None:
        schema.update(minimum=bounds[0], maximum=bounds[1])
    return schema


def _tuple(items: list[Schema]) -> Schema:
    """A JSON array of exactly these items."""
    return {
        "type": "array",
        "prefixItems": items,
        "items": False,
        "minItems": len(items),
        "maxItems": len(items),
    }


def point_schema(builder: SchemaBuilder, direction: Direction) -> Schema:
    """`{"type": "Point", "coordinates": [longitude, latitude]}`. Requests are held to the ranges the
    domain checks (check_point); responses show stored positions as they are."""
    if direction is Direction.REQUEST:
        items = [_number(LONGITUDE_RANGE), _number(LATITUDE_RANGE)]
    else:
        items = [_number(), _number()]
    return _geometry_schema("Point", _tuple(items))


def line_string_schema(builder: SchemaBuilder, direction: Direction) -> Schema:
    """`{"type": "LineString", "coordinates": [[longitude, latitude, altitude, "<timestamp>"], ...]}`;
    a position without a time has `null` in its place."""
    timestamp = builder.message_ref(timestamp_pb2.Timestamp.DESCRIPTOR, direction)
    time = {"anyOf": [timestamp, {"type": "null"}]}
    return _geometry_schema(
        "LineString", {"type": "array", "items": _tuple([_number(), _number(), _number(), time])}
    )


POINT = MessageShape(
    full_name=order_pb2.Point.DESCRIPTOR.full_name,
    encode=encode_point,
    decode=decode_point_into,
    schema=point_schema,
)
LINE_STRING = MessageShape(
    full_name=order_pb2.LineString.DESCRIPTOR.full_name,
    encode=encode_line_string,
    decode=decode_line_string_into,
    schema=line_string_schema,
)
