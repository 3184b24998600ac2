"""The PostgreSQL schema, versioned: each migration runs once, in order, in its own transaction.

Several processes may start at once on one database: each migration's transaction
first takes a transaction-scoped advisory lock, so one process applies it while the
others wait, then see it recorded and skip it. The lock also covers creating the
`schema_migrations` table itself, since concurrent `CREATE TABLE IF NOT EXISTS` can
still collide in the catalogue.
"""

from __future__ import annotations

from typing import Any

from gateway.store.base import now_ms

# Any fixed 64-bit number serves, as long as nothing else in the database uses it
# for another purpose: the ASCII of "htgwmigr". The gateway's per-handle locks use
# the two-integer key space, which never overlaps the one-bigint space; the outbox's
# lock (postgres_events.py) is another number of the one-bigint space.
MIGRATION_LOCK_KEY = 0x6874_6777_6D69_6772

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "accounts and orders",
        """
        CREATE TABLE accounts (
            account_id TEXT PRIMARY KEY,
            secret_hash BYTEA NOT NULL,
            created_at_ms BIGINT NOT NULL
        );
        CREATE TABLE orders (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts (account_id),
            order_handle TEXT NOT NULL,
            type INTEGER NOT NULL,
            type_index INTEGER NOT NULL,
            fulfillment_attempt INTEGER NOT NULL,
            status INTEGER NOT NULL,
            body BYTEA NOT NULL,
            created_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            UNIQUE (account_id, order_handle, type, type_index, fulfillment_attempt)
        );
        """,
    ),
    (
        2,
        "order events and webhooks",
        # The outbox: one row per event, with its delivery's columns (store/events.py). The id is
        # drawn from its sequence (CACHE 1: one value at a time, never a block per session) under
        # the outbox lock of postgres_events.py, so ids ascend in commit order across processes.
        # No foreign key to accounts: the order row the event is written with already names an
        # existing account, and the check would cost every cancel a lookup and a KEY SHARE lock on
        # the account's row, which concurrent cancels of one account would all contend for.
        #
        # Indexes: the watch's (account, id), the replay's (account, handle, id), and two partial
        # ones that hold only pending events, so they stay as small as the backlog: new events
        # (oldest first, for the claim) and deliveries in flight (by delivery, for the claim, the
        # outcome and the release, which lock a delivery's events in id order).
        """
        CREATE TABLE order_events (
            event_id BIGINT GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
            account_id TEXT NOT NULL,
            order_handle TEXT NOT NULL,
            fulfillment_attempt INTEGER NOT NULL,
            value INTEGER NOT NULL,
            recorded_at_us BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            body BYTEA NOT NULL,
            state INTEGER NOT NULL DEFAULT 0,
            delivery_id TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER,
            response_text TEXT,
            next_attempt_ms BIGINT,
            lease_owner TEXT,
            lease_until_ms BIGINT
        );
        CREATE INDEX order_events_watch ON order_events (account_id, event_id);
        CREATE INDEX order_events_replay ON order_events (account_id, order_handle, event_id);
        CREATE INDEX order_events_new ON order_events (event_id) WHERE state = 0 AND delivery_id IS NULL;
        CREATE INDEX order_events_in_flight ON order_events (delivery_id, event_id)
            WHERE state = 0 AND delivery_id IS NOT NULL;
        CREATE TABLE webhooks (
            account_id TEXT PRIMARY KEY REFERENCES accounts (account_id),
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL
        );
        """,
    ),
)

_CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)"
)


async def migrate(connection: Any) -> int:
    """Apply the migrations this database lacks; return its schema version.

    `connection` is an `asyncpg.Connection` (typed loosely: asyncpg ships no types).
    """
    # Fast path, without a lock or any DDL: a database already up to date (the usual
    # start-up, and a read-only one) is only read.
    if await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        applied = {row[0] for row in await connection.fetch("SELECT version FROM schema_migrations")}
        if all(number in applied for number, _, _ in MIGRATIONS):
            return MIGRATIONS[-1][0]
    version = 0
    for number, name, script in MIGRATIONS:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await connection.execute(_CREATE_MIGRATIONS_TABLE)
            done = await connection.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", number)
            if done is None:
                # Without arguments asyncpg sends the script as one simple query, so a
                # migration may hold several statements.
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
                    number,
                    name,
                    now_ms(),
                )
        version = number
    return version
