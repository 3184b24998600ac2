"""What one cancel's store write costs the event loop's thread: alone, or in a batch of many.

At half load a REST cancel costs `serve`'s event loop about twice the CPU it costs at full speed
(the README's performance section has the figures at several rates). This separates the store's
part of that from the rest, in one process, without HTTP or gRPC: the product's SqliteStore and
OrderCalls on a fresh database of its own (`accounts create`, `seed`), cancels awaited one at a
time (each write its own group commit, as at half load) and then in batches of BATCH (as under
full load), with `--sqlite-synchronous full` (the COMMIT and its sync on the commit thread: the
loop sleeps while it waits) and `normal` (no sync: the COMMIT on the loop's thread, which never
sleeps). Figures are the loop thread's user and system CPU per write, from getrusage, medians of
three rounds.

On a virtual machine a thread that sleeps wakes up to cold caches: a write alone that waits for
the sync costs the loop far more user CPU than the same write alone that does not wait, though it
runs the same code.

`python -m bench.writecost [DIR]` prints the table (DIR: where the databases go; default: the
system's temporary directory).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.database import Database
from gateway.calls.orders import OrderCalls
from gateway.protos import orders_service_pb2
from gateway.store.sqlite import SqliteStore, Synchronous

WARM_UP = 300
BATCH = 20
PREFIX = "cost-"
SYNCHRONOUS: tuple[Synchronous, ...] = ("full", "normal")


@dataclass(frozen=True)
class Sizes:
    """How many writes alone, how many batches of BATCH, and how many rounds of both."""

    alone: int = 2000
    batches: int = 100
    rounds: int = 3

    @property
    def orders(self) -> int:
        return WARM_UP + self.alone + self.batches * BATCH


@dataclass(frozen=True)
class WriteCost:
    """The loop thread's CPU per write, µs, and the wall time per write."""

    user_us: float
    system_us: float
    wall_us: float


@dataclass
class _Cancels:
    calls: OrderCalls
    account: str
    next_handle: int = 0

    async def one(self) -> None:
        handle = f"{PREFIX}{self.next_handle}"
        self.next_handle += 1
        request = orders_service_pb2.CancelOrderRequest(order_handle=handle)
        await self.calls.cancel_order(self.account, request, time.monotonic() + 10)

    async def batch(self) -> None:
        await asyncio.gather(*(self.one() for _ in range(BATCH)))


async def _measure(
    database: Database, path: Path, synchronous: Synchronous, sizes: Sizes
) -> dict[str, WriteCost]:
    store = await SqliteStore.open(str(path), synchronous=synchronous)
    try:
        cancels = _Cancels(OrderCalls(store), database.account)
        for _ in range(WARM_UP):
            await cancels.one()
        figures: dict[str, WriteCost] = {}
        for name, writes, repeat, step in (
            ("alone", sizes.alone, sizes.alone, cancels.one),
            (f"in batches of {BATCH}", sizes.batches * BATCH, sizes.batches, cancels.batch),
        ):
            before, started = resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
            for _ in range(repeat):
                await step()
            wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_THREAD)
            figures[name] = WriteCost(
                user_us=(after.ru_utime - before.ru_utime) / writes * 1e6,
                system_us=(after.ru_stime - before.ru_stime) / writes * 1e6,
                wall_us=wall / writes * 1e6,
            )
        return figures
    finally:
        await store.close()


def measure(directory: Path, sizes: Sizes = Sizes()) -> dict[tuple[str, str], WriteCost]:
    """Medians over the rounds, each on a fresh database, by (synchronous, how written)."""
    rounds: dict[tuple[str, str], list[WriteCost]] = {}
    for round_number in range(sizes.rounds):
        for synchronous in SYNCHRONOUS:
            path = directory / f"writecost-{round_number}-{synchronous}.db"
            database = Database.create(path)
            database.seed(PREFIX, sizes.orders)
            figures = uvloop.run(_measure(database, path, synchronous, sizes))
            for name, cost in figures.items():
                rounds.setdefault((synchronous, name), []).append(cost)
    return {
        key: WriteCost(
            user_us=statistics.median(c.user_us for c in costs),
            system_us=statistics.median(c.system_us for c in costs),
            wall_us=statistics.median(c.wall_us for c in costs),
        )
        for key, costs in rounds.items()
    }


def main(argv: list[str]) -> int:
    base = Path(argv[0]) if argv else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="writecost-", dir=base) as directory:
        figures = measure(Path(directory))
    print(
        f"one cancel's store write, the event loop's thread (medians of {Sizes().rounds} rounds), µs per write"
    )
    print(f"{'synchronous':<12} {'written':<20} {'user':>7} {'system':>7} {'CPU':>7} {'wall':>7}")
    for (synchronous, name), cost in figures.items():
        cpu = cost.user_us + cost.system_us
        print(
            f"{synchronous:<12} {name:<20} {cost.user_us:7.1f} {cost.system_us:7.1f} {cpu:7.1f} {cost.wall_us:7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
