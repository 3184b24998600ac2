"""A PostgreSQL server for tests: the one HYPERTRACK_TEST_POSTGRES_DSN names, or a throwaway one.

Without that variable, `postgres_server()` starts a private server from the local
PostgreSQL binaries: `initdb` into a temporary directory, `pg_ctl start` on a free
loopback port with `trust` authentication (test-only) and durability switched off
(fsync, full-page writes: a crash only loses a throwaway cluster), and the stop
function removes it all again. PostgreSQL refuses to run as root, so under root the
server runs as the `postgres` system user.

`fresh_database(admin_dsn)` gives one test a database of its own, dropped afterwards,
so tests never see each other's rows. The admin DSN's role needs CREATEDB.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

DSN_ENV = "HYPERTRACK_TEST_POSTGRES_DSN"
REQUIRE_ENV = "HYPERTRACK_REQUIRE_POSTGRES"
SEARCH_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")
START_TIMEOUT_S = 30
SHM_DIR = "/dev/shm"
SHM_MIN_FREE_BYTES = 1 << 30
START_ATTEMPTS = 3
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
    bindir = find_binaries()
    if bindir is None:
        raise PostgresMissing(
            f"no PostgreSQL binaries found (looked on PATH and in {', '.join(SEARCH_DIRS)}). " + HOW_TO_RUN
        )
    return start_server(bindir)


def find_binaries() -> Path | None:
    """A directory holding both initdb and pg_ctl: PATH first, then the usual install places."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    for pattern in SEARCH_DIRS:
        # Newest version first: /usr/lib/postgresql/16/bin before 15.
        found = Path("/").glob(pattern.lstrip("/"))
        candidates.extend(sorted(found, key=_version_key, reverse=True))
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _version_key(path: Path) -> tuple[int, str]:
    digits = "".join(c for c in path.parent.name if c.isdigit())
    return (int(digits) if digits else 0, str(path))


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(bindir: Path) -> PostgresServer:
    """initdb + pg_ctl start a private server on 127.0.0.1; the stop function removes it again."""
    as_user: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="hypertrack-pg-", dir=_scratch_dir()))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresMissing(
                "running as root, and there is no `postgres` user to run the server as. " + HOW_TO_RUN
            ) from None
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    data, log = root / "data", root / "server.log"

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=root, capture_output=True, text=True, check=False, **as_user)

    started = False

    def stop() -> None:
        nonlocal started
        if started:
            # immediate: nothing in a throwaway cluster is worth a clean shutdown.
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
            started = False
        shutil.rmtree(root, ignore_errors=True)

    init = run(
        str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
        "-E", "UTF8", "--locale=C", "--no-sync",
    )  # fmt: skip
    if init.returncode != 0:
        stop()
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
    # The port is free when chosen but may be taken before the server binds it: retry.
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        options = " ".join(
            [
                f"-p {port}",
                f"-k {shlex.quote(str(root))}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        result = run(
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
            "-o", options, "start",
        )  # fmt: skip
        if result.returncode == 0:
            started = True
            atexit.register(stop)  # a backstop should the session end without its teardown
            return PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", stop)
    text = log.read_text(errors="replace") if log.exists() else ""
    stop()
    raise RuntimeError(
        f"pg_ctl could not start PostgreSQL:\n{result.stdout}\n{result.stderr}\n{text[-4000:]}"
    )


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
