"""The order calls, each read top to bottom: validate the request, name the record, decide, answer.

The decision is a plain function of the domain rules (which record, which transition, which event)
that the store runs inside its transaction, on the records it has just read and locked; the store
writes what the decision asks for, or nothing, and answers once that is committed.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from gateway.calls.events import event_write
from gateway.domain import lifecycle
from gateway.domain.errors import FieldViolation, invalid
from gateway.domain.targets import OrderQuery, resolve_target
from gateway.domain.tracking import build_orders, handle_histories, validate_track_request
from gateway.domain.validation import check_metadata, check_query
from gateway.protos import json_pb2, order_pb2, orders_service_pb2
from gateway.store.base import (
    Decision,
    HandleRow,
    Insertion,
    NewRecord,
    OrderStore,
    RecordWrite,
    StoredRecord,
    now_ms,
)

Rule = Callable[[order_pb2.Order, json_pb2.JsonObject, int], bool]
SHARE_URL_BASE = "https://trck.at/"
SHARE_TOKEN_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class TargetedRequest(Protocol):
    """Get, cancel, complete and disable requests all name a record the same way."""

    @property
    def order_handle(self) -> str: ...

    @property
    def type(self) -> int: ...

    @property
    def type_index(self) -> int: ...

    @property
    def fulfillment_attempt(self) -> int: ...

    def HasField(self, field_name: str) -> bool: ...


ChangeRequest = (
    orders_service_pb2.CancelOrderRequest
    | orders_service_pb2.CompleteOrderRequest
    | orders_service_pb2.DisableOrderRequest
)


def query_of(request: TargetedRequest) -> OrderQuery:
    """The record a request names, validated; raises InvalidArgument."""
    query = OrderQuery(
        request.order_handle,
        request.type,
        request.type_index if request.HasField("type_index") else None,
        request.fulfillment_attempt if request.HasField("fulfillment_attempt") else None,
    )
    check_query(query)
    return query


def metadata_update(request: ChangeRequest) -> json_pb2.JsonObject:
    """The metadata a change merges into the order, validated; raises InvalidArgument."""
    if request.update.HasField("metadata"):
        violations: list[FieldViolation] = []
        check_metadata("update.metadata", request.update.metadata, violations)
        if violations:
            raise invalid("INVALID_ARGUMENT", violations)
    return request.update.metadata


def decide_change(
    rule: Rule,
    query: OrderQuery,
    update: json_pb2.JsonObject,
    now_ms: int,
    records: Sequence[StoredRecord],
    *,
    account_id: str,
) -> Decision[order_pb2.Order]:
    """Inside the store's transaction: the order `query` names among its handle's `records`, after
    `rule`, and its write with the event that tells of it, if the rule changed it (a retried cancel
    writes nothing, adds no event).

    Raises NotFound or InvalidArgument (no record, or an ambiguous one) and whatever `rule` refuses
    with (FailedPrecondition): the store then writes nothing.
    """
    record = resolve_target(query, records)
    order = order_pb2.Order.FromString(record.body)
    if not rule(order, update, now_ms):
        return Decision(order)
    return Decision(
        order,
        RecordWrite(record.row_id, order.status, order.SerializeToString()),
        event_write(account_id, order, now_ms),
    )


def insertion_of(orders: list[order_pb2.Order]) -> Insertion[list[order_pb2.Order]]:
    """The records that keep `orders`, with the orders themselves as the answer."""
    records = [
        NewRecord(
            o.order_handle, o.type, o.type_index, o.fulfillment_attempt, o.status, o.SerializeToString()
        )
        for o in orders
    ]
    return Insertion(orders, records)


def decide_track(
    request: orders_service_pb2.TrackOrdersRequest,
    now_ms: int,
    route_handle: str,
    new_share_url: Callable[[], str],
    rows: Sequence[HandleRow],
) -> Insertion[list[order_pb2.Order]]:
    """Inside the store's transaction: the new records of a route, from the handles' existing `rows`.

    Raises AlreadyExists when a handle has an open record: the store then writes nothing.
    """
    orders = build_orders(
        request,
        handle_histories(rows),
        now_ms=now_ms,
        route_handle=route_handle,
        new_share_url=new_share_url,
    )
    return insertion_of(orders)


def _share_url() -> str:
    return SHARE_URL_BASE + "".join(secrets.choice(SHARE_TOKEN_ALPHABET) for _ in range(10))


class OrderCalls:
    """The calls of OrdersService for an authenticated account, over a store.

    `clock` gives epoch milliseconds; `new_route_handle` and `new_share_url` make ids.
    Each is passed in so that tests can fix them.
    """

    def __init__(
        self,
        store: OrderStore,
        *,
        clock: Callable[[], int] = now_ms,
        new_route_handle: Callable[[], str] = lambda: str(uuid.uuid4()),
        new_share_url: Callable[[], str] = _share_url,
    ) -> None:
        self.store = store
        self._clock = clock
        self._new_route_handle = new_route_handle
        self._new_share_url = new_share_url

    async def get_order(
        self, account_id: str, request: orders_service_pb2.GetOrderRequest, deadline: float
    ) -> order_pb2.Order:
        query = query_of(request)
        records = await self.store.read_records(account_id, query.order_handle, deadline=deadline)
        return order_pb2.Order.FromString(resolve_target(query, records).body)

    async def _change(
        self, rule: Rule, account_id: str, request: ChangeRequest, deadline: float
    ) -> order_pb2.Order:
        """Cancel, complete or disable, by `rule`: the one flow of the three calls."""
        query = query_of(request)
        update = metadata_update(request)
        decide = partial(decide_change, rule, query, update, self._clock(), account_id=account_id)
        return await self.store.change_order(account_id, query.order_handle, decide, deadline=deadline)

    async def cancel_order(
        self, account_id: str, request: orders_service_pb2.CancelOrderRequest, deadline: float
    ) -> order_pb2.Order:
        return await self._change(lifecycle.cancel, account_id, request, deadline)

    async def complete_order(
        self, account_id: str, request: orders_service_pb2.CompleteOrderRequest, deadline: float
    ) -> order_pb2.Order:
        return await self._change(lifecycle.complete, account_id, request, deadline)

    async def disable_order(
        self, account_id: str, request: orders_service_pb2.DisableOrderRequest, deadline: float
    ) -> order_pb2.Order:
        return await self._change(lifecycle.disable, account_id, request, deadline)

    async def track_orders(
        self, account_id: str, request: orders_service_pb2.TrackOrdersRequest, deadline: float
    ) -> orders_service_pb2.TrackOrdersResponse:
        validate_track_request(request)
        route_handle = self._new_route_handle()
        decide = partial(decide_track, request, self._clock(), route_handle, self._new_share_url)
        handles = list(dict.fromkeys(new.order_handle for new in request.orders))
        orders = await self.store.track_orders(account_id, handles, decide, deadline=deadline)
        return orders_service_pb2.TrackOrdersResponse(
            route_handle=route_handle, status=orders_service_pb2.ROUTE_STATUS_TRACKING, orders=orders
        )
