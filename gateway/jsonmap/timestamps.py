"""`google.protobuf.Timestamp` as contract text: UTC, ISO 8601, exactly three fractional digits and `Z`;
or six, for fields that carry `(json_timestamp_micros) = true` (the order events' times).

Formatting sits on the hot path of every response (an order carries many timestamps), so it avoids
`datetime` and `time.gmtime`, which cost more than the rest of the formatting, in favour of integer
arithmetic, lookup tables of zero-padded digits and a small cache of the date and hour, which repeat
across an order.
Parsing is for request bodies only and favours strictness over speed.
"""

from __future__ import annotations

import datetime
import re
from typing import NoReturn

from google.protobuf import timestamp_pb2

from gateway.domain.errors import FieldViolation
from gateway.domain.validation import MAX_TIMESTAMP_S, MIN_TIMESTAMP_S
from gateway.jsonmap.contracts import (
    Direction,
    InlineEncoder,
    MessageShape,
    Schema,
    SchemaBuilder,
)

# The range google.protobuf.Timestamp allows, and the domain's: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59Z.
MIN_SECONDS = MIN_TIMESTAMP_S
MAX_SECONDS = MAX_TIMESTAMP_S
NANOS_PER_SECOND = 1_000_000_000
_SECONDS_PER_DAY = 86_400
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

EXAMPLE = "2023-10-26T02:30:00.000Z"

# Zero-padded pieces, so that formatting is two lookups and one concatenation.
_MINUTES_SECONDS = tuple(f"{minute:02d}:{second:02d}" for minute in range(60) for second in range(60))
_MILLIS = tuple(f".{milli:03d}Z" for milli in range(1000))

# RFC 3339 `date-time`: a full date, `T`, a full time with an optional fraction of up to nanosecond
# precision, and `Z` or a numeric offset. `[0-9]`, not `\d`, which is any Unicode digit to Python: the
# same pattern is the request schema's, for ECMA-262 and Python regex engines alike.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
# What format_timestamp and format_timestamp_micros write, as JSON Schema patterns.
_CONTRACT_TEXT = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"
_CONTRACT_TEXT_MICROS = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$"
EXAMPLE_MICROS = "2023-10-26T02:30:00.000000Z"


# `YYYY-MM-DDTHH:` by hour since the epoch. The timestamps of one order, and of the orders of a day,
# share few hours, and computing the date is the slow part of formatting. A plain dict read inline
# (`.get(...) or _hour_prefix(...)`) is cheaper than an lru_cache hit; it is bounded by clearing.
_HOUR_PREFIXES: dict[int, str] = {}
_MAX_CACHED_HOURS = 8192


def _hour_prefix(hours: int) -> str:
    """`YYYY-MM-DDTHH:` of an hour counted from 1970-01-01T00Z, remembered."""
    date = datetime.date.fromordinal(hours // 24 + _EPOCH_ORDINAL)
    # Not strftime: its `%Y` does not pad years before 1000 on every platform.
    prefix = f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{hours % 24:02d}:"
    if len(_HOUR_PREFIXES) >= _MAX_CACHED_HOURS:
        _HOUR_PREFIXES.clear()
    _HOUR_PREFIXES[hours] = prefix
    return prefix


def _out_of_range(seconds: int, nanos: int) -> NoReturn:
    raise ValueError(f"timestamp out of range: seconds={seconds}, nanos={nanos}")


def format_timestamp(seconds: int, nanos: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`; sub-millisecond digits are truncated, never rounded up."""
    if not (MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos < NANOS_PER_SECOND):
        _out_of_range(seconds, nanos)
    # Floor division and modulo also give the right hour and minute:second before 1970.
    hours = seconds // 3600
    prefix = _HOUR_PREFIXES.get(hours) or _hour_prefix(hours)
    return prefix + _MINUTES_SECONDS[seconds % 3600] + _MILLIS[nanos // 1_000_000]


def encode_timestamp(timestamp: timestamp_pb2.Timestamp) -> str:
    """The contract text of a Timestamp message."""
    # format_timestamp inlined: this runs for every timestamp of every response, and the call would
    # be a noticeable part of it.
    seconds = timestamp.seconds
    nanos = timestamp.nanos
    if not (MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos < NANOS_PER_SECOND):
        _out_of_range(seconds, nanos)
    hours = seconds // 3600
    prefix = _HOUR_PREFIXES.get(hours) or _hour_prefix(hours)
    return prefix + _MINUTES_SECONDS[seconds % 3600] + _MILLIS[nanos // 1_000_000]


def encode_timestamp_statements(value: str, target: str) -> list[str]:
    """encode_timestamp as statements for generated encoders (encode.py), which assign `target` the
    text of the Timestamp that the expression `value` reads: timestamps are a large part of the time
    it takes to encode an order, and a call a large part of each. Names: ENCODE_TIMESTAMP_GLOBALS."""
    return [
        f"t = {value}",
        "s = t.seconds",
        "n = t.nanos",
        f"if not ({MIN_SECONDS} <= s <= {MAX_SECONDS} and 0 <= n < {NANOS_PER_SECOND}):",
        "    _ts_out_of_range(s, n)",
        f"{target} = (_ts_hours.get(s // 3600) or _ts_hour(s // 3600)) + _ts_mmss[s % 3600] + _ts_millis[n // 1000000]",
    ]


ENCODE_TIMESTAMP_GLOBALS: dict[str, object] = {
    "_ts_hours": _HOUR_PREFIXES,
    "_ts_hour": _hour_prefix,
    "_ts_mmss": _MINUTES_SECONDS,
    "_ts_millis": _MILLIS,
    "_ts_out_of_range": _out_of_range,
}


def _micros(nanos: int) -> str:
    """`.uuuuuuZ` of the nanoseconds; sub-microsecond digits truncated."""
    # No table here: a million strings would cost more memory than these rarer timestamps save.
    return f".{nanos // 1_000:06d}Z"


def format_timestamp_micros(seconds: int, nanos: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.uuuuuuZ`; sub-microsecond digits are truncated, never rounded up."""
    if not (MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos < NANOS_PER_SECOND):
        _out_of_range(seconds, nanos)
    hours = seconds // 3600
    prefix = _HOUR_PREFIXES.get(hours) or _hour_prefix(hours)
    return prefix + _MINUTES_SECONDS[seconds % 3600] + _micros(nanos)


def encode_timestamp_micros(timestamp: timestamp_pb2.Timestamp) -> str:
    """The contract text of a Timestamp message, with six fractional digits."""
    return format_timestamp_micros(timestamp.seconds, timestamp.nanos)


def encode_timestamp_micros_statements(value: str, target: str) -> list[str]:
    """encode_timestamp_micros as statements for generated encoders, as encode_timestamp_statements
    (the hour cache and the range check are the same). Names: ENCODE_TIMESTAMP_MICROS_GLOBALS."""
    return [
        f"t = {value}",
        "s = t.seconds",
        "n = t.nanos",
        f"if not ({MIN_SECONDS} <= s <= {MAX_SECONDS} and 0 <= n < {NANOS_PER_SECOND}):",
        "    _ts_out_of_range(s, n)",
        f"{target} = (_ts_hours.get(s // 3600) or _ts_hour(s // 3600)) + _ts_mmss[s % 3600] + _ts_micros(n)",
    ]


ENCODE_TIMESTAMP_MICROS_GLOBALS: dict[str, object] = {
    "_ts_hours": _HOUR_PREFIXES,
    "_ts_hour": _hour_prefix,
    "_ts_mmss": _MINUTES_SECONDS,
    "_ts_micros": _micros,
    "_ts_out_of_range": _out_of_range,
}


def parse_timestamp(text: str) -> tuple[int, int]:
    """`(seconds, nanos)` since the epoch, in UTC, of an RFC 3339 date-time; ValueError otherwise."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10)
    try:
        # date() checks the calendar: month lengths, leap years, no year 0.
        days = datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError as error:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time: {error}") from None
    # Leap seconds (:60) have no Timestamp.
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time: time of day out of range")
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise ValueError(f"{text!r} is not an RFC 3339 date-time: offset out of range")
        offset = (int(offset_hours) * 3600 + int(offset_minutes) * 60) * (-1 if sign == "-" else 1)
    seconds = days * _SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time: outside the years 0001 to 9999 in UTC")
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return seconds, nanos


MUST_BE_TIMESTAMP = f"must be a timestamp such as {EXAMPLE} (RFC 3339, with Z or an offset)"


def decode_timestamp_into(
    timestamp: timestamp_pb2.Timestamp, data: object, path: str, violations: list[FieldViolation]
) -> None:
    """Fills a Timestamp from its text."""
    if isinstance(data, str):
        try:
            timestamp.seconds, timestamp.nanos = parse_timestamp(data)
        except ValueError:
            pass
        else:
            return
    violations.append(FieldViolation(path, MUST_BE_TIMESTAMP))


def timestamp_schema(builder: SchemaBuilder, direction: Direction) -> Schema:
    """What encode_timestamp writes, or what decode_timestamp_into reads."""
    if direction is Direction.RESPONSE:
        return {
            "type": "string",
            "format": "date-time",
            "pattern": _CONTRACT_TEXT,
            "examples": [EXAMPLE],
            "description": "UTC, ISO 8601, with exactly three fractional digits and `Z`.",
        }
    return {
        "type": "string",
        "format": "date-time",
        "pattern": f"^{_RFC3339.pattern}$",
        "examples": [EXAMPLE],
        "description": "RFC 3339, with `Z` or an offset, within the years 0001 to 9999 in UTC.",
    }


def timestamp_micros_schema(builder: SchemaBuilder, direction: Direction) -> Schema:
    """What encode_timestamp_micros writes; requests read it as any timestamp."""
    if direction is Direction.RESPONSE:
        return {
            "type": "string",
            "format": "date-time",
            "pattern": _CONTRACT_TEXT_MICROS,
            "examples": [EXAMPLE_MICROS],
            "description": "UTC, ISO 8601, with exactly six fractional digits and `Z`.",
        }
    return timestamp_schema(builder, direction)


TIMESTAMP = MessageShape(
    full_name=timestamp_pb2.Timestamp.DESCRIPTOR.full_name,
    encode=encode_timestamp,
    decode=decode_timestamp_into,
    schema=timestamp_schema,
    inline=InlineEncoder(encode_timestamp_statements, ENCODE_TIMESTAMP_GLOBALS),
)

TIMESTAMP_MICROS = MessageShape(
    full_name=timestamp_pb2.Timestamp.DESCRIPTOR.full_name,
    encode=encode_timestamp_micros,
    decode=decode_timestamp_into,
    schema=timestamp_micros_schema,
    inline=InlineEncoder(encode_timestamp_micros_statements, ENCODE_TIMESTAMP_MICROS_GLOBALS),
)
"""A Timestamp field that carries `(json_timestamp_micros) = true`: its shape in place of TIMESTAMP."""
