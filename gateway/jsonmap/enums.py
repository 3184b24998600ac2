"""Enum values as JSON strings: the value name without the enum's prefix, in lower case.

`ORDER_STATUS_CANCELLED` of `OrderStatus` is `"cancelled"`; `TRACK_MODE_ON_TIME` of `TrackMode` is
`"on_time"`. The tables are computed once per enum from its descriptor. EnumNames is the enums' record:
the table the encoder writes from, the choices the decoders accept, and the schema of both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.jsonmap.contracts import AnyEnumDescriptor, Schema, enum_descriptor

# Word boundaries of a CamelCase name: before an upper-case letter that follows a lower-case letter or a
# digit, and before the last upper-case letter of an acronym that is followed by a lower-case one
# (`HTTPStatus` -> `HTTP_STATUS`).
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def enum_prefix(enum: AnyEnumDescriptor) -> str:
    """The prefix of the enum's value names: its name in UPPER_SNAKE case and `_`."""
    return _WORD_BOUNDARY.sub("_", enum.name).upper() + "_"


@dataclass(frozen=True, slots=True)
class EnumNames:
    """The JSON names of one enum's values, both ways."""

    # A number the enum does not declare (proto3 enums are open) has no name here; the encoder then
    # writes the number itself, as the proto3 JSON mapping does, rather than failing the response.
    by_number: dict[int, str]
    by_name: dict[str, int]

    def choices(self, *, with_zero: bool) -> list[str]:
        """The names a request may use (and violation messages list). The zero value is never
        written for an implicit field, so a request may not name it either; where it can be written
        (repeated, optional) it is a choice."""
        return [name for name, number in self.by_name.items() if with_zero or number != 0]

    def schema(self, *, with_zero: bool) -> Schema:
        """The JSON Schema of the names: what the encoder writes and the decoder accepts."""
        return {"type": "string", "enum": self.choices(with_zero=with_zero)}


def enum_names(enum: AnyEnumDescriptor) -> EnumNames:
    """The JSON names of the enum's values; ValueError if two values would get the same name."""
    enum = enum_descriptor(enum)
    prefix = enum_prefix(enum)
    by_number: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for value in enum.values:
        # A value outside the naming convention keeps its whole name rather than being cut wrongly.
        name = (value.name.removeprefix(prefix) if value.name.startswith(prefix) else value.name).lower()
        if by_name.get(name, value.number) != value.number:
            raise ValueError(f"{enum.full_name}: two values map to the JSON name {name!r}")
        by_name[name] = value.number
        # With allow_alias the first name of a number is its canonical one.
        by_number.setdefault(value.number, name)
    return EnumNames(by_number, by_name)
