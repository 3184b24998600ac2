"""`serve` SIGKILLed in the middle of a cancel load, and restarted on the same SQLite file.

1,000 open orders are seeded, 32 cancels at a time go through REST, and the process is killed
without warning once some hundreds have been answered (at three different moments). Restarted
on the same file, the database is intact and every order is either fully cancelled (status,
`cancelled_at`, exactly one `order_cancelled` event) or untouched; every cancel answered 200
before the kill is there; no order that was never asked for changed; and the restarted server
cancels the rest, each exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.faults.figures import Figures
from tests.faults.harness import EPHEMERAL_PORTS, Answers, cancel_load, processes, seeded_database
from tests.faults.ledger import State, audit, integrity

ORDERS = 1000
CONCURRENCY = 32
KILL_AFTER = (150, 450, 750)  # answers before the SIGKILL
ACCOUNT = "faults"


@pytest.mark.parametrize("kill_after", KILL_AFTER)
async def test_sigkill_in_a_cancel_load_leaves_every_order_whole(
    tmp_path: Path, kill_after: int, figures: Figures
) -> None:
    database, auth, handles = seeded_database(tmp_path, ORDERS)
    database_path = tmp_path / "orders.db"
    serve = ("serve", "--database", database, "--no-demo", "--log-level", "warning")
    async with processes(tmp_path) as started:
        gateway = await started.start(*serve, env=EPHEMERAL_PORTS)
        killed = asyncio.Event()

        def kill_when_due(answers: Answers) -> None:
            if answers.answered >= kill_after and not killed.is_set():
                gateway.signal(signal.SIGKILL)
                killed.set()

        load_started = time.monotonic()
        answers = await cancel_load(
            [(gateway.rest_url, h) for h in handles],
            auth=auth,
            concurrency=CONCURRENCY,
            stop=killed,
            on_answer=kill_when_due,
        )
        figures.timing("cancel load until the SIGKILL", time.monotonic() - load_started)
        assert killed.is_set(), "the load ended before the kill"
        assert gateway.wait(timeout=10) == -signal.SIGKILL
        figures.fault("SIGKILL of serve during a cancel load")
        figures.cancels(answers.sent)
        assert set(answers.statuses) <= {200, None}, answers.statuses
        assert answers.not_cancelled_bodies == []
        assert len(answers.ok) >= kill_after

        # Restarted on the same file (its recovery of the WAL is what is checked).
        restarted = await started.start(*serve, env=EPHEMERAL_PORTS)
        assert integrity(database_path) == "ok"
        result = audit(database_path, ACCOUNT, handles, answers.ok)
        figures.checked(len(handles), result.bad)
        assert result.bad == 0, result.describe()
        cancelled = {h for h, s in result.states.items() if s is State.CANCELLED}
        # Cancelled: every order answered 200, and beyond those only orders whose cancel was in
        # flight when the process died; the kill came in the middle.
        assert answers.ok <= cancelled <= answers.ok | answers.unanswered
        assert result.count(State.UNTOUCHED) > 0
        figures.tally("SIGKILL: cancels in flight, never answered", len(answers.unanswered))
        figures.tally("SIGKILL: of those, fully cancelled after the restart", len(cancelled - answers.ok))

        # The restarted server cancels the rest, and again the cancels in doubt: each exactly once.
        again = sorted(set(handles) - answers.ok)
        finished = await cancel_load(
            [(restarted.rest_url, h) for h in again], auth=auth, concurrency=CONCURRENCY
        )
        figures.cancels(finished.sent)
        assert finished.statuses == {200: len(again)}
        assert finished.not_cancelled_bodies == []
    final = audit(database_path, ACCOUNT, handles, set(handles))
    figures.checked(len(handles), final.bad)
    assert final.bad == 0, final.describe()
    assert final.count(State.CANCELLED) == ORDERS
