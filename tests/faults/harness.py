"""Helpers of the fault tests: the real program as processes (always stopped, killed if need be),
a store that can be slowed down or watched, polling with a deadline, and a REST cancel load."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from gateway.store.base import Decide, DecideInsertion, OrderStore, StoredRecord
from gateway.testing import basic
from tests.processes import GatewayProcess, executable

T = TypeVar("T")
EPHEMERAL_PORTS = {"HYPERTRACK_GATEWAY_HTTP_PORT": "0", "HYPERTRACK_GATEWAY_GRPC_PORT": "0"}
STOP_TIMEOUT_S = 20.0


# --- the program as processes ---------------------------------------------------------------


def cli(*args: str, cwd: Path) -> str:
    """Run a one-shot subcommand; its stdout. Fails the test if it fails."""
    result = subprocess.run(
        [executable(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"hypertrack-gateway {' '.join(args[:2])} failed: {result.stderr}"
    return result.stdout


def seeded_database(
    directory: Path, count: int, prefix: str = "load-"
) -> tuple[str, dict[str, str], list[str]]:
    """A new SQLite file with an account and `count` open orders: (database URL, REST auth, handles)."""
    database = f"sqlite:///{directory / 'orders.db'}"
    account_id, secret = (
        cli("accounts", "create", "--database", database, "faults", cwd=directory).strip().split(":", 1)
    )
    out = cli(
        "seed", "--database", database, "--account", account_id, "--count", str(count), "--prefix", prefix,
        cwd=directory,
    )  # fmt: skip
    assert f"seeded {count} open orders" in out, out
    return database, {"Authorization": basic(account_id, secret)}, [f"{prefix}{i}" for i in range(count)]


class Processes:
    """Gateway processes started by one test; `stop_all` (in a finally) leaves none running."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[GatewayProcess] = []

    async def start(self, *args: str, env: dict[str, str] | None = None) -> GatewayProcess:
        """Start the program with `args` (off the event loop: it waits for the banner)."""
        process = await asyncio.to_thread(GatewayProcess.start, list(args), cwd=self.cwd, env=env)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        """SIGTERM every process still running, all at once; SIGKILL what has not exited in time."""
        running = [p for p in self.started if p.process.poll() is None]
        for process in running:
            process.process.terminate()
        for process in running:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def processes(cwd: Path) -> AsyncIterator[Processes]:
    started = Processes(cwd)
    try:
        yield started
    finally:
        started.stop_all()


# --- waiting ---------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within_s: float, every_s: float = 0.05
) -> T:
    """Poll `check` until it returns something other than None; fail after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s")
        await asyncio.sleep(every_s)


def task_census() -> Counter[str]:
    """The event loop's tasks other than the current one, counted by coroutine."""
    current = asyncio.current_task()
    return Counter(
        getattr(task.get_coro(), "__qualname__", repr(task.get_coro()))
        for task in asyncio.all_tasks()
        if task is not current
    )


async def no_tasks_beyond(baseline: Counter[str], *, within_s: float) -> None:
    """Wait until no kind of task outnumbers `baseline` (the server's long-lived tasks may be
    replaced by new ones of the same kind, as grpc's server does after each call)."""

    async def settled() -> bool | None:
        return True if not task_census() - baseline else None

    try:
        await eventually(settled, within_s=within_s)
    except AssertionError:
        raise AssertionError(f"tasks left behind: {task_census() - baseline}") from None


# --- a store with faults -------------------------------------------------------------------


@dataclass
class FaultyStore:
    """An OrderStore that delegates to a real one, announces every change, and, while `stall_s`
    is set, makes each change wait that long first (a backend slower than the caller's deadline).
    `stalls` gets one future per stalled change: "cancelled" if the wait was cut short (the call
    was abandoned), "went on" if the change went ahead after the wait."""

    inner: OrderStore
    stall_s: float = 0.0
    changes_started: asyncio.Event = field(default_factory=asyncio.Event)
    stalls: list[asyncio.Future[str]] = field(default_factory=list)
    _reached: dict[str, asyncio.Event] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        """The rest of a store (its events side) is the real one's, untouched."""
        return getattr(self.inner, name)

    def reached(self, handle: str) -> asyncio.Event:
        """Set once a change of `handle` has reached the store."""
        return self._reached.setdefault(handle, asyncio.Event())

    async def change_order(
        self, account_id: str, order_handle: str, decide: Decide[T], *, deadline: float
    ) -> T:
        self.changes_started.set()
        self.reached(order_handle).set()
        if self.stall_s > 0:
            outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.stalls.append(outcome)
            try:
                await asyncio.sleep(self.stall_s)
            except asyncio.CancelledError:
                outcome.set_result("cancelled")
                raise
            outcome.set_result("went on")
        return await self.inner.change_order(account_id, order_handle, decide, deadline=deadline)

    async def read_records(
        self, account_id: str, order_handle: str, *, deadline: float
    ) -> list[StoredRecord]:
        return await self.inner.read_records(account_id, order_handle, deadline=deadline)

    async def track_orders(
        self, account_id: str, handles: Sequence[str], decide: DecideInsertion[T], *, deadline: float
    ) -> T:
        return await self.inner.track_orders(account_id, handles, decide, deadline=deadline)

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        return await self.inner.account_secret_hash(account_id)

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        return await self.inner.create_account(account_id, secret_hash)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


# --- a REST cancel load ----------------------------------------------------------------------


@dataclass
class Answers:
    """What a cancel load got back: status (or None: no HTTP answer) and body status per request."""

    statuses: Counter[int | None] = field(default_factory=Counter)
    ok: set[str] = field(default_factory=set)
    unanswered: set[str] = field(default_factory=set)
    not_cancelled_bodies: list[tuple[str, Any]] = field(default_factory=list)
    cancelled_at: dict[str, set[str]] = field(default_factory=dict)
    sent: int = 0

    @property
    def answered(self) -> int:
        return sum(n for status, n in self.statuses.items() if status is not None)


async def cancel_load(
    requests: Sequence[tuple[str, str]],
    *,
    auth: dict[str, str],
    concurrency: int,
    stop: asyncio.Event | None = None,
    on_answer: Callable[[Answers], None] | None = None,
    timeout_s: float = 30.0,
) -> Answers:
    """POST a cancel for each (base URL, handle), `concurrency` at a time, until done or `stop`."""
    answers = Answers()
    queue = iter(requests)
    stopped = stop or asyncio.Event()

    async def worker(http: aiohttp.ClientSession) -> None:
        for base_url, handle in queue:
            if stopped.is_set():
                return
            answers.sent += 1
            try:
                async with http.post(f"{base_url}/orders/{handle}/cancel", json={}) as response:
                    body = await response.json()
                    status: int | None = response.status
            except (aiohttp.ClientError, TimeoutError):
                status, body = None, None
            answers.statuses[status] += 1
            if status is None:
                answers.unanswered.add(handle)
            elif status == 200:
                answers.ok.add(handle)
                answers.cancelled_at.setdefault(handle, set()).add(body.get("cancelled_at", ""))
                if body.get("status") != "cancelled":
                    answers.not_cancelled_bodies.append((handle, body))
            if on_answer is not None:
                on_answer(answers)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(headers=auth, connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return answers


def shuffled_bursts(handles: Sequence[str], copies: int, burst: int, seed: int) -> Iterator[str]:
    """Each handle `copies` times; `burst` handles at a time with their copies shuffled together,
    so that many cancels of one order are in flight at once."""
    rng = random.Random(seed)
    for start in range(0, len(handles), burst):
        group = [h for h in handles[start : start + burst] for _ in range(copies)]
        rng.shuffle(group)
        yield from group
