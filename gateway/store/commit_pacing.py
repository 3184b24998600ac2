"""When a group commit runs: at the next turn of the event loop, or, under load, up to
COMMIT_INTERVAL_S later.

Under gRPC load, grpc.aio hands the servicer one call per loop turn, so a batch that runs at the
next turn holds about one write: every call pays a whole transaction (with synchronous=FULL, a
sync of the log too), and the loop, going round once per call, answers the calls one at a time.
Letting a batch start at most once per COMMIT_INTERVAL_S under load makes batches of several
writes: the loop keeps advancing the other calls while the batch waits, and they join it. The
interval is a few milliseconds, not one: the fewer the transactions and syncs, the less CPU each
call costs, and a saturated loop's calls wait in line far longer than that anyway, so they are
answered sooner, not later. (The README's performance section has the figures.)

Waiting pays only when the event loop is saturated. A client with a few calls in flight puts
them all in the batch at once, and the loop then idles until the timer; well below the maximum
rate every write would be later for no gain. So after each wait the pacer looks at
how much of it the loop's thread spent running or ready to run (LoopThreadDemand), and paces only
while that share, over the recent waits, stays at least SATURATED, a bound that sits between the
share measured under a saturating load and the share at half its rate. The share is a ratio of
moving sums (each keeps 1 - DEMAND_DECAY of itself per wait), so a long wait weighs more than a
short one, and one odd wait does not decide. Once it stops, the pacer tries again
PROBE_INTERVAL_S later: seldom, since below saturation each try delays the few batches it takes
to find out. A write that comes after a quiet spell (more than COMMIT_INTERVAL_S after the last
batch began) never waits.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

COMMIT_INTERVAL_S = 0.003
SATURATED = 0.6
DEMAND_DECAY = 0.1
DEMAND_START = 0.8  # the share assumed when pacing (re)starts: one or two idle waits stop it
PROBE_INTERVAL_S = 1.0

SCHEDSTAT = "/proc/thread-self/schedstat"


class LoopThreadDemand:
    """Seconds the thread that first calls it has been running or ready to run but kept off a
    core: its CPU time, plus (on Linux) the run-queue delay of /proc/thread-self/schedstat.

    CPU time alone would call a saturated loop half idle on a shared machine, where other
    processes often hold the cores it is waiting for.
    """

    def __init__(self) -> None:
        self._schedstat: int | None = None  # descriptor, opened by the thread measured
        self._no_schedstat = False

    def __call__(self) -> float:
        cpu = time.thread_time()
        if self._schedstat is None:
            if self._no_schedstat:
                return cpu
            try:
                self._schedstat = os.open(SCHEDSTAT, os.O_RDONLY)
            except OSError:
                self._no_schedstat = True
                return cpu
        try:
            run_queue_ns = int(os.pread(self._schedstat, 128, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return cpu
        return cpu + run_queue_ns / 1e9

    def close(self) -> None:
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None
        self._no_schedstat = True


class CommitPacer:
    """Decides how long the first write of a batch waits before the batch runs; one per batcher,
    used on the event loop's thread (the thread `demand_clock` measures)."""

    def __init__(
        self,
        interval_s: float = COMMIT_INTERVAL_S,
        saturated: float = SATURATED,
        probe_interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        demand_clock: Callable[[], float] | None = None,
    ) -> None:
        self._interval_s = interval_s
        self._saturated = saturated
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._owned_clock: LoopThreadDemand | None = None  # closed with the pacer
        if demand_clock is None:
            demand_clock = self._owned_clock = LoopThreadDemand()
        self._demand_clock = demand_clock
        self.pacing = False
        self._demand = self._waited = 0.0  # moving sums over the waits
        self._last_start = -math.inf
        self._wait_began: tuple[float, float] | None = None  # (clock, demand_clock) when a wait began
        self._next_probe = -math.inf

    def delay(self) -> float:
        """A write came and no batch is due: seconds until its batch runs (0: the next loop turn)."""
        now = self._clock()
        if not self.pacing:
            if now < self._next_probe:
                return 0.0
            self.pacing = True
            self._demand, self._waited = DEMAND_START * self._interval_s, self._interval_s
        wait = self._last_start + self._interval_s - now
        if wait <= 0:
            return 0.0
        self._wait_began = (now, self._demand_clock())
        return wait

    def batch_starts(self) -> None:
        """A batch is about to run: judge the wait that led to it, if there was one."""
        now = self._clock()
        if self._wait_began is not None:
            began, demand_began = self._wait_began
            self._wait_began = None
            keep = 1 - DEMAND_DECAY
            self._demand = keep * self._demand + (self._demand_clock() - demand_began)
            self._waited = keep * self._waited + (now - began)
            if self._demand < self._saturated * self._waited:
                self.pacing = False
                self._next_probe = now + self._probe_interval_s
        self._last_start = now

    def close(self) -> None:
        if self._owned_clock is not None:
            self._owned_clock.close()
