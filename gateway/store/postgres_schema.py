"""The PostgreSQL schema, versioned: each migration runs once, in order, in its own transaction.

Several processes may start at once on one database: each migration's transaction
first takes a transaction-scoped advisory lock, so one process applies it while the
others wait, then see it recorded and skip it. The lock also covers creating the
`schema_migrations` table itself, since concurrent `CREATE TABLE IF NOT EXISTS` can
still collide in the catalogue.
"""

from __future__ import annotations

import time
from typing import Any

# Any fixed 64-bit number serves, as long as nothing else in the database uses it
# for another purpose: the ASCII of "htgwmigr". The gateway's per-handle locks use
# the two-integer key space, which never overlaps the one-bigint space.
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
                    time.time_ns() // 1_000_000,
                )
        version = number
    return version
