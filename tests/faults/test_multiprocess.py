"""Two `grpc` processes and two `http` front ends on one SQLite file, each front end balancing over
both gRPC servers (`--backend ipv4:127.0.0.1:P1,127.0.0.1:P2`).

100 seeded orders are cancelled 50 times each (5,000 requests, 64 at a time), ten orders at a
time with their 500 cancels shuffled together and spread over both front ends, so that many
cancels of one order are in flight at once in both gRPC processes, which serialize on SQLite's
write lock. Every answer is 200 with the order cancelled, all 50 answers of an order show the same
`cancelled_at`, and the file holds exactly one `order_cancelled` event and one `cancelled_at` per
order.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import aiohttp

from tests.faults.figures import Figures
from tests.faults.harness import cancel_load, eventually, processes, seeded_database, shuffled_bursts
from tests.faults.ledger import State, audit, integrity, stored_orders

ORDERS = 100
CANCELS_PER_ORDER = 50
ORDERS_PER_BURST = 10
CONCURRENCY = 64
LOAD_TIMEOUT_S = 60.0
ACCOUNT = "faults"
QUIET = ("--log-level", "warning")


async def test_two_grpc_and_two_rest_processes_on_one_file_cancel_each_order_once(
    tmp_path: Path, figures: Figures
) -> None:
    database, auth, handles = seeded_database(tmp_path, ORDERS)
    database_path = tmp_path / "orders.db"
    async with processes(tmp_path) as started:
        grpc_servers = await asyncio.gather(
            *(
                started.start("grpc", "--grpc-port", "0", "--database", database, "--no-demo", *QUIET)
                for _ in range(2)
            )
        )
        backend = "ipv4:" + ",".join(f"127.0.0.1:{server.grpc_port}" for server in grpc_servers)
        front_ends = await asyncio.gather(
            *(started.start("http", "--http-port", "0", "--backend", backend, *QUIET) for _ in range(2))
        )
        async with aiohttp.ClientSession() as http:
            for front_end in front_ends:
                await eventually(partial(_ready, http, front_end.rest_url), within_s=20)

        order = list(shuffled_bursts(handles, CANCELS_PER_ORDER, ORDERS_PER_BURST, seed=6))
        requests = [(front_ends[i % 2].rest_url, handle) for i, handle in enumerate(order)]
        load_started = time.monotonic()
        answers = await asyncio.wait_for(
            cancel_load(requests, auth=auth, concurrency=CONCURRENCY), timeout=LOAD_TIMEOUT_S
        )
        figures.timing(
            "5,000 concurrent cancels over 2 http + 2 grpc processes", time.monotonic() - load_started
        )
        figures.cancels(answers.sent)
        logged = [line for p in started.started for line in p.stderr_lines if '"level":"error"' in line]

    assert answers.statuses == {200: ORDERS * CANCELS_PER_ORDER}
    assert answers.not_cancelled_bodies == []
    # All the answers about one order describe the one cancel that happened.
    assert {h: len(times) for h, times in answers.cancelled_at.items()} == dict.fromkeys(handles, 1)
    assert logged == []

    assert integrity(database_path) == "ok"
    result = audit(database_path, ACCOUNT, handles, set(handles))
    figures.checked(len(handles), result.bad)
    assert result.bad == 0, result.describe()
    assert result.count(State.CANCELLED) == ORDERS
    stored = stored_orders(database_path, ACCOUNT, handles)
    for handle in handles:
        [event] = stored[handle].cancel_events
        assert event.order_cancelled.order_handle == handle


async def _ready(http: aiohttp.ClientSession, url: str) -> bool | None:
    async with http.get(f"{url}/readyz") as response:
        return True if response.status == 200 else None
