"""The SQLite store: one file, WAL mode, safe across processes.

Calls run on the event loop thread: a transaction is a few statements with no `await`
between BEGIN and its last statement, so coroutines never interleave inside one, and no
thread hop is paid per call. Writes are committed in groups (WriteBatcher, sqlite_batch.py):
those that arrive together share one transaction, each in its own savepoint. The connection
never waits for a lock inside SQLite (busy_timeout 0): a batch that finds the database locked
by another process is retried on the event loop until each write's deadline, so the loop
keeps serving, and then fails as Unavailable.

An answer means the change is on disk: with `synchronous=FULL` (the default) every COMMIT
syncs the write-ahead log before it returns, so an answered change survives a power cut, not
only a crash of the process. That sync waits on the disk, so the COMMIT runs on a thread of its
own while the loop goes on serving (and gathering the next batch); reads use a second
connection, which sees a change only once its COMMIT, sync included, is done, and never waits
for the writer's. `synchronous=NORMAL` leaves the sync to checkpoints, and commits on the loop.

WAL checkpoints, the one part of SQLite's work that calls fsync and grows with the
database, run on a thread of their own (WalCheckpointer), never inside a commit on the
event loop thread, where they would stall every request in flight. They start the log over in
its own file rather than empty it, so that a commit's sync overwrites blocks the file already
has, and does not wait for the filesystem's journal as well, as one that lengthens it does.

The files are private: a directory made for the database is 0700, a database created here
0600, and SQLite gives its -wal, -shm and -journal files the database's own mode. An existing
database open to other users is left as it is, with a warning.

The outbox of order events (store/events.py) lives in the same file: a change's event is one more
INSERT in the change's own savepoint, so it commits or rolls back with it, and its id, given out
under the write lock, is its place in the commit order. The event SQL is in sqlite_events.py.
Listeners hear of the commits of this process only: SQLite tells no other process of a commit, so
a watcher of another process's events must poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from gateway.domain.errors import Unavailable
from gateway.store import sqlite_events
from gateway.store.base import Decide, DecideInsertion, HandleRow, StoredRecord, now_ms
from gateway.store.events import (
    ClaimedDelivery,
    DeliveryOutcome,
    EventQuery,
    OutboxStats,
    ReplayedEvent,
    StoredEvent,
    Webhook,
)
from gateway.store.sqlite_batch import WriteBatcher
from gateway.store.sqlite_schema import migrate

T = TypeVar("T")
log = logging.getLogger(__name__)

Synchronous = Literal["full", "normal"]
"""SQLite's `synchronous` in WAL mode. full: an answered change survives a power cut or an OS
crash. normal: it survives a crash of the process, but a power cut may roll back the last
answered changes (never half of one)."""

MIGRATION_BUSY_TIMEOUT_MS = 30_000
PING_WAIT_S = 0.2
EVENT_WRITE_WAIT_S = 10.0
"""How long the outbox's own writes (claims, outcomes, subscriptions) wait for a busy database."""
CHECKPOINT_INTERVAL_S = 0.1
RESTART_FRAMES = 4000  # about 16 MB of log
RESTART_WAIT_MS = 1000
RESTART_RETRY_S = 0.005
PAGE_SIZE = 4096  # SQLite's default, unchanged here
WAL_HEADER_BYTES = 32
WAL_FRAME_HEADER_BYTES = 24

_SELECT_RECORDS = (
    "SELECT id, type, type_index, fulfillment_attempt, status, body FROM orders"
    " WHERE account_id = ? AND order_handle = ?"
)
_UPDATE_RECORD = "UPDATE orders SET status = ?, body = ?, updated_at_ms = ? WHERE id = ?"
_INSERT_RECORD = (
    "INSERT INTO orders (account_id, order_handle, type, type_index, fulfillment_attempt,"
    " status, body, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")


def _make_private_directories(directory: Path) -> None:
    """Create `directory` and its missing parents, each 0700 whatever the umask. A directory
    that already exists keeps the mode its owner gave it."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=PRIVATE_DIRECTORY_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile: its mode is theirs to set
        os.chmod(made, PRIVATE_DIRECTORY_MODE)  # mkdir's mode passes through the umask


def _create_private_file(path: Path) -> bool:
    """Create the database file 0600 before SQLite does, which would make it 0644 under the
    usual umask; False if it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have taken bits away from os.open's mode
    finally:
        os.close(fd)
    return True


def _open_to_others(path: Path) -> list[tuple[Path, int]]:
    """The database and companion files that exist with any permission for group or others."""
    found = []
    for file in (path, *(path.with_name(path.name + suffix) for suffix in COMPANION_SUFFIXES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            found.append((file, mode))
    return found


def _warn_if_open_to_others(path: Path) -> None:
    """Name the files of a database found open to other users, and how to make them private. Run
    before SQLite opens it: the companions it creates take the database's mode, so fixing the
    database fixes them at the next start."""
    loose = _open_to_others(path)
    if loose:
        log.warning(
            "the SQLite database files %s are open to other users; make them private with: chmod 600 %s",
            ", ".join(f"{file} (mode {mode:04o})" for file, mode in loose),
            " ".join(str(file) for file, _ in loose),
        )


def _make_companions_private(path: Path) -> None:
    """SQLite gives the -wal, -shm and -journal files the database's mode; one may be left,
    looser, from an earlier database of the same name."""
    for file, _ in _open_to_others(path):
        os.chmod(file, PRIVATE_FILE_MODE)


def wal_limit_frames(restart_frames: int) -> int:
    """The frames the log file may hold: room for the writes that come while a RESTART waits."""
    return restart_frames * 3 // 2


def wal_bytes(frames: int, page_size: int = PAGE_SIZE) -> int:
    """The size of a write-ahead log file of `frames` frames."""
    return WAL_HEADER_BYTES + frames * (WAL_FRAME_HEADER_BYTES + page_size)


class WalCheckpointer:
    """Copies the write-ahead log back into the database every `interval_s`, on its own thread
    and connection, where the fsync it needs stalls nobody (the sqlite3 module lets go of the GIL
    while SQLite works).

    A PASSIVE checkpoint never waits for or blocks readers and writers; but under steady writes it
    never catches the last frame, and only a checkpoint that does lets the log start over: left
    to itself, the log (and the index SQLite maps into memory for it) would grow without end. Once
    the log holds `restart_frames`, a RESTART checkpoint holds new writers back for the few
    milliseconds the rest takes (they retry asynchronously, as for any lock), and the next writer
    starts the log over from its beginning. One that finds the log busy is tried again
    RESTART_RETRY_S later, until it succeeds.

    RESTART, not TRUNCATE: the log file keeps its size and its blocks, and the next frames
    overwrite them in place. A sync of a commit then waits only for its own pages; one that lengthens
    the file must also commit the new size and blocks to the filesystem's journal (ext4: about twice
    as long, measured). The file's size stays bounded by `limit_bytes`: the writers' PRAGMA
    journal_size_limit cuts it back to that when a commit starts the log over, and should a log
    outgrow it all the same (writers that leave the checkpoint no gap to take the write lock in,
    or that set no limit), the checkpoint that catches up is a TRUNCATE.
    """

    def __init__(
        self,
        path: Path,
        interval_s: float = CHECKPOINT_INTERVAL_S,
        restart_frames: int = RESTART_FRAMES,
        limit_bytes: int | None = None,
    ) -> None:
        self._path = path
        self._wal = path.with_name(path.name + "-wal")
        self._interval_s = interval_s
        self._restart_frames = restart_frames
        self._limit_bytes = (
            wal_bytes(wal_limit_frames(restart_frames)) if limit_bytes is None else limit_bytes
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            # RESTART waits this long for the writer in progress; it never waits inside a commit.
            db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            while not self._stopping.wait(self._interval_s):
                try:
                    self._checkpoint(db)
                except sqlite3.Error as error:  # the next round tries again; the writers go on
                    log.warning("WAL checkpoint failed: %s", error)
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        _, log_frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log_frames < self._restart_frames:
            return
        mode = "RESTART"
        while True:
            if self._wal_size() > self._limit_bytes:
                mode = "TRUNCATE"
            busy, _, _ = db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            if busy:
                if self._stopping.wait(RESTART_RETRY_S):
                    return
            elif mode == "TRUNCATE" or self._wal_size() <= self._limit_bytes:
                return
            # else the log outgrew its bound while the RESTART waited for the writers: cut it too.

    def _wal_size(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


class SqliteStore:
    """OrderStore and EventStore over one SQLite file. Open with `await SqliteStore.open(path)`."""

    def __init__(
        self, writer: sqlite3.Connection, reader: sqlite3.Connection, path: Path, synchronous: Synchronous
    ) -> None:
        self._writer = writer
        self._db = reader
        self.path = path
        self.synchronous = synchronous
        self._listeners: list[Callable[[], None]] = []
        self._delivery_listeners: list[Callable[[], None]] = []
        # Set by a write that added events (to deliver), cleared when the commit that holds them
        # tells the listeners. A batch that fails after it was set makes the next commit tell them
        # for nothing: a wake-up only, which costs a read.
        self._events_written = False
        self._deliveries_written = False
        # Only a COMMIT that syncs is worth the thread hop; without the sync it takes microseconds.
        self._batcher = WriteBatcher(
            writer, commit_in_thread=synchronous == "full", after_commit=self._after_commit
        )
        (wal_limit,) = writer.execute("PRAGMA journal_size_limit").fetchone()
        self._checkpointer = WalCheckpointer(path, limit_bytes=wal_limit)

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: Synchronous = "full") -> SqliteStore:
        path = Path(path)
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be full or normal, not {synchronous!r}")
        try:
            _make_private_directories(path.parent)
            created = _create_private_file(path)
            if not created:
                _warn_if_open_to_others(path)
            writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise Unavailable(
                "STORE_UNAVAILABLE", f"cannot open the SQLite database {path}: {error}"
            ) from error
        reader: sqlite3.Connection | None = None
        try:
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute(f"PRAGMA synchronous={synchronous.upper()}")
            writer.execute("PRAGMA foreign_keys=ON")
            writer.execute(f"PRAGMA busy_timeout={MIGRATION_BUSY_TIMEOUT_MS}")
            migrate(writer)
            writer.execute("PRAGMA busy_timeout=0")
            # Commits never checkpoint: WalCheckpointer does, off the event loop thread.
            writer.execute("PRAGMA wal_autocheckpoint=0")
            # When a commit starts the log over, it cuts the file back to WalCheckpointer's bound,
            # no further: the frames that follow overwrite it in place (see WalCheckpointer).
            (page_size,) = writer.execute("PRAGMA page_size").fetchone()
            writer.execute(
                f"PRAGMA journal_size_limit={wal_bytes(wal_limit_frames(RESTART_FRAMES), page_size)}"
            )
            reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA query_only=ON")
            reader.execute(f"PRAGMA synchronous={synchronous.upper()}")
            reader.execute("PRAGMA busy_timeout=0")
            if created:
                _make_companions_private(path)
        except (OSError, sqlite3.Error) as error:
            writer.close()
            if reader is not None:
                reader.close()
            raise Unavailable(
                "STORE_UNAVAILABLE", f"cannot open the SQLite database {path}: {error}"
            ) from error
        return cls(writer, reader, path, synchronous)

    async def _write(self, work: Callable[[sqlite3.Connection], T], deadline: float) -> T:
        """Run `work` in a write transaction: the next group commit (see WriteBatcher)."""
        return await self._batcher.submit(work, deadline)

    def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run `read` on the reader connection; a database that cannot be read is STORE_UNAVAILABLE."""
        try:
            return read(self._db)
        except sqlite3.OperationalError as error:
            raise Unavailable("STORE_UNAVAILABLE", "the database cannot be read") from error

    def _after_commit(self) -> None:
        if not self._events_written:
            return
        listeners = self._listeners
        if self._deliveries_written:
            listeners = listeners + self._delivery_listeners
        self._events_written = self._deliveries_written = False
        loop = asyncio.get_running_loop()
        for listener in listeners:
            loop.call_soon(listener)  # one that raises is the loop's to report, not the batch's

    @staticmethod
    def _records(db: sqlite3.Connection, account_id: str, handle: str) -> list[StoredRecord]:
        rows = db.execute(_SELECT_RECORDS, (account_id, handle)).fetchall()
        return [StoredRecord._make(row) for row in rows]

    async def read_records(
        self, account_id: str, order_handle: str, *, deadline: float
    ) -> list[StoredRecord]:
        return self._read(lambda db: self._records(db, account_id, order_handle))

    async def change_order(
        self, account_id: str, order_handle: str, decide: Decide[T], *, deadline: float
    ) -> T:
        def work(db: sqlite3.Connection) -> T:
            decision = decide(self._records(db, account_id, order_handle))
            write = decision.write
            if write is not None:
                now = now_ms()
                db.execute(_UPDATE_RECORD, (write.status, write.body, now, write.row_id))
                event = decision.event
                if event is not None:
                    if sqlite_events.insert_event(db, account_id, order_handle, event, now):
                        self._deliveries_written = True
                    self._events_written = True
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
            now = now_ms()
            db.executemany(_INSERT_RECORD, [(account_id, *record, now, now) for record in insertion.records])
            return insertion.answer

        return await self._write(work, deadline)

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT secret_hash FROM accounts WHERE account_id = ?", (account_id,)
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO accounts (account_id, secret_hash, created_at_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (account_id) DO NOTHING",
                (account_id, secret_hash, now_ms()),
            )
            return cursor.rowcount == 1

        return await self._write(work, time.monotonic() + 30)

    async def ping(self) -> None:
        """Answer only if the schema reads and a write transaction starts within a short wait."""

        def probe(db: sqlite3.Connection) -> None:
            db.execute("SELECT 1 FROM schema_migrations LIMIT 1").fetchall()

        await self._write(probe, time.monotonic() + PING_WAIT_S)

    # --- EventStore: the stream and the replay read; delivery and subscriptions write ---------

    async def last_event_id(self) -> int:
        return self._read(sqlite_events.last_event_id)

    async def events_after(
        self, after_id: int, *, limit: int, account_id: str | None = None
    ) -> list[StoredEvent]:
        return self._read(lambda db: sqlite_events.events_after(db, after_id, limit, account_id))

    async def order_events(
        self, account_id: str, order_handle: str, query: EventQuery, *, deadline: float
    ) -> list[ReplayedEvent]:
        return self._read(lambda db: sqlite_events.order_events(db, account_id, order_handle, query))

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def on_deliveries_pending(self, listener: Callable[[], None]) -> None:
        self._delivery_listeners.append(listener)

    async def claim_deliveries(
        self,
        owner: str,
        *,
        now_ms: int,
        lease_ms: int,
        max_deliveries: int,
        max_events: int,
    ) -> list[ClaimedDelivery]:
        def work(db: sqlite3.Connection) -> list[ClaimedDelivery]:
            return sqlite_events.claim_deliveries(
                db,
                owner,
                now_ms=now_ms,
                lease_ms=lease_ms,
                max_deliveries=max_deliveries,
                max_events=max_events,
            )

        return await self._write(work, time.monotonic() + EVENT_WRITE_WAIT_S)

    async def finish_delivery(self, owner: str, delivery_id: str, outcome: DeliveryOutcome) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return sqlite_events.finish_delivery(db, owner, delivery_id, outcome, now_ms())

        return await self._write(work, time.monotonic() + EVENT_WRITE_WAIT_S)

    async def release_deliveries(self, owner: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            return sqlite_events.release_deliveries(db, owner)

        return await self._write(work, time.monotonic() + EVENT_WRITE_WAIT_S)

    async def next_delivery_due_ms(self) -> int | None:
        return self._read(sqlite_events.next_delivery_due_ms)

    async def outbox_stats(self) -> OutboxStats:
        return self._read(sqlite_events.outbox_stats)

    async def set_webhook(self, account_id: str, url: str, secret: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            sqlite_events.set_webhook(db, account_id, url, secret, now_ms())

        await self._write(work, time.monotonic() + EVENT_WRITE_WAIT_S)

    async def webhook(self, account_id: str) -> Webhook | None:
        return self._read(lambda db: sqlite_events.webhook(db, account_id))

    async def remove_webhook(self, account_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return sqlite_events.remove_webhook(db, account_id)

        return await self._write(work, time.monotonic() + EVENT_WRITE_WAIT_S)

    async def close(self) -> None:
        await self._batcher.finish()
        self._batcher.close()
        self._db.close()
        self._writer.close()
        self._checkpointer.stop()
