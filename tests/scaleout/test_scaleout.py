"""Scale-out, as deployed: three `grpc` processes on one PostgreSQL database and two `http` front
ends in front of them, every one a real process. The gRPC servers listen on 127.0.0.1, 127.0.0.2
and 127.0.0.3 on one port, a DNS server of the test's own answers `orders.test` with those three
addresses, and the front ends run with `--backend dns://127.0.0.1:<dns port>/orders.test:<port>`.

- Balancing: each front end resolves the name, connects to all three servers and spreads its
  calls over them (the kernel's byte counters of each server's connections show it).
- Concurrency: 100 orders cancelled 50 times each, all at once through both front ends, leave
  exactly one `order_cancelled` event and one `cancelled_at` per order in the database.
- Failover: a gRPC server SIGKILLed under load costs no idempotent call (cancel, get); TrackOrders,
  which is not retried, either succeeds or fails cleanly with 503.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.protos import order_pb2
from tests.scaleout import load
from tests.scaleout.cluster import GRPC_HOSTS, SERVICE_NAME, Cluster, running_cluster
from tests.scaleout.load import Outcome, Request
from tests.scaleout.tcpstats import bytes_received_by_host, peers_by_pid, unread_by_peer

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(sys.platform != "linux", reason="needs 127.0.0.2 and 127.0.0.3 on loopback (Linux)"),
]

ORDERS = 100
CANCELS_PER_ORDER = 50
# Orders are cancelled ten at a time, their 500 cancels shuffled together, so many cancels of
# one order are in flight at once, through both front ends and all three servers.
ORDERS_PER_BURST = 10
CANCEL_WORKERS = 64
BALANCE_REQUESTS = 600
MIN_SHARE = 0.2  # round-robin gives each of three servers a third; one-server picking gives 0
FAILOVER_ORDERS = 400
FAILOVER_WORKERS = 32
KILL_AFTER_ANSWERS = 600
AFTER_KILL_ANSWERS = 1500
FAILOVER_MAX_REQUESTS = 6000
FAILOVER_MAX_S = 40.0
KILLED = 1  # the server on 127.0.0.2
QUEUE_MAX_S = 5.0
TRACKS_PER_FRONT_END = 4


@pytest.fixture
async def cluster(postgres_database: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(postgres_database, tmp_path) as running:
        yield running


def urls(cluster: Cluster) -> list[str]:
    return [front_end.rest_url for front_end in cluster.front_ends]


def failures(outcomes: Sequence[Outcome], expected: int = 200) -> list[Outcome]:
    return [o for o in outcomes if o.status != expected]


def shares(before: Counter[str], after: Counter[str]) -> dict[str, float]:
    """Each server's share of the bytes all servers received between two readings."""
    grown = {host: after[host] - before[host] for host in GRPC_HOSTS}
    total = sum(grown.values())
    assert total > 0, f"no server received anything: {before} -> {after}"
    return {host: grown[host] / total for host in GRPC_HOSTS}


async def stored_orders(database: str, prefix: str) -> list[order_pb2.Order]:
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT body FROM orders WHERE order_handle LIKE $1", prefix + "%")
    finally:
        await connection.close()
    return [order_pb2.Order.FromString(row["body"]) for row in rows]


def milliseconds(timestamp: str) -> int:
    """`2023-10-26T02:30:00.000Z` as milliseconds since the epoch."""
    return round(datetime.fromisoformat(timestamp).timestamp() * 1000)


def cancelled_events(order: order_pb2.Order) -> list[order_pb2.TimelineEvent]:
    return [event for event in order.timeline if event.HasField("order_cancelled")]


async def test_front_ends_balance_over_every_address_of_the_dns_name(cluster: Cluster) -> None:
    assert cluster.dns.queries[(SERVICE_NAME, "A")] >= len(cluster.front_ends), cluster.dns.queries
    before = bytes_received_by_host(cluster.grpc_port)
    async with load.sessions(len(cluster.front_ends), 8) as clients:
        outcomes = await load.drive(
            (load.get("order-3") for _ in range(BALANCE_REQUESTS)), urls(cluster), clients, workers=8
        )
    assert len(outcomes) == BALANCE_REQUESTS and not failures(outcomes), failures(outcomes)[:5]
    share = shares(before, bytes_received_by_host(cluster.grpc_port))
    print(f"shares of the bytes the servers received: {share}; DNS queries: {dict(cluster.dns.queries)}")
    assert min(share.values()) >= MIN_SHARE, share
    pids = [front_end.process.pid for front_end in cluster.front_ends]
    assert peers_by_pid(cluster.grpc_port, pids) == {pid: set(GRPC_HOSTS) for pid in pids}


def cancel_bursts(handles: Sequence[str], rng: random.Random) -> Iterator[Request]:
    for start in range(0, len(handles), ORDERS_PER_BURST):
        burst = [h for h in handles[start : start + ORDERS_PER_BURST] for _ in range(CANCELS_PER_ORDER)]
        rng.shuffle(burst)
        yield from (load.cancel(handle) for handle in burst)


async def test_concurrent_cancels_through_every_front_end_leave_one_event_per_order(
    cluster: Cluster, postgres_database: str
) -> None:
    handles = cluster.seed("demo", ORDERS, "cc-")
    started = time.monotonic()
    async with load.sessions(len(cluster.front_ends), CANCEL_WORKERS // 2) as clients:
        outcomes = await load.drive(
            cancel_bursts(handles, random.Random(7)), urls(cluster), clients, workers=CANCEL_WORKERS
        )
    seconds = time.monotonic() - started
    print(f"{len(outcomes)} cancels in {seconds:.1f} s ({len(outcomes) / seconds:.0f}/s)")

    assert len(outcomes) == ORDERS * CANCELS_PER_ORDER
    assert not failures(outcomes), failures(outcomes)[:5]
    assert {o.body["status"] for o in outcomes} == {"cancelled"}
    assert Counter(o.front_end for o in outcomes) == {0: len(outcomes) // 2, 1: len(outcomes) // 2}
    # Every answer to one order shows the same cancel: the one that happened.
    cancelled_at = {(o.request.path, o.body["cancelled_at"]) for o in outcomes}
    assert len(cancelled_at) == ORDERS

    stored = await stored_orders(postgres_database, "cc-")
    assert sorted(o.order_handle for o in stored) == sorted(handles)
    answered = {path.split("/")[2]: at for path, at in cancelled_at}
    for order in stored:
        events = cancelled_events(order)
        assert order.status == order_pb2.ORDER_STATUS_CANCELLED, order.order_handle
        assert len(events) == 1, (order.order_handle, len(events))
        assert order.HasField("cancelled_at")
        assert events[0].recorded_at == order.cancelled_at, order.order_handle
        assert order.fulfillment_attempt == 0
        assert milliseconds(answered[order.order_handle]) == order.cancelled_at.ToMilliseconds()


def idempotent_load(handles: Sequence[str], rng: random.Random, stop: asyncio.Event) -> Iterator[Request]:
    """Cancels and gets of random handles, until `stop` is set or FAILOVER_MAX_REQUESTS."""
    for number in range(FAILOVER_MAX_REQUESTS):
        if stop.is_set():
            return
        handle = rng.choice(handles)
        yield load.cancel(handle) if number % 2 == 0 else load.get(handle)


@dataclass
class KillSwitch:
    """Watches the answers: ready to kill after `kill_after`, and ends the load once
    `stop_after` more have come back after the kill."""

    kill_after: int
    stop_after: int
    answered: int = 0
    answered_after_kill: int = 0
    kill_time: float | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, outcome: Outcome) -> None:
        self.answered += 1
        if self.kill_time is None:
            if self.answered >= self.kill_after:
                self.ready.set()
        elif outcome.finished > self.kill_time:
            self.answered_after_kill += 1
            if self.answered_after_kill >= self.stop_after:
                self.stop.set()


async def calls_queued_at(host: str, port: int, clients: int) -> dict[tuple[str, int], int]:
    """Wait until each of the `clients` connections of the (frozen) server on `host:port` holds
    bytes the server has not read: calls sent to it and waiting. Those bytes, by peer."""
    deadline = time.monotonic() + QUEUE_MAX_S
    while True:
        unread = await asyncio.to_thread(unread_by_peer, host, port)
        if len(unread) >= clients and all(unread.values()):
            return unread
        assert time.monotonic() < deadline, f"no calls queued at {host} within {QUEUE_MAX_S} s: {unread}"
        await asyncio.sleep(0.01)


async def tracks(cluster: Cluster, clients: Sequence[aiohttp.ClientSession], prefix: str) -> list[Outcome]:
    """TRACKS_PER_FRONT_END new orders tracked through each front end, all at once."""
    front_ends = len(cluster.front_ends)
    return list(
        await asyncio.gather(
            *(
                load.send(
                    clients[n % front_ends],
                    urls(cluster)[n % front_ends],
                    load.track(f"{prefix}{n}"),
                    n % front_ends,
                )
                for n in range(TRACKS_PER_FRONT_END * front_ends)
            )
        )
    )


async def test_a_grpc_server_killed_under_load_fails_no_idempotent_call(
    cluster: Cluster, postgres_database: str
) -> None:
    handles = cluster.seed("demo", FAILOVER_ORDERS, "fo-")
    port = cluster.grpc_port
    killed_host = GRPC_HOSTS[KILLED]
    switch = KillSwitch(KILL_AFTER_ANSWERS, AFTER_KILL_ANSWERS)
    readings: dict[str, Counter[str]] = {"start": bytes_received_by_host(port)}
    queued: dict[tuple[str, int], int] = {}

    async with load.sessions(len(cluster.front_ends), FAILOVER_WORKERS // 2) as clients:

        async def kill_mid_load() -> list[Outcome]:
            await switch.ready.wait()
            # Frozen first, so that calls are certainly in flight on it when it dies: sent,
            # queued by the kernel, never answered. Only a retry elsewhere can save them.
            cluster.freeze_grpc_server(KILLED)
            # TrackOrders is not idempotent, so never retried: those sent to the frozen server
            # cannot succeed, and must fail cleanly.
            during = asyncio.ensure_future(tracks(cluster, clients, "tr-during-"))
            queued.update(await calls_queued_at(killed_host, port, len(cluster.front_ends)))
            readings["kill"] = bytes_received_by_host(port)
            switch.kill_time = time.monotonic()
            await asyncio.to_thread(cluster.kill_grpc_server, KILLED)
            return await during

        started = time.monotonic()
        killer = asyncio.create_task(kill_mid_load())
        try:
            outcomes = await asyncio.wait_for(
                load.drive(
                    idempotent_load(handles, random.Random(11), switch.stop),
                    urls(cluster),
                    clients,
                    workers=FAILOVER_WORKERS,
                    on_outcome=switch.observe,
                ),
                timeout=FAILOVER_MAX_S,
            )
        finally:
            switch.stop.set()
            if not killer.done() and switch.kill_time is None:
                killer.cancel()
        seconds = time.monotonic() - started
        assert switch.kill_time is not None, f"the load ended before the kill: {switch}"
        tracked = [*await killer, *await tracks(cluster, clients, "tr-after-")]
        readings["end"] = bytes_received_by_host(port)

    kill_time = switch.kill_time
    after = [o for o in outcomes if o.finished > kill_time]
    sent_after = [o for o in outcomes if o.started > kill_time]
    in_flight = [o for o in outcomes if o.started < kill_time < o.finished]
    print(
        f"{len(outcomes)} idempotent calls in {seconds:.1f} s: {len(outcomes) - len(after)} answered"
        f" before the kill, {len(after)} after ({len(in_flight)} in flight at the kill,"
        f" {len(sent_after)} sent after); bytes queued unread at the killed server: {queued};"
        f" tracks: {Counter(t.status for t in tracked)}; bytes received: {readings}"
    )
    # The server killed was taking its share of this load until the kill, with calls of both
    # front ends waiting on it.
    assert readings["kill"][killed_host] > readings["start"][killed_host], readings
    assert len(queued) == len(cluster.front_ends) and all(queued.values()), queued
    assert not failures(outcomes), failures(outcomes)[:5]
    assert len(after) >= AFTER_KILL_ANSWERS, len(after)
    assert {o.front_end for o in sent_after} == {0, 1}
    # The two survivors took the load on, and the killed one holds no connection any more.
    for host in GRPC_HOSTS:
        if host != killed_host:
            assert readings["end"][host] > readings["kill"][host], (host, readings)
    assert killed_host not in readings["end"]

    for track in tracked:
        assert track.status in (201, 503), (track.status, track.body, track.error)
        assert track.content_type == "application/json"
        if track.status == 201:
            assert [o["status"] for o in track.body["orders"]] == ["ongoing"]
        else:
            assert set(track.body) == {"detail", "message"}, track.body

    # Every cancel that happened, happened once.
    for order in await stored_orders(postgres_database, "fo-"):
        expected = 1 if order.status == order_pb2.ORDER_STATUS_CANCELLED else 0
        assert len(cancelled_events(order)) == expected, order.order_handle
