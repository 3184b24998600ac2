"""The disk's floor under a durable commit: how long one `fdatasync` of an append takes.

With `--sqlite-synchronous full` (the default) every group commit appends its pages to SQLite's
write-ahead log and waits for one `fdatasync` of it before its writes are answered. No request
that writes can be answered faster than that sync, and a request's p99 at half load cannot fall
below the sync's own tail, whatever the gateway does. This measures the sync alone, on the
benchmark's own directory (the disk its databases are on), at a fixed pace like the commits' at
half load: appends of a few pages to one file, each followed by `os.fdatasync`, the file started
over when it grows past the log's size limit as the checkpointer does. Nothing of the gateway runs.

`python -m bench.disk [DIR]` prints the figures for a directory (default: the system's temporary one).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

APPEND_BYTES = 3 * 4096  # a small batch's WAL frames: the pages of its records, events and indexes
FILE_LIMIT_BYTES = 64 * 1024 * 1024  # then started over, as the checkpointer starts the log over
PACE_PER_S = 300.0  # commits per second at half load (about 2,500 cancels/s in batches of 8)


@dataclass(frozen=True)
class SyncLatency:
    """`fdatasync` after an append: how many were timed, at what pace, and their latencies."""

    syncs: int
    pace_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def fdatasync_latency(directory: Path, syncs: int = 2000, pace_per_s: float = PACE_PER_S) -> SyncLatency:
    """Time `syncs` appends-and-fdatasyncs of one file in `directory`, `pace_per_s` a second."""
    fd, name = tempfile.mkstemp(prefix="fsync-floor-", dir=directory)
    chunk = os.urandom(APPEND_BYTES)
    interval = 1.0 / pace_per_s
    latencies: list[float] = []
    try:
        size = 0
        next_at = time.monotonic()
        for _ in range(syncs):
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the pace of the commits, not a wait for an event
            next_at += interval
            if size >= FILE_LIMIT_BYTES:
                os.lseek(fd, 0, os.SEEK_SET)
                size = 0
            os.write(fd, chunk)
            size += len(chunk)
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        os.unlink(name)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return SyncLatency(syncs, pace_per_s, cuts[49], cuts[98], max(latencies))


def describe(latency: SyncLatency) -> str:
    return (
        f"fdatasync after a {APPEND_BYTES // 1024} KiB append, {latency.syncs} at {latency.pace_per_s:.0f}/s:"
        f" p50 {latency.p50_ms:.2f} ms, p99 {latency.p99_ms:.2f} ms, max {latency.max_ms:.2f} ms"
    )


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir())
    print(describe(fdatasync_latency(where)))
