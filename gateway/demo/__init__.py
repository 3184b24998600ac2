"""The embedded default's demo data: the demo account and a handful of orders.

`order-1` is the order of the public reference page in its state before the cancel
(disabled, tracked, no `cancelled_at`), so cancelling it gives the reference response.
`order-2` has a pick and a drop leg (a cancel must name one), `order-3`..`order-5` are
open drop-offs. Existing orders are never touched: a restart keeps every change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources

import orjson

from gateway.calls.credentials import hash_secret
from gateway.calls.orders import insertion_of
from gateway.domain.tracking import build_orders
from gateway.jsonmap import decode
from gateway.protos import order_pb2, orders_service_pb2
from gateway.store.base import HandleRow, Insertion, OrderStore, now_ms

DEMO_ACCOUNT = "demo"
DEMO_SECRET = "demo-secret"
REFERENCE_ORDER = "order-1"
_SAN_JOSE = order_pb2.Point(longitude=-121.8610066, latitude=37.3263062)


def reference_order() -> order_pb2.Order:
    """order-1 as the reference page shows it, before the cancel."""
    text = resources.files("gateway.demo").joinpath("order-1.json").read_bytes()
    order: order_pb2.Order = decode(order_pb2.Order, orjson.loads(text))
    return order


def _demo_route() -> orders_service_pb2.TrackOrdersRequest:
    destination = order_pb2.Destination(geometry=_SAN_JOSE, address="748 Story Rd, San Jose, CA 95112")
    request = orders_service_pb2.TrackOrdersRequest(
        worker_handle="James", track_mode=order_pb2.TRACK_MODE_ON_TIME, ops_group_handle="store-sf"
    )
    request.orders.add(order_handle="order-2", type=order_pb2.ORDER_TYPE_PICK, destination=destination)
    request.orders.add(order_handle="order-2", type=order_pb2.ORDER_TYPE_DROP, destination=destination)
    for handle in ("order-3", "order-4", "order-5"):
        request.orders.add(order_handle=handle, destination=destination)
    return request


async def install_demo(store: OrderStore) -> None:
    """Create the demo account and the demo orders that do not exist yet."""
    await store.create_account(DEMO_ACCOUNT, hash_secret(DEMO_SECRET))
    route = _demo_route()
    handles = [REFERENCE_ORDER, *dict.fromkeys(o.order_handle for o in route.orders)]

    def decide(rows: Sequence[HandleRow]) -> Insertion[list[order_pb2.Order]]:
        existing = {row.order_handle for row in rows}
        orders = [] if REFERENCE_ORDER in existing else [reference_order()]
        missing = orders_service_pb2.TrackOrdersRequest()
        missing.CopyFrom(route)
        del missing.orders[:]
        missing.orders.extend(o for o in route.orders if o.order_handle not in existing)
        if missing.orders:
            orders += build_orders(
                missing,
                {},
                now_ms=now_ms(),
                route_handle="0b0c2a4e-5a3f-4d8e-9f6a-2b1d3c4e5f60",
                new_share_url=lambda: "https://trck.at/demo",
            )
        return insertion_of(orders)

    await store.track_orders(DEMO_ACCOUNT, handles, decide, deadline=time.monotonic() + 30)
