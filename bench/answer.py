"""What the ceilings answer: the product's own answer to a cancel of a freshly seeded order.

Built once, in-process, by the product's code over a scratch SQLite store: `seed_orders` creates
the order by the rules of `hypertrack-gateway seed`, and `OrderCalls.cancel_order` cancels it as a
CancelOrder call does (gateway.domain.lifecycle.cancel, in one store transaction). The REST ceiling
answers its `encode_json` bytes, which is what the product's REST cancel puts in its body; the gRPC
ceiling a CancelOrderResponse holding it. So a ceiling writes the same answer the product writes,
and what it saves is exactly the product's own work per request.

`fetch_answer` reads one real answer over HTTP, so that the table can show that both are the same size.
"""

from __future__ import annotations

import tempfile
import time
import urllib.request
from pathlib import Path

from gateway.assembly import open_store
from gateway.calls.orders import OrderCalls
from gateway.protos import order_pb2, orders_service_pb2
from gateway.seed import seed_orders

ACCOUNT = "bench"
# seed_orders names its one order PREFIX0: run1restembedded-10000, as long as the handles the
# measured runs cancel (the handle is in the answer three times).
ANSWER_PREFIX = "run1restembedded-1000"
ANSWER_HANDLE = ANSWER_PREFIX + "0"
DEADLINE_S = 30.0


async def cancelled_seed_order() -> order_pb2.Order:
    """A seeded order after its first cancel, as the product's CancelOrder returns it."""
    with tempfile.TemporaryDirectory(prefix="bench-answer-") as scratch:
        store = await open_store(f"sqlite:///{Path(scratch) / 'answer.sqlite'}")
        try:
            await store.create_account(ACCOUNT, b"not used: no call is authenticated here")
            await seed_orders(store, ACCOUNT, 1, ANSWER_PREFIX)
            request = orders_service_pb2.CancelOrderRequest(order_handle=ANSWER_HANDLE)
            return await OrderCalls(store).cancel_order(ACCOUNT, request, time.monotonic() + DEADLINE_S)
        finally:
            await store.close()


def fetch_answer(base_url: str, authorization: str, handle: str) -> bytes:
    """The body of one REST cancel of `handle`, as the benchmark's load sends it."""
    request = urllib.request.Request(
        f"{base_url}/orders/{handle}/cancel",
        data=b"{}",
        method="POST",
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
        body: bytes = response.read()
        return body
