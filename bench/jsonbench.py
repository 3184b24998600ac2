"""The JSON mapping alone: the reference order encoded four ways, timed with timeit.

- `encode_json(order)`: the product's encoder, message to JSON bytes (what every REST answer pays);
- `orjson.dumps(value)`: the same JSON value, already a dict, serialised: the floor for any mapping
  that ends in orjson;
- `json_format.MessageToJson(order)`: protobuf's own mapping with its default arguments, which is what
  the target of the issue names ("at least 8x faster than json_format.MessageToJson of the same
  message"); it indents by 2 and writes camelCase names, so it writes more than ours;
- `json_format.MessageToJson(order, indent=None, preserving_proto_field_name=True)`: the same call made
  to write the shape ours writes (compact, proto field names): the fairer comparison, shown beside it.

The reference order, the largest document of the product's demo, is what the issue times (the
ceilings of the load rows answer a seeded order instead: bench/answer.py). Each encoder is timed in
repeats of enough calls to take about `repeat_s`, and the median repeat is taken, which shrugs off
the other processes of a noisy machine better than the mean. The repeats interleave (one of each
encoder, then the next round), for the reason the load runs do: a few busy seconds of the machine
then slow every encoder alike instead of one, and the ratios the target reads stay fair.
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
    message_to_json_us: float  # default arguments: the baseline
    message_to_json_compact_us: float  # compact, proto field names: the same shape as ours
    encode_json_bytes: int
    message_to_json_bytes: int
    message_to_json_compact_bytes: int

    @property
    def speedup_over_message_to_json(self) -> float:
        return self.message_to_json_us / self.encode_json_us

    @property
    def speedup_over_compact_message_to_json(self) -> float:
        return self.message_to_json_compact_us / self.encode_json_us

    @property
    def ratio_to_orjson(self) -> float:
        return self.encode_json_us / self.orjson_us


def _message_to_json(order: Message) -> str:
    return json_format.MessageToJson(order)


def _message_to_json_compact(order: Message) -> str:
    return json_format.MessageToJson(order, indent=None, preserving_proto_field_name=True)


def _median_us_per_call(
    functions: dict[str, Callable[[], object]], repeats: int, repeat_s: float
) -> dict[str, float]:
    """Median microseconds per call of each function, their repeats interleaved round by round."""
    timers = {name: timeit.Timer(function) for name, function in functions.items()}
    numbers = {}
    for name, timer in timers.items():
        calls, took = timer.autorange()  # the smallest power of 10 * (1, 2, 5) of calls lasting >= 0.2 s
        numbers[name] = max(1, round(calls * repeat_s / took))
    seconds: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            seconds[name].append(timer.timeit(numbers[name]))
    return {name: statistics.median(seconds[name]) / numbers[name] * 1e6 for name in timers}


def time_encoders(repeats: int = 7, repeat_s: float = 0.2) -> EncodeTimes:
    order = reference_order()
    value = orjson.loads(encode_json(order))
    encode_json(order)  # the first call compiles the encoders; no timed call pays for it
    us = _median_us_per_call(
        {
            "encode_json": lambda: encode_json(order),
            "orjson": lambda: orjson.dumps(value),
            "message_to_json": lambda: _message_to_json(order),
            "message_to_json_compact": lambda: _message_to_json_compact(order),
        },
        repeats,
        repeat_s,
    )
    return EncodeTimes(
        encode_json_us=us["encode_json"],
        orjson_us=us["orjson"],
        message_to_json_us=us["message_to_json"],
        message_to_json_compact_us=us["message_to_json_compact"],
        encode_json_bytes=len(encode_json(order)),
        message_to_json_bytes=len(_message_to_json(order).encode()),
        message_to_json_compact_bytes=len(_message_to_json_compact(order).encode()),
    )
