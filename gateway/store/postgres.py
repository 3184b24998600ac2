"""The PostgreSQL store: a connection pool, a transaction per batch of changes, safe across processes.

Many gateway processes may share one database, so every write relies on locks the
server holds, never on anything in this process:

- a change locks the rows of its handle (`SELECT ... FOR UPDATE`) before its
  decision looks at them; a second writer waits (in id order, so that two writers
  always queue the same way), then reads the first one's committed row, so an update
  is never lost and an idempotent rule (cancel twice) never adds a second event;
- a track first takes a transaction-scoped advisory lock per handle, which exists
  even when the handle has no row yet, so two tracks of the same new handle queue
  and the second one sees the first's record: its decision then refuses it
  (ALREADY_EXISTS), exactly as it does when the calls come one after the other.

The concurrent changes of one process share a transaction, with set-based statements
(postgres_batch.py): the same row locks, taken for several handles at once (a handle
another writer holds is left out of the batch and changed alone). Each change that
changes an order writes its event into the outbox in that transaction (postgres_events.py:
the outbox lock that keeps event ids in commit order, the notification other processes
listen for, delivery leases, subscriptions; postgres_listen.py: the listening connection).

READ COMMITTED is enough under those locks; a deadlock (or a serialization failure
should a server default to a stricter level) rolls back the whole transaction, which
is retried with back-off until the call's deadline. Every statement is bounded by the
time left before the deadline. Failures leave this module only as `Unavailable`
(never an asyncpg type). A call's message goes to the API caller, so it says what
happened but not where or why; the cause stays chained for logs. Opening and `ping`
answer operators, so they name the server (never its password) and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from gateway.domain.errors import AlreadyExists, Unavailable
from gateway.store import postgres_events
from gateway.store.base import ANSWER_MARGIN_S, Decide, DecideInsertion, HandleRow, StoredRecord, now_ms
from gateway.store.events import (
    ClaimedDelivery,
    DeliveryOutcome,
    EventQuery,
    OutboxStats,
    ReplayedEvent,
    StoredEvent,
    Webhook,
)
from gateway.store.postgres_base import MIN_COMMIT_S, Work, answer_too_late
from gateway.store.postgres_base import statement_timeout as _timeout
from gateway.store.postgres_batch import ChangeBatcher
from gateway.store.postgres_listen import CommitListener
from gateway.store.postgres_schema import migrate

T = TypeVar("T")
log = logging.getLogger(__name__)

APPLICATION_NAME = "hypertrack-gateway"
FIRST_RETRY_S = 0.001
MAX_RETRY_S = 0.05
CONNECT_TIMEOUT_S = 10.0
MIGRATION_TIMEOUT_S = 60.0
DEFAULT_CALL_S = 5.0
EVENT_CALL_S = 10.0
"""How long the outbox's own calls (reads, claims, outcomes, subscriptions) keep trying."""
PING_TIMEOUT_S = 1.0
# How long a call keeps trying new connections when the server seems gone: long
# enough to replace pooled connections a restart has cut, short enough that calls
# fail fast (and do not pile up) while the server is really down.
RECONNECT_WINDOW_S = 1.0
CLOSE_TIMEOUT_S = 5.0

# Errors after which the whole transaction was rolled back by the server and may
# simply run again.
_RETRYABLE = (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)
# Errors that say the connection (or the server behind it) is gone or not ready:
# before a write began, another connection may well succeed. A pooled connection
# whose server process was terminated while idle fails its next statement with an
# InternalClientError (the protocol got an unsolicited FATAL), so that counts too.
_CONNECTION_LOST = (
    OSError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)
# Everything asyncpg raises: mapped to Unavailable so that nothing of it leaks.
_DATABASE_ERRORS = (
    OSError,
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

_SELECT_RECORDS = (
    "SELECT id, type, type_index, fulfillment_attempt, status, body FROM orders"
    " WHERE account_id = $1 AND order_handle = $2 ORDER BY id"
)
_LOCK_HANDLES = "SELECT pg_advisory_xact_lock(k1, k2) FROM unnest($1::int4[], $2::int4[]) AS t (k1, k2)"
_SELECT_HISTORY = (
    "SELECT order_handle, fulfillment_attempt, status FROM orders"
    " WHERE account_id = $1 AND order_handle = ANY($2::text[]) ORDER BY id FOR UPDATE"
)
_INSERT_ORDERS = (
    "INSERT INTO orders (account_id, order_handle, type, type_index, fulfillment_attempt,"
    " status, body, created_at_ms, updated_at_ms)"
    " SELECT $1, h, t, i, a, s, b, $8, $8"
    " FROM unnest($2::text[], $3::int4[], $4::int4[], $5::int4[], $6::int4[], $7::bytea[])"
    " AS r (h, t, i, a, s, b)"
)
_PING = (
    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on',"
    " (SELECT max(version) FROM schema_migrations)"
)


class _Retry(Exception):
    """Internal: the attempt failed in a way that another attempt may not."""


def _lock_half(text: str) -> int:
    """A stable signed 32-bit number for `text`: the same in every process, unlike hash()."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big", signed=True)


def handle_lock_keys(account_id: str, handles: Sequence[str]) -> list[tuple[int, int]]:
    """The advisory lock keys of an account's handles, sorted so every writer takes them in one order.

    Two numbers per handle use PostgreSQL's two-integer key space (apart from the
    migration lock). Two handles may share a key: they then merely queue together.
    """
    account = _lock_half(account_id)
    return sorted({(account, _lock_half(handle)) for handle in handles})


def describe(dsn: str) -> str:
    """`host:port/database` of a URL, for messages: never its user or password."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        host = parts.hostname or "local socket"
        port = parts.port or 5432
    except ValueError:
        return "an unparsable database URL"
    return f"{host}:{port}/{parts.path.lstrip('/')}"


def _reason(error: BaseException, dsn: str = "") -> str:
    """What went wrong, in words safe to show: the password, if any, is cut out."""
    text = f"{type(error).__name__}: {error}".strip().removesuffix(":")
    with contextlib.suppress(ValueError):
        password = urllib.parse.urlsplit(dsn).password
        if password:
            for secret in {password, urllib.parse.unquote(password)}:
                text = text.replace(secret, "***")
    return text


async def _reset(connection: Any) -> None:
    """What a connection needs before the pool hands it out again. asyncpg's default resets every
    kind of session state (advisory locks, cursors, LISTEN, settings) in a round trip of its own, a
    second transaction per call; the store keeps none of that state (its advisory locks end with
    their transaction), so only a transaction left open would need undoing."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class PostgresStore:
    """OrderStore and EventStore over a PostgreSQL database. Open with `await PostgresStore.open(dsn)`."""

    def __init__(
        self, pool: Any, location: str, dsn: str, connect_timeout_s: float = CONNECT_TIMEOUT_S
    ) -> None:
        self._pool = pool
        self.location = location
        self._listeners: list[Callable[[], None]] = []
        # The payload of this store's notifications, by which it knows (and skips) its own.
        notice = uuid.uuid4().hex

        async def connect() -> Any:
            return await asyncpg.connect(
                dsn,
                timeout=connect_timeout_s,
                command_timeout=None,
                server_settings={"application_name": f"{APPLICATION_NAME} listen"},
            )

        self._commit_listener = CommitListener(
            connect, postgres_events.CHANNEL, notice, self._wake, (TimeoutError, *_DATABASE_ERRORS)
        )
        self._batcher = ChangeBatcher(self._write, notice, self._wake)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> PostgresStore:
        """Connect a pool to `dsn` and bring the schema up to date."""
        location = describe(dsn)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                # No default statement timeout: each call bounds its statements by
                # its own deadline, and a migration may wait for another process.
                command_timeout=None,
                server_settings={"application_name": APPLICATION_NAME},
                reset=_reset,
            )
        except (ValueError, asyncpg.exceptions.ClientConfigurationError):
            # Not chained: a parse error may quote the URL, password and all.
            raise Unavailable("STORE_UNAVAILABLE", f"the PostgreSQL URL is malformed ({location})") from None
        except _DATABASE_ERRORS as error:
            raise Unavailable(
                "STORE_UNAVAILABLE", f"cannot connect to PostgreSQL at {location}: {_reason(error, dsn)}"
            ) from error
        try:
            async with asyncio.timeout(MIGRATION_TIMEOUT_S), pool.acquire() as connection:
                await migrate(connection)
        except (TimeoutError, *_DATABASE_ERRORS) as error:
            pool.terminate()
            raise Unavailable(
                "STORE_UNAVAILABLE",
                f"cannot bring the schema of PostgreSQL at {location} up to date: {_reason(error, dsn)}",
            ) from error
        except BaseException:
            pool.terminate()
            raise
        return cls(pool, location, dsn, connect_timeout_s)

    async def _call(self, work: Work[T], deadline: float, *, write: bool, one_statement: bool = False) -> T:
        """Run `work` on a pooled connection (in one transaction if `write`), retrying until `deadline`.

        A write of `one_statement` needs no BEGIN and COMMIT of its own (a statement is atomic),
        which saves it two round trips; like any write, it is not tried again on another
        connection once it may have been sent."""
        # Stop short of the caller's deadline, so that our 503 reaches it before its own timer
        # fires and turns the answer into a 504.
        deadline -= ANSWER_MARGIN_S
        delay = FIRST_RETRY_S
        reconnect_until = min(deadline, time.monotonic() + RECONNECT_WINDOW_S)
        while True:
            try:
                return await self._attempt(work, deadline, write=write, one_statement=one_statement)
            except _Retry as retry:
                cause = retry.__cause__ or retry
                give_up_at = deadline if isinstance(cause, _RETRYABLE) else reconnect_until
                if time.monotonic() + delay > give_up_at:
                    if isinstance(cause, _RETRYABLE):
                        raise Unavailable(
                            "STORE_BUSY", "the database stayed busy until the deadline; retry later"
                        ) from cause
                    raise Unavailable(
                        "STORE_UNAVAILABLE", "the database cannot be reached; retry later"
                    ) from cause
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, MAX_RETRY_S)

    async def _attempt(self, work: Work[T], deadline: float, *, write: bool, one_statement: bool) -> T:
        try:
            connection = await self._pool.acquire(timeout=_timeout(deadline))
        except TimeoutError as error:
            raise Unavailable(
                "STORE_BUSY", "no database connection came free before the deadline; retry later"
            ) from error
        except _CONNECTION_LOST as error:
            raise _Retry from error
        except _DATABASE_ERRORS as error:
            raise Unavailable("STORE_UNAVAILABLE", "cannot get a database connection") from error
        try:
            if write and one_statement:
                return await work(connection, deadline)
            if write:
                return await self._transaction(connection, work, deadline)
            try:
                return await work(connection, deadline)
            except TimeoutError:
                raise
            except _CONNECTION_LOST as error:
                # A read changes nothing, so it may run again on another connection.
                raise _Retry from error
        except _RETRYABLE as error:
            raise _Retry from error
        except TimeoutError as error:
            raise answer_too_late() from error
        except asyncpg.exceptions.UniqueViolationError as error:
            # Only a writer that skips the handle locks (an older gateway) gets here:
            # the record it meant to create exists already.
            raise AlreadyExists(
                "ORDER_ALREADY_TRACKED",
                "an order of this request was tracked by another call at the same time",
            ) from error
        except _DATABASE_ERRORS as error:
            raise Unavailable("STORE_UNAVAILABLE", "the database could not complete the call") from error
        finally:
            # The pool rolls back what is left open and discards a broken connection. A statement
            # cut short by its timeout may leave the reset waiting on the server's cancellation:
            # asyncpg then terminates the connection itself, and the call's answer stands.
            try:
                await self._pool.release(connection)
            except (TimeoutError, *_DATABASE_ERRORS) as error:
                log.debug("dropped a connection the pool could not reset: %r", error)

    async def _transaction(self, connection: Any, work: Work[T], deadline: float) -> T:
        try:
            await connection.execute("BEGIN", timeout=_timeout(deadline))
        except TimeoutError:
            raise
        except _CONNECTION_LOST as error:
            # Typically a pooled connection the server has closed meanwhile; nothing
            # was written, so another connection may try.
            raise _Retry from error
        try:
            result = await work(connection, deadline)
        except BaseException:
            # The original error is the one that matters; a rollback that fails has
            # lost its connection, and the server rolls back on its own then.
            with contextlib.suppress(*_DATABASE_ERRORS):
                await connection.execute("ROLLBACK", timeout=MIN_COMMIT_S)
            raise
        await connection.execute("COMMIT", timeout=_timeout(deadline, MIN_COMMIT_S))
        return result

    async def read_records(
        self, account_id: str, order_handle: str, *, deadline: float
    ) -> list[StoredRecord]:
        async def work(connection: Any, deadline: float) -> list[StoredRecord]:
            rows = await connection.fetch(
                _SELECT_RECORDS, account_id, order_handle, timeout=_timeout(deadline)
            )
            return [StoredRecord._make(row) for row in rows]

        return await self._call(work, deadline, write=False)

    async def _write(self, work: Work[T], deadline: float) -> T:
        return await self._call(work, deadline, write=True)

    async def change_order(
        self, account_id: str, order_handle: str, decide: Decide[T], *, deadline: float
    ) -> T:
        """In the next batch of this process's changes (postgres_batch.py), with its event."""
        return await self._batcher.change(account_id, order_handle, decide, deadline)

    async def track_orders(
        self, account_id: str, handles: Sequence[str], decide: DecideInsertion[T], *, deadline: float
    ) -> T:
        keys = handle_lock_keys(account_id, handles)

        async def work(connection: Any, deadline: float) -> T:
            await connection.execute(
                _LOCK_HANDLES, [k for k, _ in keys], [k for _, k in keys], timeout=_timeout(deadline)
            )
            rows = await connection.fetch(
                _SELECT_HISTORY, account_id, list(handles), timeout=_timeout(deadline)
            )
            insertion = decide([HandleRow._make(row) for row in rows])
            if insertion.records:
                # One array per column, in NewRecord's order: handle, type, index, attempt, status, body.
                columns = [list(column) for column in zip(*insertion.records, strict=True)]
                await connection.execute(
                    _INSERT_ORDERS, account_id, *columns, now_ms(), timeout=_timeout(deadline)
                )
            return insertion.answer

        return await self._call(work, deadline, write=True)

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        async def work(connection: Any, deadline: float) -> bytes | None:
            value = await connection.fetchval(
                "SELECT secret_hash FROM accounts WHERE account_id = $1",
                account_id,
                timeout=_timeout(deadline),
            )
            return None if value is None else bytes(value)

        return await self._call(work, time.monotonic() + DEFAULT_CALL_S, write=False)

    async def create_account(self, account_id: str, secret_hash: bytes) -> bool:
        async def work(connection: Any, deadline: float) -> bool:
            created = await connection.fetchval(
                "INSERT INTO accounts (account_id, secret_hash, created_at_ms) VALUES ($1, $2, $3)"
                " ON CONFLICT (account_id) DO NOTHING RETURNING true",
                account_id,
                secret_hash,
                now_ms(),
                timeout=_timeout(deadline),
            )
            return created is not None

        return await self._call(work, time.monotonic() + DEFAULT_CALL_S, write=True)

    async def ping(self) -> None:
        """Answer only if the schema reads and the server takes writes (no standby), within a short wait."""

        async def probe(connection: Any, deadline: float) -> None:
            read_only, version = await connection.fetchrow(_PING, timeout=_timeout(deadline))
            if read_only:
                raise Unavailable("STORE_READ_ONLY", "the database takes no writes (a standby, or read-only)")
            if version is None:
                raise Unavailable("STORE_UNAVAILABLE", "the database has no schema")

        try:
            await self._call(probe, time.monotonic() + PING_TIMEOUT_S, write=False)
        except Unavailable as error:
            # Only operators see a ping's answer (health checks log it), so it may say
            # which server and what went wrong; a call's error goes to the caller as is.
            cause = f": {_reason(error.__cause__)}" if error.__cause__ is not None else ""
            raise Unavailable(
                error.reason, f"{error.message} (PostgreSQL at {self.location}{cause})", error.metadata
            ) from error.__cause__

    # --- EventStore -------------------------------------------------------------------------------

    async def _event_call(self, work: Work[T], *, write: bool, one_statement: bool = False) -> T:
        return await self._call(
            work, time.monotonic() + EVENT_CALL_S, write=write, one_statement=one_statement
        )

    async def last_event_id(self) -> int:
        return await self._event_call(postgres_events.last_event_id, write=False)

    async def events_after(
        self, after_id: int, *, limit: int, account_id: str | None = None
    ) -> list[StoredEvent]:
        return await self._event_call(
            lambda c, d: postgres_events.events_after(c, d, after_id, limit, account_id), write=False
        )

    async def order_events(
        self, account_id: str, order_handle: str, query: EventQuery, *, deadline: float
    ) -> list[ReplayedEvent]:
        return await self._call(
            lambda c, d: postgres_events.order_events(c, d, account_id, order_handle, query),
            deadline,
            write=False,
        )

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each commit that wrote events: this process's own, and (through
        the listening connection, opened with the first listener) every other process's on the
        database. A wake-up only (see postgres_listen.py): the caller also polls, modestly."""
        self._listeners.append(listener)
        self._commit_listener.start()

    def on_deliveries_pending(self, listener: Callable[[], None]) -> None:
        """As `on_events_committed`: a notification does not say whether its events are to be
        delivered (a claim that finds none costs one statement)."""
        self.on_events_committed(listener)

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.call_soon(listener)  # one that raises is the loop's to report, not the commit's

    async def claim_deliveries(
        self,
        owner: str,
        *,
        now_ms: int,
        lease_ms: int,
        max_deliveries: int,
        max_events: int,
    ) -> list[ClaimedDelivery]:
        return await self._event_call(
            lambda c, d: postgres_events.claim_deliveries(
                c,
                d,
                owner,
                now_ms=now_ms,
                lease_ms=lease_ms,
                max_deliveries=max_deliveries,
                max_events=max_events,
            ),
            write=True,
        )

    async def finish_delivery(self, owner: str, delivery_id: str, outcome: DeliveryOutcome) -> bool:
        return await self._event_call(
            lambda c, d: postgres_events.finish_delivery(c, d, owner, delivery_id, outcome, now_ms=now_ms()),
            write=True,
            one_statement=True,
        )

    async def release_deliveries(self, owner: str) -> int:
        return await self._event_call(
            lambda c, d: postgres_events.release_deliveries(c, d, owner), write=True, one_statement=True
        )

    async def next_delivery_due_ms(self) -> int | None:
        return await self._event_call(postgres_events.next_delivery_due_ms, write=False)

    async def outbox_stats(self) -> OutboxStats:
        return await self._event_call(postgres_events.outbox_stats, write=False)

    async def set_webhook(self, account_id: str, url: str, secret: str) -> None:
        await self._event_call(
            lambda c, d: postgres_events.set_webhook(c, d, account_id, url, secret, now_ms=now_ms()),
            write=True,
            one_statement=True,
        )

    async def webhook(self, account_id: str) -> Webhook | None:
        return await self._event_call(lambda c, d: postgres_events.webhook(c, d, account_id), write=False)

    async def remove_webhook(self, account_id: str) -> bool:
        return await self._event_call(
            lambda c, d: postgres_events.remove_webhook(c, d, account_id), write=True, one_statement=True
        )

    async def close(self) -> None:
        """Stop listening, let the batches in flight finish, close the pool (waiting a little for
        calls in flight); then cut what is left."""
        await self._commit_listener.close()
        try:
            await asyncio.wait_for(self._batcher.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("batches of changes still in flight at close")
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            self._pool.terminate()
