"""The SQLite store: one file, WAL mode, safe across processes.

Calls run on the event loop thread: a transaction is a few statements with no `await`
between BEGIN and COMMIT, so coroutines sharing the connection never interleave inside
one, and no thread hop is paid per call. Writes are committed in groups (WriteBatcher,
sqlite_batch.py): those that arrive together share one transaction, each in its own
savepoint. The connection never waits for a lock inside SQLite (busy_timeout 0): a batch
that finds the database locked by another process is retried on the event loop until
each write's deadline, so the loop keeps serving, and then fails as Unavailable.

WAL checkpoints, the one part of SQLite's work that calls fsync and grows with the
database, run on a thread of their own (WalCheckpointer), never inside a commit on the
event loop thread, where they would stall every request in flight.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.domain.errors import Unavailable
from gateway.store.base import Decide, DecideInsertion, HandleRow, StoredRecord
from gateway.store.sqlite_batch import WriteBatcher
from gateway.store.sqlite_schema import migrate

T = TypeVar("T")
log = logging.getLogger(__name__)

MIGRATION_BUSY_TIMEOUT_MS = 30_000
PING_WAIT_S = 0.2
CHECKPOINT_INTERVAL_S = 0.1
TRUNCATE_FRAMES = 4000  # about 16 MB of log
TRUNCATE_WAIT_MS = 1000

_SELECT_RECORDS = (
    "SELECT id, type, type_index, fulfillment_attempt, status, body FROM orders"
    " WHERE account_id = ? AND order_handle = ?"
)
_UPDATE_RECORD = "UPDATE orders SET status = ?, body = ?, updated_at_ms = ? WHERE id = ?"
_INSERT_RECORD = (
    "INSERT INTO orders (account_id, order_handle, type, type_index, fulfillment_attempt,"
    " status, body, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class WalCheckpointer:
    """Copies the write-ahead log back into the database every `interval_s`, on its own thread
    and connection, where the fsync it needs stalls nobody (the sqlite3 module lets go of the GIL
    while SQLite works).

    A PASSIVE checkpoint never waits for or blocks readers and writers; but under steady writes it
    never catches the last frame, and only a checkpoint that does lets the log start over: left
    to itself, the log (and the index SQLite maps into memory for it) would grow without end. Once
    the log holds `truncate_frames`, a TRUNCATE checkpoint holds new writers back for the few
    milliseconds the rest takes (they retry asynchronously, as for any lock) and empties it.
    """

    def __init__(
        self, path: Path, interval_s: float = CHECKPOINT_INTERVAL_S, truncate_frames: int = TRUNCATE_FRAMES
    ) -> None:
        self._path = path
        self._interval_s = interval_s
        self._truncate_frames = truncate_frames
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            # TRUNCATE waits this long for the writer in progress; it never waits inside a commit.
            db.execute(f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
            while not self._stopping.wait(self._interval_s):
                try:
                    _, log_frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if log_frames >= self._truncate_frames:
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error as error:  # the next round tries again; the writers go on
                    log.warning("WAL checkpoint failed: %s", error)
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


class SqliteStore:
    """OrderStore over one SQLite file. Open with `await SqliteStore.open(path)`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._batcher = WriteBatcher(connection)
        self._checkpointer = WalCheckpointer(path)

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise Unavailable(
                "STORE_UNAVAILABLE", f"cannot open the SQLite database {path}: {error}"
            ) from error
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives the process being killed; only a power cut may
            # lose the last transactions (never half of one).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute(f"PRAGMA busy_timeout={MIGRATION_BUSY_TIMEOUT_MS}")
            migrate(db)
            db.execute("PRAGMA busy_timeout=0")
            # Commits never checkpoint: WalCheckpointer does, off the event loop thread.
            db.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as error:
            db.close()
            raise Unavailable(
                "STORE_UNAVAILABLE", f"cannot open the SQLite database {path}: {error}"
            ) from error
        return cls(db, path)

    async def _write(self, work: Callable[[sqlite3.Connection], T], deadline: float) -> T:
        """Run `work` in a write transaction: the next group commit (see WriteBatcher)."""
        return await self._batcher.submit(work, deadline)

    def _records(self, account_id: str, handle: str) -> list[StoredRecord]:
        rows = self._db.execute(_SELECT_RECORDS, (account_id, handle)).fetchall()
        return [StoredRecord._make(row) for row in rows]

    async def read_records(
        self, account_id: str, order_handle: str, *, deadline: float
    ) -> list[StoredRecord]:
        try:
            return self._records(account_id, order_handle)
        except sqlite3.OperationalError as error:
            raise Unavailable("STORE_UNAVAILABLE", "the database cannot be read") from error

    async def change_order(
        self, account_id: str, order_handle: str, decide: Decide[T], *, deadline: float
    ) -> T:
        def work(db: sqlite3.Connection) -> T:
            decision = decide(self._records(account_id, order_handle))
            write = decision.write
            if write is not None:
                db.execute(_UPDATE_RECORD, (write.status, write.body, _now_ms(), write.row_id))
            return decision.answer

        return await self._write(work, deadline)

    async def track_orders(
        self, account_id: str, handles: Sequence[str], decide: DecideInsertion[T], *, deadline: float
    ) -> T:
        def work(db: sqlite3.Connection) -> T:
            marks = ",".join("?" * len(handles))
            rows = db.execute(
                "SELECT order_handle, fulfillment_attempt, status FROM orders"
                f" WHERE account_id = ? AND order_handle IN ({marks})",
                (account_id, *handles),
            ).fetchall()
            insertion = decide([HandleRow._make(row) for row in rows])
            now = _now_ms()
            db.executemany(_INSERT_RECORD, [(account_id, *record, now, now) for record in insertion.records])
            return insertion.answer

        return await self._write(work, deadline)

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        try:
            row = self._db.execute(
                "SELECT secret_hash FROM accounts WHERE account_id = ?", (account_id,)
            ).fetchone()
        except sqlite3.OperationalError as error:
            raise Unavailable("STORE_UNAVAILABLE", "the database cannot be read") from error
        return None if row is None else bytes(row[0])

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO accounts (account_id, secret_hash, created_at_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (account_id) DO NOTHING",
                (account_id, secret_hash, _now_ms()),
            )
            return cursor.rowcount == 1

        return await self._write(work, time.monotonic() + 30)

    async def ping(self) -> None:
        """Answer only if the schema reads and a write transaction starts within a short wait."""

        def probe(db: sqlite3.Connection) -> None:
            db.execute("SELECT 1 FROM schema_migrations LIMIT 1").fetchall()

        await self._write(probe, time.monotonic() + PING_WAIT_S)

    async def close(self) -> None:
        self._batcher.close()
        self._db.close()
        self._checkpointer.stop()
