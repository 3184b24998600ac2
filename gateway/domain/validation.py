"""Field checks of requests, the same for every transport. Each collects FieldViolations.

The rules a client can check up front are data (REQUEST_FIELD_RULES, by request field name): the
checks below apply them, and the OpenAPI document (gateway/openapi) states the same table.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias

from google.protobuf import timestamp_pb2

from gateway.domain.errors import FieldViolation, invalid
from gateway.domain.targets import OrderQuery
from gateway.protos import json_pb2, order_pb2

MAX_HANDLE_LENGTH = 255
MAX_TEXT_LENGTH = 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32
NESTED_TOO_DEEPLY = f"nested too deeply (at most {MAX_METADATA_DEPTH} levels of objects and arrays)"
MAX_ORDERS_PER_ROUTE = 100
INT32_MAX = 2**31 - 1
# (lowest, highest) of a Point's coordinates, in degrees.
LONGITUDE_RANGE: tuple[float, float] = (-180, 180)
LATITUDE_RANGE: tuple[float, float] = (-90, 90)
_ORDER_TYPES = frozenset(order_pb2.OrderType.values())
_TRACK_MODES = frozenset(order_pb2.TrackMode.values()) - {order_pb2.TRACK_MODE_UNSPECIFIED}


def _has_control_character(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in value)


@dataclass(frozen=True, slots=True)
class TextRule:
    """A string of `min_length` to `max_length` characters, any Unicode except control characters
    (category Cc)."""

    min_length: int
    max_length: int
    required: bool = False  # absent, null or "" is refused

    @property
    def description(self) -> str:
        length = (
            f"{self.min_length} to {self.max_length}" if self.min_length else f"At most {self.max_length}"
        )
        return f"{length} characters, no control characters."

    def check(self, field: str, value: str, violations: list[FieldViolation]) -> None:
        if not self.min_length <= len(value) <= self.max_length:
            bound = f"1 to {self.max_length}" if self.min_length == 1 else f"at most {self.max_length}"
            violations.append(FieldViolation(field, f"must be {bound} characters"))
        elif not value.isprintable() and _has_control_character(value):
            violations.append(FieldViolation(field, "must not contain control characters"))


@dataclass(frozen=True, slots=True)
class MinimumRule:
    """An integer of at least `minimum`."""

    minimum: int
    required: bool = False

    @property
    def description(self) -> str:
        return f"An integer >= {self.minimum}."

    def check(self, field: str, value: int, violations: list[FieldViolation]) -> None:
        if value < self.minimum:
            shown = "> 0" if self.minimum == 1 else f">= {self.minimum}"
            violations.append(FieldViolation(field, f"must be an integer {shown}"))


@dataclass(frozen=True, slots=True)
class RangeRule:
    """An integer from `minimum` to `maximum`."""

    minimum: int
    maximum: int
    required: bool = False

    @property
    def description(self) -> str:
        return f"An integer from {self.minimum} to {self.maximum}."

    def check(self, field: str, value: int, violations: list[FieldViolation]) -> None:
        if not self.minimum <= value <= self.maximum:
            violations.append(
                FieldViolation(field, f"must be an integer from {self.minimum} to {self.maximum}")
            )


@dataclass(frozen=True, slots=True)
class CountRule:
    """A repeated field of `min_items` to `max_items` elements, called `noun` in messages."""

    min_items: int
    max_items: int
    noun: str
    required: bool = False

    @property
    def description(self) -> str:
        return f"{self.min_items} to {self.max_items} {self.noun}."

    def check(self, field: str, count: int, violations: list[FieldViolation]) -> None:
        if not self.min_items <= count <= self.max_items:
            violations.append(
                FieldViolation(field, f"must hold {self.min_items} to {self.max_items} {self.noun}")
            )


@dataclass(frozen=True, slots=True)
class PresenceRule:
    """A field the request cannot do without: absent, null or its zero value is refused."""

    required: bool = True

    @property
    def description(self) -> str:
        return ""  # nothing beyond being required


FieldRule: TypeAlias = TextRule | MinimumRule | RangeRule | CountRule | PresenceRule

HANDLE = TextRule(1, MAX_HANDLE_LENGTH, required=True)
TEXT = TextRule(0, MAX_TEXT_LENGTH)
NON_NEGATIVE = MinimumRule(0)
POSITIVE = MinimumRule(1)
ORDERS_PER_ROUTE = CountRule(1, MAX_ORDERS_PER_ROUTE, "orders", required=True)
MAX_PAGE_SIZE = 100
PAGE_SIZE = RangeRule(1, MAX_PAGE_SIZE)

# What the domain refuses beyond the JSON shape, by request field name: every request message uses
# these names for the same thing (validate_track_request, check_query). Only what the service
# enforces belongs here, since the OpenAPI document states it and schemathesis' negative tests send
# what it forbids and expect a refusal.
REQUEST_FIELD_RULES: Mapping[str, FieldRule] = MappingProxyType(
    {
        "order_handle": HANDLE,
        "worker_handle": HANDLE,
        "device_id": TEXT,
        "ops_group_handle": TEXT,
        "address": TEXT,
        "product_type": TEXT,
        "type_index": NON_NEGATIVE,
        "fulfillment_attempt": NON_NEGATIVE,
        "expected_service_time": NON_NEGATIVE,
        "capacity_used": NON_NEGATIVE,
        "radius": POSITIVE,
        "limit": PAGE_SIZE,
        "orders": ORDERS_PER_ROUTE,
        "track_mode": PresenceRule(),
        "destination": PresenceRule(),
        "geometry": PresenceRule(),
    }
)


def check_handle(field: str, value: str, violations: list[FieldViolation]) -> None:
    """A handle: 1 to 255 characters, any Unicode except control characters."""
    HANDLE.check(field, value, violations)


def check_text(field: str, value: str, violations: list[FieldViolation]) -> None:
    """A free-text field: at most 1024 characters, no control characters."""
    TEXT.check(field, value, violations)


def check_non_negative(field: str, value: int, violations: list[FieldViolation]) -> None:
    NON_NEGATIVE.check(field, value, violations)


def check_order_type(field: str, value: int, violations: list[FieldViolation]) -> None:
    """An OrderType the proto declares: proto3 enums are open, so a peer may send any number."""
    if value not in _ORDER_TYPES:
        violations.append(FieldViolation(field, "must be pick or drop"))


def check_track_mode(field: str, value: int, violations: list[FieldViolation]) -> None:
    """A TrackMode the proto declares, other than unspecified."""
    if value == order_pb2.TRACK_MODE_UNSPECIFIED:
        violations.append(FieldViolation(field, "is required: on_time or flex"))
    elif value not in _TRACK_MODES:
        violations.append(FieldViolation(field, "must be on_time or flex"))


def check_metadata(field: str, metadata: json_pb2.JsonObject, violations: list[FieldViolation]) -> None:
    """Metadata: unique keys, finite numbers, at most 32 levels deep, at most 64 KiB."""
    if metadata.ByteSize() > MAX_METADATA_BYTES:
        violations.append(FieldViolation(field, f"must be at most {MAX_METADATA_BYTES} bytes"))
        return
    _check_object(field, metadata, violations, 1)


def _check_object(field: str, obj: json_pb2.JsonObject, violations: list[FieldViolation], depth: int) -> None:
    seen: set[str] = set()
    for member in obj.members:
        if member.key in seen:
            violations.append(FieldViolation(field, f"key {member.key!r} is given more than once"))
        seen.add(member.key)
        _check_value(f"{field}.{member.key}", member.value, violations, depth)


def _check_value(field: str, value: json_pb2.JsonValue, violations: list[FieldViolation], depth: int) -> None:
    kind = value.WhichOneof("kind")
    if kind is None:
        violations.append(FieldViolation(field, "must be a JSON value"))
    elif kind == "number_value" and not math.isfinite(value.number_value):
        violations.append(FieldViolation(field, "must be a finite number"))
    elif kind in ("object_value", "array_value") and depth >= MAX_METADATA_DEPTH:
        # The stored order nests metadata deeper still (in its order_created event), and
        # protobuf parsers refuse messages nested past 100 levels: a bound well inside it.
        violations.append(FieldViolation(field, NESTED_TOO_DEEPLY))
    elif kind == "object_value":
        _check_object(field, value.object_value, violations, depth + 1)
    elif kind == "array_value":
        for i, item in enumerate(value.array_value.values):
            _check_value(f"{field}[{i}]", item, violations, depth + 1)


# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: what an ISO 8601 timestamp can spell.
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799


def check_timestamp(field: str, stamp: timestamp_pb2.Timestamp, violations: list[FieldViolation]) -> None:
    if not (MIN_TIMESTAMP_S <= stamp.seconds <= MAX_TIMESTAMP_S and 0 <= stamp.nanos < 1_000_000_000):
        violations.append(FieldViolation(field, "must be a time from year 1 to year 9999"))


def check_point(field: str, point: order_pb2.Point, violations: list[FieldViolation]) -> None:
    for name, (low, high) in (("longitude", LONGITUDE_RANGE), ("latitude", LATITUDE_RANGE)):
        value = getattr(point, name)
        if not (math.isfinite(value) and low <= value <= high):
            violations.append(FieldViolation(f"{field}.{name}", f"must be a {name} from {low:g} to {high:g}"))


def check_query(query: OrderQuery) -> None:
    """The fields that name a record; raises InvalidArgument."""
    violations: list[FieldViolation] = []
    check_handle("order_handle", query.order_handle, violations)
    check_order_type("type", query.type, violations)
    if query.type_index is not None:
        check_non_negative("type_index", query.type_index, violations)
    if query.fulfillment_attempt is not None:
        check_non_negative("fulfillment_attempt", query.fulfillment_attempt, violations)
    if violations:
        raise invalid("INVALID_ARGUMENT", violations)
