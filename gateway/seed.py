"""`seed`: many open orders for load tests (`load-0` ... `load-<N-1>`).

Orders are built by the same TrackOrders rules as the API, in large batches per
transaction. A handle whose record is open is left as it is; one whose record is
terminal gets a new fulfillment attempt, so seeding again after a load test makes
every handle cancellable again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from gateway.calls.orders import insertion_of
from gateway.domain.tracking import build_orders, handle_histories
from gateway.protos import order_pb2, orders_service_pb2
from gateway.store.base import HandleRow, Insertion, OrderStore, now_ms

BATCH = 1000
_DESTINATION = order_pb2.Destination(
    geometry=order_pb2.Point(longitude=-121.8610066, latitude=37.3263062),
    address="748 Story Rd, San Jose, CA 95112",
)


async def seed_orders(store: OrderStore, account_id: str, count: int, prefix: str) -> int:
    """Make `prefix0` ... `prefix<count-1>` open orders of `account_id`; return how many were created."""
    created = 0
    for start in range(0, count, BATCH):
        handles = [f"{prefix}{i}" for i in range(start, min(start + BATCH, count))]

        def decide(
            rows: Sequence[HandleRow], handles: list[str] = handles
        ) -> Insertion[list[order_pb2.Order]]:
            history = handle_histories(rows)
            request = orders_service_pb2.TrackOrdersRequest(
                worker_handle="load-worker", track_mode=order_pb2.TRACK_MODE_ON_TIME
            )
            for handle in handles:
                past = history.get(handle)
                if past is None or past.open_status is None:
                    request.orders.add(order_handle=handle, destination=_DESTINATION)
            orders = build_orders(
                request,
                history,
                now_ms=now_ms(),
                route_handle=str(uuid.uuid4()),
                new_share_url=lambda: "https://trck.at/load",
            )
            return insertion_of(orders)

        orders = await store.track_orders(account_id, handles, decide, deadline=time.monotonic() + 60)
        created += len(orders)
    return created
