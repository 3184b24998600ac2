"""The JSON mapping alone: the reference order encoded three ways, timed with timeit.

- `encode_json(order)`: the product's encoder, message to JSON bytes (what every REST answer pays);
- `orjson.dumps(value)`: the same JSON value, already a dict, serialised: the floor for any mapping
  that ends in orjson;
- `json_format.MessageToJson(order, ...)`: protobuf's own mapping, the usual way to do it; compact
  and with the proto field names, so that it writes about what ours does (its default indentation
  and camelCase would only make it slower and the ratio look better).

Each is timed in repeats of enough calls to take about `repeat_s`, and the median repeat is taken,
which shrugs off the other processes of a noisy machine better than the mean.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway.demo import reference_order
from gateway.jsonmap import encode_json


@dataclass(frozen=True)
class EncodeTimes:
    """Median microseconds per call of each encoder, and the size of what each writes."""

    encode_json_us: float
    orjson_us: float
    message_to_json_us: float
    encode_json_bytes: int
    message_to_json_bytes: int

    @property
    def speedup_over_message_to_json(self) -> float:
        return self.message_to_json_us / self.encode_json_us

    @property
    def ratio_to_orjson(self) -> float:
        return self.encode_json_us / self.orjson_us


def _message_to_json(order: Message) -> str:
    return json_format.MessageToJson(order, indent=None, preserving_proto_field_name=True)


def _median_us_per_call(function: Callable[[], object], repeats: int, repeat_s: float) -> float:
    timer = timeit.Timer(function)
    calls, took = timer.autorange()  # the smallest power of 10 * (1, 2, 5) of calls lasting >= 0.2 s
    number = max(1, round(calls * repeat_s / took))
    return statistics.median(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def time_encoders(repeats: int = 7, repeat_s: float = 0.2) -> EncodeTimes:
    order = reference_order()
    value = orjson.loads(encode_json(order))
    encode_json(order)  # the first call compiles the encoders; no timed call pays for it
    return EncodeTimes(
        encode_json_us=_median_us_per_call(lambda: encode_json(order), repeats, repeat_s),
        orjson_us=_median_us_per_call(lambda: orjson.dumps(value), repeats, repeat_s),
        message_to_json_us=_median_us_per_call(lambda: _message_to_json(order), repeats, repeat_s),
        encode_json_bytes=len(encode_json(order)),
        message_to_json_bytes=len(_message_to_json(order).encode()),
    )
