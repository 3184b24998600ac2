"""Group commit (gateway/store/sqlite_batch.py): writes that arrive together share one
transaction, each one fails alone, and none is answered before the COMMIT that holds it. Every
test runs with the COMMIT on the event loop (synchronous=NORMAL) and on the commit thread (FULL)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.domain.errors import NotFound, Unavailable
from gateway.store.commit_pacing import CommitPacer
from gateway.store.sqlite_batch import WriteBatcher


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    # As SqliteStore's: the commit thread uses the connection too.
    db = sqlite3.connect(tmp_path / "batch.db", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=0")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, parent INTEGER"
        " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    db.execute("INSERT INTO parent (id) VALUES (1)")
    yield db
    db.close()


MakeBatcher = Callable[..., WriteBatcher]


@pytest.fixture(params=[False, True], ids=["commit-on-loop", "commit-in-thread"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[MakeBatcher]:
    """WriteBatcher(db, ...) with the COMMIT where the parameter puts it; each closed afterwards."""
    made: list[WriteBatcher] = []

    def batcher(db: sqlite3.Connection, pacer: CommitPacer | None = None) -> WriteBatcher:
        made.append(WriteBatcher(db, pacer, commit_in_thread=request.param))
        return made[-1]

    yield batcher
    for batcher_made in made:
        await batcher_made.finish()
        batcher_made.close()


def _rows(path: Path) -> list[int]:
    """The committed rows, as another connection sees them."""
    other = sqlite3.connect(path)
    try:
        return [row[0] for row in other.execute("SELECT id FROM t ORDER BY id")]
    finally:
        other.close()


def _path(db: sqlite3.Connection) -> Path:
    return Path(db.execute("PRAGMA database_list").fetchone()[2])


def _insert(row_id: int, parent: int = 1) -> Callable[[sqlite3.Connection], int]:
    def work(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO t (id, parent) VALUES (?, ?)", (row_id, parent))
        return row_id

    return work


def _later() -> float:
    return time.monotonic() + 5


async def test_writes_submitted_together_share_one_transaction(
    db: sqlite3.Connection, make: MakeBatcher
) -> None:
    begins: list[str] = []
    db.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    batcher = make(db)
    results = await asyncio.gather(*(batcher.submit(_insert(i), _later()) for i in range(20)))
    assert results == list(range(20))
    assert begins == ["BEGIN IMMEDIATE"]
    assert _rows(_path(db)) == list(range(20))


async def test_under_load_a_batch_waits_for_writes_of_later_loop_turns(
    db: sqlite3.Connection, make: MakeBatcher
) -> None:
    begins: list[str] = []
    db.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    # An interval far longer than the few loop turns below take, even on a loaded machine.
    batcher = make(db, CommitPacer(interval_s=0.3))
    assert await batcher.submit(_insert(1), _later()) == 1
    second = asyncio.ensure_future(batcher.submit(_insert(2), _later()))  # soon after a batch began
    for _ in range(3):
        await asyncio.sleep(0)
    third = asyncio.ensure_future(batcher.submit(_insert(3), _later()))
    assert list(await asyncio.gather(second, third)) == [2, 3]
    assert begins == ["BEGIN IMMEDIATE"] * 2
    assert _rows(_path(db)) == [1, 2, 3]


async def test_one_refused_write_is_rolled_back_alone(db: sqlite3.Connection, make: MakeBatcher) -> None:
    def refused(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (id, parent) VALUES (100, 1)")  # written, then undone
        raise NotFound("ORDER_NOT_FOUND", "no such order")

    batcher = make(db)
    outcomes = await asyncio.gather(
        batcher.submit(_insert(1), _later()),
        batcher.submit(refused, _later()),
        batcher.submit(_insert(2), _later()),
        return_exceptions=True,
    )
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], NotFound) and outcomes[1].reason == "ORDER_NOT_FOUND"
    assert _rows(_path(db)) == [1, 2]


async def test_a_failing_statement_is_unavailable_for_its_write_only(
    db: sqlite3.Connection, make: MakeBatcher
) -> None:
    batcher = make(db)
    outcomes = await asyncio.gather(
        batcher.submit(_insert(1), _later()),
        batcher.submit(_insert(1), _later()),  # the same key again
        batcher.submit(_insert(2), _later()),
        return_exceptions=True,
    )
    assert outcomes[0] == 1 and outcomes[2] == 2
    failure = outcomes[1]
    assert isinstance(failure, Unavailable) and failure.reason == "STORE_UNAVAILABLE"
    assert isinstance(failure.__cause__, sqlite3.IntegrityError)
    assert _rows(_path(db)) == [1, 2]


async def test_a_failed_commit_fails_every_write_of_its_batch_and_keeps_nothing(
    db: sqlite3.Connection,
    make: MakeBatcher,
) -> None:
    batcher = make(db)
    # A deferred foreign key is checked at COMMIT: one orphan makes the whole COMMIT fail.
    outcomes = await asyncio.gather(
        batcher.submit(_insert(1), _later()),
        batcher.submit(_insert(2, parent=99), _later()),
        return_exceptions=True,
    )
    assert all(isinstance(o, Unavailable) and o.reason == "STORE_UNAVAILABLE" for o in outcomes)
    assert outcomes[0] is not outcomes[1]  # each caller raises its own exception object
    assert not db.in_transaction
    assert _rows(_path(db)) == []
    assert await batcher.submit(_insert(3), _later()) == 3
    assert _rows(_path(db)) == [3]


async def test_a_write_whose_caller_gave_up_before_its_turn_is_not_run(
    db: sqlite3.Connection, make: MakeBatcher
) -> None:
    batcher = make(db)
    abandoned = asyncio.ensure_future(batcher.submit(_insert(1), _later()))
    kept = asyncio.ensure_future(batcher.submit(_insert(2), _later()))
    await asyncio.sleep(0)  # both are waiting for their batch
    abandoned.cancel()
    assert await kept == 2
    assert abandoned.cancelled()
    assert _rows(_path(db)) == [2]


async def test_a_batch_waits_for_another_writer_and_then_commits(
    db: sqlite3.Connection, make: MakeBatcher
) -> None:
    other = sqlite3.connect(_path(db), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    batcher = make(db)
    pending = asyncio.ensure_future(batcher.submit(_insert(1), _later()))
    await asyncio.sleep(0.05)  # several tries find the lock held
    assert not pending.done()
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(pending, 2) == 1
    assert _rows(_path(db)) == [1]


async def test_a_write_is_answered_busy_before_its_deadline_passes(
    db: sqlite3.Connection, make: MakeBatcher
) -> None:
    other = sqlite3.connect(_path(db), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        batcher = make(db)
        started = time.monotonic()
        patient = asyncio.ensure_future(batcher.submit(_insert(2), _later()))
        with pytest.raises(Unavailable) as raised:
            await batcher.submit(_insert(1), started + 0.2)
        assert raised.value.reason == "STORE_BUSY"
        assert time.monotonic() < started + 0.2
        assert not patient.done()  # the write with a later deadline still waits its turn
    finally:
        other.execute("COMMIT")
        other.close()
    assert await asyncio.wait_for(patient, 2) == 2
    assert _rows(_path(db)) == [2]


class _Unforeseen(BaseException):
    """Not an Exception: nothing on the way handles it."""


async def test_an_unforeseen_failure_rolls_the_batch_back_and_the_next_batch_still_commits(
    db: sqlite3.Connection,
    make: MakeBatcher,
) -> None:
    def breaks(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (id, parent) VALUES (100, 1)")
        raise _Unforeseen

    loop = asyncio.get_running_loop()
    reported: list[BaseException | None] = []
    loop.set_exception_handler(lambda _, context: reported.append(context.get("exception")))
    batcher = make(db)
    together = asyncio.gather(
        batcher.submit(_insert(1), _later()),
        batcher.submit(breaks, _later()),
        return_exceptions=True,
    )
    outcomes = await asyncio.wait_for(together, 5)  # left waiting, they would hang the test
    assert all(isinstance(o, Unavailable) and o.reason == "STORE_UNAVAILABLE" for o in outcomes)
    assert [type(e) for e in reported] == [_Unforeseen]  # raised on, to the event loop's handler
    assert not db.in_transaction
    assert await batcher.submit(_insert(2), _later()) == 2
    assert _rows(_path(db)) == [2]


async def test_a_commit_on_the_commit_thread_leaves_the_event_loop_serving(db: sqlite3.Connection) -> None:
    """A COMMIT that syncs waits on the disk: meanwhile the loop runs, and the write is answered
    only once the COMMIT is done; writes that come meanwhile share the next COMMIT."""
    committing = threading.Event()
    release = threading.Event()

    begins: list[str] = []

    def slow_commit(sql: str) -> None:
        if sql.startswith("BEGIN"):
            begins.append(sql)
        if sql == "COMMIT":  # called on the thread running the COMMIT, as a slow disk would hold it
            committing.set()
            release.wait(5)

    db.set_trace_callback(slow_commit)
    batcher = WriteBatcher(db, commit_in_thread=True)
    try:
        first = asyncio.ensure_future(batcher.submit(_insert(1), _later()))
        # The loop is free while the COMMIT is under way: it runs this wait's own thread hop.
        assert await asyncio.to_thread(committing.wait, 5)
        later = [asyncio.ensure_future(batcher.submit(_insert(i), _later())) for i in (2, 3)]
        for _ in range(20):
            await asyncio.sleep(0)
        assert committing.is_set() and not first.done() and not any(w.done() for w in later)
        committing.clear()
        release.set()
        assert await asyncio.wait_for(first, 5) == 1
        assert await asyncio.wait_for(asyncio.gather(*later), 5) == [2, 3]
        assert begins == ["BEGIN IMMEDIATE"] * 2
    finally:
        release.set()
        await batcher.finish()
        batcher.close()
    assert _rows(_path(db)) == [1, 2, 3]


async def test_a_commit_that_fails_on_the_commit_thread_fails_its_batch_and_the_next_commits(
    db: sqlite3.Connection,
) -> None:
    batcher = WriteBatcher(db, commit_in_thread=True)
    try:
        outcomes = await asyncio.gather(
            batcher.submit(_insert(1), _later()),
            batcher.submit(_insert(2, parent=99), _later()),  # the deferred key fails the COMMIT
            return_exceptions=True,
        )
        assert all(isinstance(o, Unavailable) for o in outcomes)
        first = outcomes[0]
        assert isinstance(first, Unavailable)
        assert isinstance(first.__cause__, sqlite3.IntegrityError)
        assert not db.in_transaction
        assert await batcher.submit(_insert(3), _later()) == 3
    finally:
        await batcher.finish()
        batcher.close()
    assert _rows(_path(db)) == [3]


@pytest.mark.parametrize("in_thread", [False, True], ids=["commit-on-loop", "commit-in-thread"])
async def test_after_commit_hears_of_each_commit_that_succeeded(
    db: sqlite3.Connection, in_thread: bool
) -> None:
    path = _path(db)
    committed: list[list[int]] = []  # what another connection saw when the hook was called
    batcher = WriteBatcher(db, commit_in_thread=in_thread, after_commit=lambda: committed.append(_rows(path)))
    try:
        assert await asyncio.gather(*(batcher.submit(_insert(i), _later()) for i in (1, 2, 3))) == [1, 2, 3]
        assert committed == [[1, 2, 3]]  # one batch, one commit, one call, once it is visible

        def refuse(db: sqlite3.Connection) -> None:
            raise NotFound("NO", "refused")

        with pytest.raises(NotFound):
            await batcher.submit(refuse, _later())  # alone, rolled back: no commit
        outcomes = await asyncio.gather(
            batcher.submit(_insert(4), _later()),
            batcher.submit(_insert(5, parent=99), _later()),  # the deferred key fails the COMMIT
            return_exceptions=True,
        )
        assert all(isinstance(o, Unavailable) for o in outcomes)
        assert committed == [[1, 2, 3]]
        assert await batcher.submit(_insert(6), _later()) == 6
        assert committed == [[1, 2, 3], [1, 2, 3, 6]]
    finally:
        await batcher.finish()
        batcher.close()


async def test_after_commit_hears_of_a_commit_whose_caller_gave_up(db: sqlite3.Connection) -> None:
    """A caller cancelled while its COMMIT is under way is not told, but the commit is still heard
    of: what it wrote is there for whoever the hook wakes."""
    committing = threading.Event()
    release = threading.Event()
    heard = asyncio.Event()

    def slow_commit(sql: str) -> None:
        if sql == "COMMIT":
            committing.set()
            release.wait(5)

    db.set_trace_callback(slow_commit)
    batcher = WriteBatcher(db, commit_in_thread=True, after_commit=heard.set)
    try:
        write = asyncio.ensure_future(batcher.submit(_insert(1), _later()))
        assert await asyncio.to_thread(committing.wait, 5)
        write.cancel()
        release.set()
        await asyncio.wait_for(heard.wait(), 5)
        assert write.cancelled()
    finally:
        release.set()
        await batcher.finish()
        batcher.close()
    assert _rows(_path(db)) == [1]
