"""A PostgreSQL server for tests: the one HYPERTRACK_TEST_POSTGRES_DSN names, or a throwaway one.

Without that variable, `postgres_server()` starts a private server from the local
PostgreSQL binaries with bench/postgres.py (shared with the benchmark): `initdb` into a
temporary directory, `pg_ctl start` on a free loopback port with `trust` authentication
(test-only) and durability switched off (fsync, full-page writes: a crash only loses a
throwaway cluster), and the stop function removes it all again. PostgreSQL refuses to
run as root, so under root the server runs as the `postgres` system user.

`fresh_database(admin_dsn)` gives one test a database of its own, dropped afterwards,
so tests never see each other's rows. The admin DSN's role needs CREATEDB.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from bench import postgres

DSN_ENV = "HYPERTRACK_TEST_POSTGRES_DSN"
REQUIRE_ENV = "HYPERTRACK_REQUIRE_POSTGRES"
SHM_DIR = "/dev/shm"
SHM_MIN_FREE_BYTES = 1 << 30
HOW_TO_RUN = (
    "PostgreSQL tests need a server. Either install the PostgreSQL server binaries "
    "(initdb and pg_ctl: `apt-get install postgresql`, `brew install postgresql`), "
    f"or set {DSN_ENV}=postgresql://USER[:PASSWORD]@HOST:PORT/postgres for a server where USER may "
    f"CREATE DATABASE. With {REQUIRE_ENV}=1 (as CI sets it) these tests fail instead of skipping."
)


class PostgresMissing(Exception):
    """No PostgreSQL server can be had here: neither a DSN nor the binaries to start one."""


@dataclass(frozen=True)
class PostgresServer:
    """A reachable server: `dsn` names its maintenance database; `stop` ends what was started."""

    dsn: str
    stop: Callable[[], None]


def postgres_required() -> bool:
    """Whether a missing server is an error rather than a reason to skip."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def postgres_server() -> PostgresServer:
    """The server of HYPERTRACK_TEST_POSTGRES_DSN, or a throwaway one; PostgresMissing if neither."""
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        return PostgresServer(dsn, lambda: None)
    bindir = postgres.find_binaries()
    if bindir is None:
        raise PostgresMissing(
            f"no PostgreSQL binaries found (looked on PATH and in {', '.join(postgres.SEARCH_DIRS)}). "
            + HOW_TO_RUN
        )
    try:
        cluster = postgres.start_cluster(
            bindir, postgres.NOT_DURABLE, parent=_scratch_dir(), sync_initdb=False
        )
    except postgres.PostgresMissing as error:  # root, and no `postgres` user to run it as
        raise PostgresMissing(f"{error}. {HOW_TO_RUN}") from None
    # immediate: nothing in a throwaway cluster is worth a clean shutdown.
    return PostgresServer(cluster.dsn(), lambda: cluster.stop(mode="immediate"))


def _scratch_dir() -> str | None:
    """Where the throwaway cluster lives: a roomy tmpfs if there is one, else the temp dir.

    On a disk, CREATE DATABASE (once per test) takes 100-300 ms even with fsync off;
    in memory it takes about 10. A small /dev/shm (Docker's default is 64 MB) would
    not hold the cluster, hence the size check.
    """
    try:
        stats = os.statvfs(SHM_DIR)
    except OSError:
        return None
    roomy = stats.f_bavail * stats.f_frsize >= SHM_MIN_FREE_BYTES
    return SHM_DIR if roomy and os.access(SHM_DIR, os.W_OK) else None


def with_database(dsn: str, database: str) -> str:
    """The same DSN naming another database."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(database)))


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str, prefix: str = "hypertrack_test") -> AsyncIterator[str]:
    """A new, empty database for one test (its DSN), dropped afterwards even if still in use."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        # template0 and C: the same empty UTF-8 database whatever the server's defaults.
        await admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
        try:
            yield with_database(admin_dsn, name)
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
