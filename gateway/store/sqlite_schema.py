"""The SQLite schema, versioned: each migration runs once, in order, in its own transaction.

Several processes may start at once on one file: BEGIN IMMEDIATE makes the first one
apply a migration while the others wait for the lock, then see it recorded.
"""

from __future__ import annotations

import sqlite3

from gateway.store.base import now_ms

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "accounts and orders",
        """
        CREATE TABLE accounts (
            account_id TEXT PRIMARY KEY,
            secret_hash BLOB NOT NULL,
            created_at_ms INTEGER NOT NULL
        );
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts (account_id),
            order_handle TEXT NOT NULL,
            type INTEGER NOT NULL,
            type_index INTEGER NOT NULL,
            fulfillment_attempt INTEGER NOT NULL,
            status INTEGER NOT NULL,
            body BLOB NOT NULL,
            created_at_ms INTEGER NOT NULL,
            updated_at_ms INTEGER NOT NULL,
            UNIQUE (account_id, order_handle, type, type_index, fulfillment_attempt)
        );
        """,
    ),
    (
        2,
        "order events and webhooks",
        # The event id is the rowid: SQLite's one writer gives it out under the write lock, so ids
        # ascend in commit order across processes. Without AUTOINCREMENT it is max(id) + 1, which
        # never goes back as long as the newest event is never deleted; AUTOINCREMENT would cost
        # the cancel an update of sqlite_sequence. No foreign key to accounts: the order row the
        # event is written with already names an existing account, and the check would cost the
        # cancel a lookup.
        #
        # Each insert enters three indexes: the outbox of new and in-flight deliveries (partial:
        # an event leaves it once its delivery has ended), the replay's (account, handle, id), and
        # the watch's (account, id). Deliveries in flight have one more, entered only when claimed:
        # by when they are due (their lease's end while leased, else their next attempt).
        """
        CREATE TABLE order_events (
            id INTEGER PRIMARY KEY,
            account_id TEXT NOT NULL,
            order_handle TEXT NOT NULL,
            fulfillment_attempt INTEGER NOT NULL,
            value INTEGER NOT NULL,
            recorded_at_us INTEGER NOT NULL,
            created_at_ms INTEGER NOT NULL,
            body BLOB NOT NULL,
            state INTEGER NOT NULL DEFAULT 0,
            delivery_id TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER,
            response_text TEXT,
            next_attempt_ms INTEGER,
            lease_owner TEXT,
            lease_until_ms INTEGER
        );
        CREATE INDEX order_events_pending ON order_events (delivery_id, id) WHERE state = 0;
        CREATE INDEX order_events_due ON order_events (coalesce(lease_until_ms, next_attempt_ms), delivery_id)
            WHERE state = 0 AND delivery_id IS NOT NULL;
        CREATE INDEX order_events_replay ON order_events (account_id, order_handle, id);
        CREATE INDEX order_events_watch ON order_events (account_id, id);
        CREATE TABLE webhooks (
            account_id TEXT PRIMARY KEY REFERENCES accounts (account_id),
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL
        );
        """,
    ),
)


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; return its schema version."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)"
    )
    version = 0
    for number, name, script in MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        try:
            applied = db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (number,)).fetchone()
            if applied is None:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
                    (number, name, now_ms()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version = number
    return version
