"""The order calls: validate, name the record, apply the domain rule in one store transaction."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Protocol

from gateway.domain import lifecycle
from gateway.domain.errors import FieldViolation, invalid
from gateway.domain.targets import OrderQuery
from gateway.domain.tracking import build_orders, validate_track_request
from gateway.domain.validation import check_metadata, check_query
from gateway.protos import json_pb2, order_pb2, orders_service_pb2
from gateway.store.base import OrderStore

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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


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
        clock: Callable[[], int] = _now_ms,
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
        return await self.store.get_order(account_id, query_of(request), deadline=deadline)

    async def _change(
        self,
        rule: Rule,
        account_id: str,
        request: orders_service_pb2.CancelOrderRequest
        | orders_service_pb2.CompleteOrderRequest
        | orders_service_pb2.DisableOrderRequest,
        deadline: float,
    ) -> order_pb2.Order:
        query = query_of(request)
        if request.update.HasField("metadata"):
            violations: list[FieldViolation] = []
            check_metadata("update.metadata", request.update.metadata, violations)
            if violations:
                raise invalid("INVALID_ARGUMENT", violations)
        update, now_ms = request.update.metadata, self._clock()

        def change(order: order_pb2.Order) -> bool:
            return rule(order, update, now_ms)

        return await self.store.change_order(account_id, query, change, deadline=deadline)

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
        build = partial(
            build_orders,
            request,
            now_ms=self._clock(),
            route_handle=route_handle,
            new_share_url=self._new_share_url,
        )
        handles = list(dict.fromkeys(new.order_handle for new in request.orders))
        orders = await self.store.track_orders(account_id, handles, build, deadline=deadline)
        return orders_service_pb2.TrackOrdersResponse(
            route_handle=route_handle, status=orders_service_pb2.ROUTE_STATUS_TRACKING, orders=orders
        )
