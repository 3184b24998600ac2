"""When a group commit runs: at the next turn of the event loop, or up to a millisecond later.

Under gRPC load, grpc.aio hands the servicer one call per loop turn, so a batch that runs at the
next turn holds one write (1.15 on average under ghz -c32): every call pays a whole transaction,
and the loop, going round once per call, answers the calls one at a time. Letting a batch start
at most once per COMMIT_INTERVAL_S under load made batches of about 5 writes and took gRPC from
about 3,800 to 5,300 cancels/s on 2 cores (issue 5), because the loop keeps advancing the other
calls while the batch waits, and they join it.

But a client with only a few calls in flight loses by it: all of its calls are in the batch at
once, and the loop then idles until the timer (ghz -c4: 3,300 -> 1,900 cancels/s). So the pacer
waits only while waiting pays: after each wait it looks at how much of it the event loop's
thread spent working (its CPU time over the wall time). A loop that worked through its waits had
other calls to advance, and they joined the batch; a loop that idled waited for nothing, and the
pacer stops waiting, to try again PROBE_INTERVAL_S later. It goes by that share over the recent
waits (CPU time and wait time, each a moving sum that keeps 1 - BUSY_DECAY of itself per wait),
not by one wait: on a shared machine a loop that has work is sometimes kept off its core by
other processes for a wait or two. Long waits weigh more than short ones, which cost little.

A write that comes after a quiet spell (more than COMMIT_INTERVAL_S after the last batch began)
never waits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

COMMIT_INTERVAL_S = 0.001
BUSY_FRACTION_MIN = 0.25
BUSY_DECAY = 0.1
BUSY_START = 0.5  # the share assumed when pacing (re)starts: two or three idle waits stop it
PROBE_INTERVAL_S = 0.5


class CommitPacer:
    """Decides how long the first write of a batch waits before the batch runs; one per batcher,
    used on the event loop's thread (the thread whose CPU time `cpu_clock` reads)."""

    def __init__(
        self,
        interval_s: float = COMMIT_INTERVAL_S,
        busy_fraction_min: float = BUSY_FRACTION_MIN,
        probe_interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self._interval_s = interval_s
        self._busy_fraction_min = busy_fraction_min
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self.pacing = False
        self._busy_cpu = self._busy_wall = 0.0  # moving sums over waits: the loop thread's CPU, wall time
        self._last_start = -math.inf
        self._wait_began: tuple[float, float] | None = None  # (clock, cpu_clock) when a wait began
        self._next_probe = -math.inf

    def delay(self) -> float:
        """A write came and no batch is due: seconds until its batch runs (0: the next loop turn)."""
        now = self._clock()
        if not self.pacing:
            if now < self._next_probe:
                return 0.0
            self.pacing = True
            self._busy_cpu, self._busy_wall = BUSY_START * self._interval_s, self._interval_s
        wait = self._last_start + self._interval_s - now
        if wait <= 0:
            return 0.0
        self._wait_began = (now, self._cpu_clock())
        return wait

    def batch_starts(self) -> None:
        """A batch is about to run: judge the wait that led to it, if there was one."""
        now = self._clock()
        if self._wait_began is not None:
            began, cpu_began = self._wait_began
            self._wait_began = None
            waited = now - began
            keep = 1 - BUSY_DECAY
            self._busy_cpu = keep * self._busy_cpu + (self._cpu_clock() - cpu_began)
            self._busy_wall = keep * self._busy_wall + waited
            if self._busy_cpu < self._busy_fraction_min * self._busy_wall:
                self.pacing = False
                self._next_probe = now + self._probe_interval_s
        self._last_start = now
