"""resolve_target: which record a call names among the records of one handle."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.domain.errors import InvalidArgument, NotFound
from gateway.domain.targets import OrderQuery, resolve_target
from gateway.protos import order_pb2

PICK = order_pb2.ORDER_TYPE_PICK
DROP = order_pb2.ORDER_TYPE_DROP


@dataclass(frozen=True)
class Rec:
    type: int
    type_index: int
    fulfillment_attempt: int


def test_single_record_is_the_target() -> None:
    only = Rec(DROP, 0, 0)
    assert resolve_target(OrderQuery("h"), [only]) is only


def test_latest_attempt_of_the_leg_without_an_attempt() -> None:
    records = [Rec(DROP, 0, 0), Rec(DROP, 0, 2), Rec(DROP, 0, 1)]
    assert resolve_target(OrderQuery("h"), records) is records[1]


def test_given_attempt_names_an_older_record() -> None:
    records = [Rec(DROP, 0, 0), Rec(DROP, 0, 1)]
    assert resolve_target(OrderQuery("h", fulfillment_attempt=0), records) is records[0]
    assert resolve_target(OrderQuery("h", fulfillment_attempt=1), records) is records[1]


def test_filters_by_type_and_index() -> None:
    records = [Rec(PICK, 0, 0), Rec(DROP, 0, 0), Rec(DROP, 1, 0)]
    assert resolve_target(OrderQuery("h", type=PICK), records) is records[0]
    assert resolve_target(OrderQuery("h", type=DROP, type_index=1), records) is records[2]
    assert resolve_target(OrderQuery("h", type=DROP, type_index=0), records) is records[1]


def test_latest_attempt_is_per_leg() -> None:
    # The pick leg's latest attempt is 0, the drop leg's 1: both are "latest", so both match.
    records = [Rec(PICK, 0, 0), Rec(DROP, 0, 0), Rec(DROP, 0, 1)]
    assert resolve_target(OrderQuery("h", type=DROP), records) is records[2]
    assert resolve_target(OrderQuery("h", type=PICK), records) is records[0]
    with pytest.raises(InvalidArgument) as caught:
        resolve_target(OrderQuery("h"), records)
    description = caught.value.violations[0].description
    assert "pick 0 (attempt 0)" in description
    assert "drop 0 (attempt 1)" in description
    assert "drop 0 (attempt 0)" not in description


@pytest.mark.parametrize(
    "query",
    [
        OrderQuery("h", type=PICK),
        OrderQuery("h", type_index=3),
        OrderQuery("h", fulfillment_attempt=5),
        OrderQuery("h", type=DROP, type_index=0, fulfillment_attempt=1),
    ],
)
def test_no_match_is_not_found(query: OrderQuery) -> None:
    with pytest.raises(NotFound) as caught:
        resolve_target(query, [Rec(DROP, 0, 0)])
    assert caught.value.reason == "ORDER_NOT_FOUND"
    assert caught.value.metadata == {"order_handle": "h"}
    assert caught.value.message == "order 'h' not found"


def test_no_records_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        resolve_target(OrderQuery("missing"), [])
    assert caught.value.metadata == {"order_handle": "missing"}


def test_ambiguity_names_every_leg_on_field_type() -> None:
    records = [Rec(DROP, 1, 0), Rec(PICK, 0, 0), Rec(DROP, 0, 0)]
    with pytest.raises(InvalidArgument) as caught:
        resolve_target(OrderQuery("order-2"), records)
    error = caught.value
    assert error.reason == "AMBIGUOUS_ORDER"
    assert [v.field for v in error.violations] == ["type"]
    assert error.violations[0].description == (
        "order 'order-2' has 3 legs: pick 0 (attempt 0), drop 0 (attempt 0), drop 1 (attempt 0); "
        "choose one with type and type_index"
    )
    assert error.message.startswith("type: order 'order-2' has 3 legs")


def test_index_alone_stays_ambiguous_across_types() -> None:
    records = [Rec(PICK, 0, 0), Rec(DROP, 0, 0)]
    with pytest.raises(InvalidArgument):
        resolve_target(OrderQuery("h", type_index=0), records)


def test_given_attempt_with_two_legs_is_ambiguous() -> None:
    records = [Rec(PICK, 0, 0), Rec(DROP, 0, 0), Rec(DROP, 0, 1)]
    with pytest.raises(InvalidArgument) as caught:
        resolve_target(OrderQuery("h", fulfillment_attempt=0), records)
    assert "has 2 legs" in caught.value.violations[0].description
