"""Commit pacing (gateway/store/commit_pacing.py): under load a batch starts at most once per
interval, a write after a quiet spell never waits, and waits through which the event loop
idled stop the pacing until the next probe."""

from __future__ import annotations

import time

import pytest

from gateway.store.commit_pacing import CommitPacer, LoopThreadDemand

INTERVAL = 0.001
PROBE = 0.5


class Clocks:
    """A wall clock and the loop thread's demand (running or ready to run) that a test moves by hand."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.demand = 10.0

    def work(self, seconds: float) -> None:
        """The loop thread works (or waits for a core) `seconds`."""
        self.wall += seconds
        self.demand += seconds

    def idle(self, seconds: float) -> None:
        """The loop thread waits `seconds` for something to do."""
        self.wall += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def pacer(clocks: Clocks) -> CommitPacer:
    return CommitPacer(
        interval_s=INTERVAL,
        saturated=0.7,
        probe_interval_s=PROBE,
        clock=lambda: clocks.wall,
        demand_clock=lambda: clocks.demand,
    )


def _paced_batch(pacer: CommitPacer, clocks: Clocks, busy: float) -> float:
    """A write comes soon after a batch began, waits as told, and the loop spends `busy` of the
    wait working; the delay the pacer asked for."""
    pacer.batch_starts()
    clocks.work(INTERVAL / 10)
    delay = pacer.delay()
    clocks.work(delay * busy)
    clocks.idle(delay * (1 - busy))
    return delay


def test_a_write_after_a_quiet_spell_runs_at_the_next_loop_turn(pacer: CommitPacer, clocks: Clocks) -> None:
    assert pacer.delay() == 0.0  # the very first write
    pacer.batch_starts()
    clocks.idle(INTERVAL * 2)
    assert pacer.delay() == 0.0


def test_under_load_a_batch_starts_one_interval_after_the_last(pacer: CommitPacer, clocks: Clocks) -> None:
    pacer.batch_starts()
    clocks.work(INTERVAL * 0.3)
    assert pacer.delay() == pytest.approx(INTERVAL * 0.7)


def test_waits_through_which_the_loop_worked_keep_the_pacing(pacer: CommitPacer, clocks: Clocks) -> None:
    pacer.delay()
    for _ in range(50):
        assert _paced_batch(pacer, clocks, busy=0.9) > 0
    assert pacer.pacing


def test_one_wait_the_loop_idled_through_among_busy_ones_does_not_stop_it(
    pacer: CommitPacer, clocks: Clocks
) -> None:
    for busy in [0.9] * 20 + [0.0] + [0.9] * 5:
        _paced_batch(pacer, clocks, busy)
    assert pacer.pacing


def test_waits_the_loop_idled_through_stop_the_pacing_until_the_next_probe(
    pacer: CommitPacer, clocks: Clocks
) -> None:
    pacer.delay()  # the first write starts the pacing
    waits = 0
    while pacer.pacing:
        _paced_batch(pacer, clocks, busy=0.4)  # the loop keeps up: waiting only delays the answers
        waits += 1
        assert waits < 20
    assert waits > 1  # not on one wait's evidence
    step = INTERVAL / 10  # a batch every tenth of the interval: load, but no more pacing
    for _ in range(int(PROBE / step) - 2):
        pacer.batch_starts()
        clocks.work(step)
        assert pacer.delay() == 0.0
    clocks.work(step * 2)
    pacer.batch_starts()
    clocks.work(step)
    assert pacer.delay() > 0  # the probe: pacing again, to see whether it pays now
    assert pacer.pacing


def test_the_loop_threads_demand_counts_its_cpu_time() -> None:
    demand = LoopThreadDemand()
    try:
        before = demand()
        spent = time.thread_time()
        while time.thread_time() - spent < 0.02:
            pass
        assert demand() - before >= 0.02
    finally:
        demand.close()
