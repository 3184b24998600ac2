"""A fast webhook receiver for the benchmark's webhook rows: it answers 200 and counts.

    python -m bench.receiver --port 0

Every subscription of the benchmark points at a path of its own, `/hooks/<name>`, so each row's
deliveries are counted apart. A POST there is one delivery: a JSON array of events (the contract's
"Order events and webhooks"). The receiver answers 200 at once and counts the delivery, its events,
and repeats of a delivery id it has seen before (delivery is at least once: a repeat is allowed,
and worth knowing). It checks no signature: the rows measure the gateway's cost, not a receiver's.

`GET /stats/<name>?events=N&timeout=S` answers the counts of `/hooks/<name>` once N events have
arrived there, or after S seconds, whichever is first: the benchmark waits on it instead of polling.
The first and last arrival are this process's monotonic clock, in seconds, so their difference is
the time the deliveries took, whatever the clocks of the benchmark and the gateway.

`POST /hold/<name>` makes deliveries to `/hooks/<name>` wait, unanswered and uncounted, until
`POST /release/<name>`: a gateway that starts with a backlog can then be timed from a moment the
benchmark chooses (its banner) rather than from whenever its delivery worker happened to start.

Like the benchmark's other servers it runs on uvloop with aiohttp's low-level server, prints a
banner with the port it bound, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import uvloop
from aiohttp import web

from bench.processes import LAST_BANNER_LINE

HOOKS = "/hooks/"
STATS = "/stats/"
HOLD = "/hold/"
RELEASE = "/release/"
DELIVERY_ID_HEADER = "X-HyperTrack-Delivery-Id"
SIGNATURE_HEADER = "X-HyperTrack-Signature"
MAX_WAIT_S = 600.0
KEEPALIVE_TIMEOUT_S = 75.0  # longer than any pause between a gateway's deliveries in a run
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class HookCounts:
    """What arrived at one `/hooks/<name>`."""

    deliveries: int = 0
    events: int = 0
    repeated_deliveries: int = 0  # POSTs whose delivery id had arrived before
    unsigned: int = 0  # POSTs without the signature header: the gateway must always sign
    first_at_s: float | None = None
    last_at_s: float | None = None
    delivery_ids: set[str] = field(default_factory=set, repr=False)
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    open: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self.open.set()

    def record(self, delivery_id: str, signed: bool, events: int) -> None:
        now = time.monotonic()
        self.first_at_s = now if self.first_at_s is None else self.first_at_s
        self.last_at_s = now
        self.deliveries += 1
        self.events += events
        self.unsigned += not signed
        if delivery_id in self.delivery_ids:
            self.repeated_deliveries += 1
        self.delivery_ids.add(delivery_id)
        self.changed.set()

    def summary(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}


SUMMARY_FIELDS = ("deliveries", "events", "repeated_deliveries", "unsigned", "first_at_s", "last_at_s")


class Receiver:
    def __init__(self) -> None:
        self.hooks: dict[str, HookCounts] = {}

    def counts(self, name: str) -> HookCounts:
        return self.hooks.setdefault(name, HookCounts())

    async def handle(self, request: web.BaseRequest) -> web.Response:
        path = request.path
        if request.method == "POST" and path.startswith(HOOKS):
            body = await request.read()
            events = orjson.loads(body)
            count = len(events) if isinstance(events, list) else 0
            counts = self.counts(path.removeprefix(HOOKS))
            await counts.open.wait()
            counts.record(
                request.headers.get(DELIVERY_ID_HEADER, ""), SIGNATURE_HEADER in request.headers, count
            )
            return web.Response(body=b"{}", headers=JSON_HEADERS)
        if request.method == "POST" and path.startswith((HOLD, RELEASE)):
            counts = self.counts(path.removeprefix(HOLD if path.startswith(HOLD) else RELEASE))
            if path.startswith(HOLD):
                counts.open.clear()
            else:
                counts.open.set()
            return web.Response(body=b"{}", headers=JSON_HEADERS)
        if request.method == "GET" and path.startswith(STATS):
            counts = self.counts(path.removeprefix(STATS))
            wanted = int(request.query.get("events", "0"))
            timeout = min(float(request.query.get("timeout", "0")), MAX_WAIT_S)
            await self._wait(counts, wanted, time.monotonic() + timeout)
            return web.Response(body=orjson.dumps(counts.summary()), headers=JSON_HEADERS)
        return web.Response(status=404)

    @staticmethod
    async def _wait(counts: HookCounts, wanted: int, deadline: float) -> None:
        while counts.events < wanted:
            counts.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(counts.changed.wait(), left)
            except TimeoutError:
                return


async def serve(host: str, port: int) -> None:
    receiver = Receiver()
    server = web.Server(receiver.handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"bench webhook receiver\n  REST  http://{host}:{bound}\n{LAST_BANNER_LINE}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (shown in the banner)")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
