"""Issue 14's rows: what a webhook subscription costs a cancel, and how fast events go out.

Both rows send to the benchmark's receiver (bench/receiver.py, a process of its own on loopback),
each subscription to a path of its own so that their counts stay apart.

- **REST cancel, webhook subscribed**: a `serve` whose account has a webhook, measured like the
  embedded row beside it (which writes the same outbox, but nobody is subscribed, so its events are
  never sent). Its delivery worker sends while the load runs, in the same process: the row's
  throughput and CPU carry the cost of the outbox and of delivery both. After each measurement the
  benchmark waits until the receiver has every event of the cancels answered so far, so that no
  backlog of deliveries spills into the next row's measurement.
- **Delivery**: events delivered per second to the receiver. The events are made first, with no
  delivery worker running: N seeded orders of a subscribed account cancelled by the product's own
  calls (`OrderCalls.cancel_order`, as a CancelOrder does) over the database, in this process. Then
  a `serve` starts on that database while the receiver holds its path's deliveries; once the
  banner is out, the receiver lets them through and the worker drains the outbox. The rate is the
  events over the time from that release to the last delivery, on the receiver's clock, and the CPU
  is the `serve` process's over the same span (the first claims, made while held, fall before it).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass

from gateway.assembly import open_store
from gateway.calls.orders import OrderCalls
from gateway.protos import orders_service_pb2

# Cancels in flight at once when the delivery row makes its events: enough to share group commits.
CANCELS_IN_FLIGHT = 32
CANCEL_DEADLINE_S = 60.0
# The receiver's longest wait for a backlog: a delivery worker that falls this far behind has failed.
CATCH_UP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HookCounts:
    """What the receiver counted at one path (bench/receiver.py)."""

    deliveries: int
    events: int
    repeated_deliveries: int
    unsigned: int
    first_at_s: float | None
    last_at_s: float | None

    @property
    def seconds(self) -> float:
        if self.first_at_s is None or self.last_at_s is None:
            return 0.0
        return self.last_at_s - self.first_at_s


@dataclass(frozen=True)
class Receiver:
    """The receiver process's address, and the URL a subscription of one row points at."""

    base_url: str

    def hook_url(self, name: str) -> str:
        return f"{self.base_url}/hooks/{name}"

    def hold(self, name: str) -> None:
        """Deliveries to `name` wait, unanswered, until `release`."""
        self._post(f"/hold/{name}")

    def release(self, name: str) -> None:
        self._post(f"/release/{name}")

    def _post(self, path: str) -> None:
        with urllib.request.urlopen(
            urllib.request.Request(self.base_url + path, b"", method="POST"), timeout=30
        ):
            pass

    def wait_for(self, name: str, events: int, timeout_s: float = CATCH_UP_TIMEOUT_S) -> HookCounts:
        """The counts of `name` once `events` events have arrived there, or after `timeout_s`."""
        url = f"{self.base_url}/stats/{name}?events={events}&timeout={timeout_s:g}"
        with urllib.request.urlopen(url, timeout=timeout_s + 30) as response:
            return HookCounts(**json.loads(response.read()))


@dataclass(frozen=True)
class WebhookRow:
    """The subscribed row's deliveries over the whole run: every event of an answered cancel sent?"""

    cancels: int  # cancels answered 2xx by the subscribed `serve`, each one event
    received: HookCounts
    catch_up_s: list[float]  # after each measurement, how long the receiver took to have them all

    @property
    def missing(self) -> int:
        return max(0, self.cancels - self.received.events)


@dataclass(frozen=True)
class Delivery:
    """The delivery row: a backlog of events drained by one `serve`'s worker."""

    events: int  # made before the server started
    received: HookCounts
    server_cpu_s: float  # of the `serve` process, from its banner to the last delivery

    @property
    def events_per_s(self) -> float | None:
        seconds = self.received.seconds
        return self.received.events / seconds if seconds > 0 else None

    @property
    def cpu_per_1k(self) -> float | None:
        return self.server_cpu_s / self.received.events * 1000 if self.received.events else None

    @property
    def missing(self) -> int:
        return max(0, self.events - self.received.events)


async def _cancel_all(database_url: str, account: str, prefix: str, count: int) -> int:
    """Cancel `prefix0` ... by the product's calls over the store; the number cancelled."""
    store = await open_store(database_url)
    calls = OrderCalls(store)
    gate = asyncio.Semaphore(CANCELS_IN_FLIGHT)

    async def cancel(n: int) -> None:
        async with gate:
            request = orders_service_pb2.CancelOrderRequest(order_handle=f"{prefix}{n}")
            await calls.cancel_order(account, request, time.monotonic() + CANCEL_DEADLINE_S)

    try:
        await asyncio.gather(*(cancel(n) for n in range(count)))
    finally:
        await store.close()
    return count


def cancel_in_process(database_url: str, account: str, prefix: str, count: int) -> int:
    """Events in the outbox of `database_url` with no server running: one per order cancelled."""
    return asyncio.run(_cancel_all(database_url, account, prefix, count))
