"""A throwaway PostgreSQL cluster: `initdb`, `pg_ctl start` on a free loopback port, and stop.

Shared by the benchmark (durable settings: it measures the product as it would run) and the tests
(tests/pg.py, durability off: a crash only loses a cluster nobody keeps). It needs the server
binaries (`initdb`, `pg_ctl`) on PATH or in a usual install place. PostgreSQL refuses to run as
root, so under root the cluster belongs to, and runs as, the `postgres` system user; its directory
is then made where that user can reach it (a fresh temporary directory, never a root-only one).

Authentication is `trust` on 127.0.0.1 and a private socket directory: these clusters hold nothing
worth protecting and live for one run.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEARCH_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
START_ATTEMPTS = 3
SUPERUSER = "postgres"

# The server's own defaults for durability, passed explicitly all the same, so that a packaged
# postgresql.conf template cannot change what the benchmark says it measured: every commit is
# flushed to disk before it is acknowledged.
DURABLE: Mapping[str, str] = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
# For tests only: nothing is flushed; a crash of the machine would corrupt the cluster.
NOT_DURABLE: Mapping[str, str] = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresMissing(Exception):
    """The cluster cannot be started here: no binaries, or no user to run them as under root."""


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


def free_port() -> int:
    """A loopback TCP port free at the time of asking (it may be taken before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as() -> dict[str, Any]:
    """subprocess arguments that run a command as `postgres` when we are root; {} otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        owner = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresMissing(
            f"running as root, and there is no `{SUPERUSER}` user to run PostgreSQL as "
            f"(PostgreSQL refuses root; `useradd --system {SUPERUSER}`, or run as another user)"
        ) from None
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


@dataclass
class Cluster:
    """A started cluster; `stop()` ends it and removes its directory (idempotent)."""

    bindir: Path
    root: Path
    port: int
    run_as: dict[str, Any] = field(repr=False)
    running: bool = True

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def postmaster_pid(self) -> int:
        """The server's main process: its backends are its children."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def run(self, *command: str, timeout_s: float = STOP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """A command of the cluster's bindir (`createdb`, `pg_ctl` ...), as the cluster's owner."""
        return _run(self.root, self.run_as, [str(self.bindir / command[0]), *command[1:]], timeout_s)

    def create_database(self, name: str) -> str:
        """A new database on the cluster; its DSN."""
        done = self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name} failed ({done.returncode}): {done.stderr.strip()}")
        return self.dsn(name)

    def stop(self, keep_log: Path | None = None, *, mode: str = "fast") -> None:
        """Stop the server, copy its log, remove it all.

        `mode` is pg_ctl's: "fast" rolls back open transactions and shuts down cleanly;
        "immediate" just ends it, for a cluster with nothing worth a clean shutdown (tests).
        """
        if self.running:
            self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(STOP_TIMEOUT_S), "stop")
            self.running = False
        if keep_log is not None and self.log.exists():
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.log, keep_log)
        shutil.rmtree(self.root, ignore_errors=True)


def _run(
    cwd: Path, run_as: dict[str, Any], argv: list[str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False, **run_as
    )


def start_cluster(
    bindir: Path,
    settings: Mapping[str, str],
    *,
    parent: str | None = None,
    sync_initdb: bool = True,
) -> Cluster:
    """initdb + pg_ctl start a private server on 127.0.0.1 with `settings` (`-c name=value`).

    `parent`: where its directory is made (default: the system's temporary directory).
    `sync_initdb=False` lets initdb skip flushing the new cluster: faster, for tests only.
    Raises PostgresMissing under root without a `postgres` user, RuntimeError if it fails.
    """
    run_as = _run_as()
    root = Path(tempfile.mkdtemp(prefix="hypertrack-pg-", dir=parent))
    if run_as:
        os.chown(root, run_as["user"], run_as["group"])
    cluster = Cluster(bindir, root, 0, run_as, running=False)
    try:
        init = cluster.run(
            "initdb", "-D", str(cluster.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C",
            *([] if sync_initdb else ["--no-sync"]), timeout_s=START_TIMEOUT_S,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        # The port is free when chosen but may be taken before the server binds it: retry.
        for _ in range(START_ATTEMPTS):
            cluster.port = free_port()
            options = [
                f"-p {cluster.port}",
                f"-k {shlex.quote(str(root))}",
                "-c listen_addresses=127.0.0.1",
                *(f"-c {name}={value}" for name, value in settings.items()),
            ]
            result = cluster.run(
                "pg_ctl", "-D", str(cluster.data), "-l", str(cluster.log), "-w", "-t", str(START_TIMEOUT_S),
                "-o", " ".join(options), "start", timeout_s=START_TIMEOUT_S + 10,
            )  # fmt: skip
            if result.returncode == 0:
                cluster.running = True
                atexit.register(cluster.stop)  # a backstop should the caller never get to stop it
                return cluster
        text = cluster.log.read_text(errors="replace") if cluster.log.exists() else ""
        raise RuntimeError(
            f"pg_ctl could not start PostgreSQL:\n{result.stdout}\n{result.stderr}\n{text[-4000:]}"
        )
    except BaseException:
        cluster.stop()
        raise
