"""Commit pacing (gateway/store/commit_pacing.py): under load a batch starts at most once per
interval, a write after a quiet spell never waits, and waits through which the event loop
idled stop the pacing until the next probe."""

from __future__ import annotations

import pytest

from gateway.store.commit_pacing import CommitPacer

INTERVAL = 0.001
PROBE = 0.5


class Clocks:
    """A wall clock and the loop thread's CPU clock that a test moves by hand."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 10.0

    def work(self, seconds: float) -> None:
        """The loop thread works `seconds`."""
        self.wall += seconds
        self.cpu += seconds

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
        busy_fraction_min=0.25,
        probe_interval_s=PROBE,
        clock=lambda: clocks.wall,
        cpu_clock=lambda: clocks.cpu,
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
        assert _paced_batch(pacer, clocks, busy=0.7) > 0
    assert pacer.pacing


def test_one_wait_the_loop_idled_through_among_busy_ones_does_not_stop_it(
    pacer: CommitPacer, clocks: Clocks
) -> None:
    for busy in [0.8] * 20 + [0.0] + [0.8] * 5:
        _paced_batch(pacer, clocks, busy)
    assert pacer.pacing


def test_waits_the_loop_idled_through_stop_the_pacing_until_the_next_probe(
    pacer: CommitPacer, clocks: Clocks
) -> None:
    pacer.delay()  # the first write starts the pacing
    waits = 0
    while pacer.pacing:
        _paced_batch(pacer, clocks, busy=0.1)  # a few callers, all in the batch: nothing else to do
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
