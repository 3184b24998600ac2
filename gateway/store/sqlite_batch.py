"""Group commit for the SQLite store: the writes that arrive together share one transaction.

A write transaction costs its BEGIN IMMEDIATE (taking the file lock) and its COMMIT (appending
every page it changed to the write-ahead log) whatever it holds; under load those two are a
large share of the CPU of a cancel. So a write is not run at once: it joins a batch, and the
batch runs as soon as the event loop has let every ready request reach its own write (under
load, up to a millisecond later, while the loop advances other calls: see commit_pacing.py).
All of a batch runs between one BEGIN and one COMMIT, each write inside a SAVEPOINT of its own, so
one that fails (its decision refused: an unknown order, a state that forbids the change) is rolled
back alone and the others still commit. No write is answered before the COMMIT that holds it: what a caller is
told has happened is on disk (with `synchronous=FULL`, synced to it), and a COMMIT that fails is
reported to every write of its batch, of which nothing was kept.

A COMMIT that syncs waits on the disk (a fraction of a millisecond on a fast SSD, several on a
network volume), so with `commit_in_thread` it runs on a thread of its own: the event loop goes on
serving meanwhile, and the writes that arrive join the next batch, which starts once this COMMIT
is done (one transaction at a time on the connection, one sync per batch).

When one write is alone, its batch is one transaction as before, plus one turn of the event loop.

Another process may hold the write lock (`--workers`, a `migrate`): the connection never waits
for it inside SQLite (busy_timeout 0), the batch is tried again with a growing pause on the event
loop, and a write whose deadline would pass before the next try is answered STORE_BUSY, while
the answer can still reach its caller in time.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.domain.errors import Unavailable
from gateway.store.base import ANSWER_MARGIN_S
from gateway.store.commit_pacing import CommitPacer

T = TypeVar("T")

# Another process's hold of the write lock is one of its batches: its work and, with
# synchronous=full, one sync (a fraction of a millisecond to a few), after which it starts its next
# batch as soon as its loop has gathered one. A waiter that backed off further than that loses
# every race for the lock to it: with 50 ms pauses a `--workers 2` serve made no more requests
# than one worker, and its p99 was 0.9 s. A try that finds the lock taken costs microseconds.
FIRST_RETRY_S = 0.0002
MAX_RETRY_S = 0.001


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _busy_until_deadline() -> Unavailable:
    return Unavailable("STORE_BUSY", "the database stayed busy until the deadline; retry later")


def _not_written() -> Unavailable:
    return Unavailable("STORE_UNAVAILABLE", "the database could not complete the change")


def _cannot_write() -> Unavailable:
    return Unavailable("STORE_UNAVAILABLE", "the database cannot be written")


@dataclass(slots=True)
class _Write:
    work: Callable[[sqlite3.Connection], Any]
    deadline: float
    answer: asyncio.Future[Any]
    outcome: Any = None


class WriteBatcher:
    """Runs the writes submitted to one connection in batches, one transaction per batch.

    With `commit_in_thread` the connection must allow other threads (`check_same_thread=False`):
    the COMMIT runs on the commit thread, everything else on the event loop's. `after_commit` is
    called on the event loop after each COMMIT that succeeded, once its writes are answered: the one
    place that sees every commit, whether or not its callers are still waiting for theirs."""

    def __init__(
        self,
        db: sqlite3.Connection,
        pacer: CommitPacer | None = None,
        *,
        commit_in_thread: bool = False,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._pacer = pacer or CommitPacer()
        self._after_commit = after_commit
        self._waiting: list[_Write] = []
        # A run of the batch is due (next loop turn, or after a busy pause), or a COMMIT is under way.
        self._scheduled = False
        self._delay = FIRST_RETRY_S
        self._committer = (
            ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit") if commit_in_thread else None
        )
        self._committing: asyncio.Future[Any] | None = None

    async def submit(self, work: Callable[[sqlite3.Connection], T], deadline: float) -> T:
        """Run `work` in a write transaction and return what it returned, once committed."""
        loop = asyncio.get_running_loop()
        write = _Write(work, deadline, loop.create_future())
        self._waiting.append(write)
        if not self._scheduled:
            self._scheduled = True
            self._schedule(loop)
        result: T = await write.answer
        return result

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = self._pacer.delay()
        if delay > 0:
            loop.call_later(delay, self._run_batch)
        else:
            loop.call_soon(self._run_batch)

    def _run_batch(self) -> None:
        # A caller that gave up (its task was cancelled) before its turn is not written at all.
        batch = [w for w in self._waiting if not w.answer.done()]
        self._waiting = []
        if not batch:
            self._scheduled = False
            return
        self._pacer.batch_starts()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
                self._retry_later(batch)
            else:
                self._scheduled = False
                _fail(batch, _cannot_write, error)
            return
        self._scheduled = False
        self._delay = FIRST_RETRY_S
        try:
            done = self._run_in_transaction(batch)
            if not self._db.in_transaction:  # its one write failed and was rolled back, or SQLite gave up
                return
            if self._committer is not None:
                self._commit_in_thread(batch, done)
                return
            self._db.execute("COMMIT")
        except BaseException as error:
            # The COMMIT failed (a full disk, say), or something unforeseen broke the batch: nothing of
            # it is kept, every write still waiting hears so, and the connection is left ready for the next.
            self._rollback()
            _fail(batch, _not_written, error)
            if isinstance(error, sqlite3.Error):
                return
            raise
        self._committed_ok(done)

    def _commit_in_thread(self, batch: list[_Write], done: list[_Write]) -> None:
        """COMMIT on the commit thread; the batch is answered when it returns. Until then no batch
        starts (they share the connection): writes that arrive wait for the next one."""
        assert self._committer is not None
        loop = asyncio.get_running_loop()
        committing = self._committing = loop.run_in_executor(self._committer, self._db.execute, "COMMIT")
        self._scheduled = True
        committing.add_done_callback(lambda _: self._committed(loop, batch, done, committing))

    def _committed(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Write],
        done: list[_Write],
        committing: asyncio.Future[Any],
    ) -> None:
        self._committing = None
        error = asyncio.CancelledError() if committing.cancelled() else committing.exception()
        if self._waiting:
            self._schedule(loop)
        else:
            self._scheduled = False
        if error is None:
            self._committed_ok(done)
            return
        # As in _run_batch: nothing of the batch is kept, and every write still waiting hears so.
        self._rollback()
        _fail(batch, _not_written, error)
        if not isinstance(error, sqlite3.Error):
            raise error

    def _committed_ok(self, done: list[_Write]) -> None:
        _answer(done)
        if self._after_commit is not None:
            self._after_commit()

    async def finish(self) -> None:
        """Wait for a COMMIT under way, so that the connection can be closed."""
        committing = self._committing
        if committing is not None:
            await asyncio.wait([committing])

    def _run_in_transaction(self, batch: list[_Write]) -> list[_Write]:
        """Run each write in its own savepoint; the ones that succeeded, to be answered on COMMIT."""
        done: list[_Write] = []
        alone = len(batch) == 1
        for index, write in enumerate(batch):
            if not alone:
                self._db.execute("SAVEPOINT write")
            try:
                write.outcome = write.work(self._db)
            except Exception as error:
                if not self._db.in_transaction:
                    # SQLite rolled the whole transaction back itself (a full disk, an I/O error):
                    # nothing of the batch was kept, and no later write can join it.
                    _fail(done + batch[index:], _not_written, error)
                    return []
                if alone:
                    self._rollback()
                else:
                    self._db.execute("ROLLBACK TO write")
                    self._db.execute("RELEASE write")
                if isinstance(error, sqlite3.Error):
                    _fail([write], _not_written, error)
                else:  # the write's decision refused it: the caller hears that very error
                    write.answer.set_exception(error)
                continue
            if not alone:
                self._db.execute("RELEASE write")
            done.append(write)
        return done

    def _retry_later(self, batch: list[_Write]) -> None:
        """Another process holds the write lock: try again after a pause, but answer STORE_BUSY
        to the writes whose deadline would pass first."""
        pause = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, MAX_RETRY_S)
        latest = time.monotonic() + pause + ANSWER_MARGIN_S
        staying = [w for w in batch if w.deadline > latest]
        _fail([w for w in batch if w.deadline <= latest], _busy_until_deadline, None)
        # Writes that came in meanwhile join the retried batch (after these, keeping their order).
        self._waiting = staying + self._waiting
        if self._waiting:
            asyncio.get_running_loop().call_later(pause, self._run_batch)
        else:
            self._scheduled = False

    def close(self) -> None:
        self._pacer.close()
        if self._committer is not None:
            self._committer.shutdown(wait=True)

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _answer(writes: list[_Write]) -> None:
    for write in writes:
        if not write.answer.done():
            write.answer.set_result(write.outcome)


def _fail(writes: list[_Write], make: Callable[[], Unavailable], cause: BaseException | None) -> None:
    """Answer each write that is still waiting with its own `make()` error, caused by `cause`."""
    for write in writes:
        if not write.answer.done():
            error = make()
            error.__cause__ = cause
            write.answer.set_exception(error)
