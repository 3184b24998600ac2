"""The SQLite schema, versioned: each migration runs once, in order, in its own transaction.

Several processes may start at once on one file: BEGIN IMMEDIATE makes the first one
apply a migration while the others wait for the lock, then see it recorded.
"""

from __future__ import annotations

import sqlite3
import time

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
                    (number, name, time.time_ns() // 1_000_000),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version = number
    return version
