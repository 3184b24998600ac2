"""The decisions of the order calls: plain functions the store runs inside its transaction."""

from __future__ import annotations

from functools import partial

import pytest

from gateway.calls.orders import decide_change, decide_track, insertion_of
from gateway.domain import lifecycle
from gateway.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from gateway.domain.targets import OrderQuery
from gateway.protos import json_pb2, order_pb2, orders_service_pb2
from gateway.store.base import HandleRow, NewRecord, RecordWrite, StoredRecord

NOW_MS = 1_698_284_223_650
PICK = order_pb2.ORDER_TYPE_PICK
DROP = order_pb2.ORDER_TYPE_DROP
Status = order_pb2.OrderStatus
NO_UPDATE = json_pb2.JsonObject()


def stored(row_id: int, order: order_pb2.Order) -> StoredRecord:
    return StoredRecord(
        row_id,
        order.type,
        order.type_index,
        order.fulfillment_attempt,
        order.status,
        order.SerializeToString(),
    )


def order(
    order_type: order_pb2.OrderType = DROP,
    attempt: int = 0,
    status: order_pb2.OrderStatus = Status.ORDER_STATUS_ONGOING,
) -> order_pb2.Order:
    return order_pb2.Order(
        order_handle="h", type=order_type, fulfillment_attempt=attempt, status=status, route_handle="r"
    )


cancel = partial(decide_change, lifecycle.cancel, account_id="acme")


def test_cancel_writes_the_named_record_with_its_event() -> None:
    records = [
        stored(7, order(PICK)),
        stored(8, order(DROP, 0, Status.ORDER_STATUS_CANCELLED)),
        stored(9, order(DROP, 1)),
    ]
    decision = cancel(OrderQuery("h", DROP), NO_UPDATE, NOW_MS, records)
    assert decision.answer.status == Status.ORDER_STATUS_CANCELLED
    assert decision.answer.fulfillment_attempt == 1  # the latest attempt of the leg
    assert [e.WhichOneof("event") for e in decision.answer.timeline] == ["order_cancelled"]
    assert decision.write == RecordWrite(
        9, Status.ORDER_STATUS_CANCELLED, decision.answer.SerializeToString()
    )


def test_a_cancel_of_a_cancelled_order_writes_nothing() -> None:
    cancelled = cancel(OrderQuery("h"), NO_UPDATE, NOW_MS, [stored(1, order())]).answer
    again = cancel(OrderQuery("h"), NO_UPDATE, NOW_MS + 5, [stored(1, cancelled)])
    assert again.write is None
    assert again.answer == cancelled


@pytest.mark.parametrize(
    ("query", "records", "error"),
    [
        (OrderQuery("h"), [], NotFound),
        (OrderQuery("h"), [stored(1, order(PICK)), stored(2, order(DROP))], InvalidArgument),
        (OrderQuery("h"), [stored(1, order(status=Status.ORDER_STATUS_COMPLETED))], FailedPrecondition),
    ],
)
def test_a_refused_cancel_raises(
    query: OrderQuery, records: list[StoredRecord], error: type[Exception]
) -> None:
    with pytest.raises(error):
        cancel(query, NO_UPDATE, NOW_MS, records)


def test_track_builds_next_attempts_and_the_records_that_keep_them() -> None:
    request = orders_service_pb2.TrackOrdersRequest(
        worker_handle="w", track_mode=order_pb2.TRACK_MODE_ON_TIME
    )
    request.orders.add(order_handle="old", destination=order_pb2.Destination())
    request.orders.add(order_handle="new", type=PICK, destination=order_pb2.Destination())
    rows = [
        HandleRow("old", 0, Status.ORDER_STATUS_CANCELLED),
        HandleRow("old", 1, Status.ORDER_STATUS_COMPLETED),
    ]
    insertion = decide_track(request, NOW_MS, "route-1", lambda: "https://trck.at/x", rows)
    assert [(o.order_handle, o.fulfillment_attempt) for o in insertion.answer] == [("old", 2), ("new", 0)]
    assert insertion == insertion_of(insertion.answer)
    assert insertion.records[1] == NewRecord(
        "new", PICK, 0, 0, Status.ORDER_STATUS_ONGOING, insertion.answer[1].SerializeToString()
    )
    with pytest.raises(AlreadyExists):
        decide_track(
            request, NOW_MS, "route-1", lambda: "x", [HandleRow("new", 0, Status.ORDER_STATUS_ONGOING)]
        )
