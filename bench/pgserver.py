"""The benchmark's PostgreSQL: a durable throwaway cluster, and what the table says about it.

The cluster runs with the server's default durability (bench/postgres.py `DURABLE`: every commit
flushed before it is acknowledged), since the rows measure the product as it would be deployed.
The table names the settings as the running server reports them, and the filesystem under its
data: on a tmpfs a flush costs nothing, and the figures would not mean the same.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.postgres import DURABLE, SEARCH_DIRS, Cluster, find_binaries, start_cluster

# What the table reports, read back from the server (SHOW), not from what was asked for.
REPORTED_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "commit_delay",
    "shared_buffers",
    "max_connections",
)
MISSING_BINARIES = (
    "PostgreSQL rows skipped: no PostgreSQL server binaries (initdb and pg_ctl, looked on PATH and in "
    f"{', '.join(SEARCH_DIRS)}); install them (`apt-get install postgresql`) to measure them"
)


@dataclass(frozen=True)
class PostgresInfo:
    """The server the PostgreSQL rows ran on, as it reported itself."""

    version: str
    settings: dict[str, str]
    filesystem: str  # type of the filesystem holding the data directory
    data_dir: str

    def describe(self) -> str:
        shown = ", ".join(f"{name}={value}" for name, value in self.settings.items())
        warning = " (a tmpfs: flushes cost nothing here)" if self.filesystem == "tmpfs" else ""
        return (
            f"PostgreSQL {self.version}, throwaway cluster on 127.0.0.1, data on {self.filesystem}{warning}; "
            f"{shown} (the server's defaults: durability on)"
        )


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` lies on, from the longest matching mount point."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/self/mounts escapes spaces in mount points as \040.
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


async def _show(dsn: str) -> tuple[str, dict[str, str]]:
    connection = await asyncpg.connect(dsn)
    try:
        version = await connection.fetchval("SHOW server_version")
        settings = {name: await connection.fetchval(f"SHOW {name}") for name in REPORTED_SETTINGS}
    finally:
        await connection.close()
    return str(version).split(" ")[0], {name: str(value) for name, value in settings.items()}


@dataclass
class BenchPostgres:
    """The started cluster, the benchmark's database on it, and its description."""

    cluster: Cluster
    dsn: str
    info: PostgresInfo

    @classmethod
    def start(cls, bindir: Path, database: str) -> BenchPostgres:
        """A durable cluster with an empty `database`; raises RuntimeError or PostgresMissing."""
        parent = os.environ.get("HYPERTRACK_BENCH_PG_DIR")  # else the system's temporary directory
        cluster = start_cluster(bindir, DURABLE, parent=parent)
        try:
            dsn = cluster.create_database(database)
            version, settings = asyncio.run(_show(dsn))
        except BaseException:
            cluster.stop()
            raise
        info = PostgresInfo(version, settings, filesystem_of(cluster.data), str(cluster.data))
        return cls(cluster, dsn, info)

    def stop(self, log: Path) -> None:
        self.cluster.stop(keep_log=log)


__all__ = ["MISSING_BINARIES", "BenchPostgres", "PostgresInfo", "find_binaries"]
