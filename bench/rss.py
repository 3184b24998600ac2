"""Resident memory of a server process, from the VmRSS line of /proc/PID/status."""

from __future__ import annotations

from pathlib import Path


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` (the whole process, every thread), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r} for process {pid}")
            return int(value) * 1024
    raise ValueError(f"no VmRSS for process {pid} (a kernel thread, or a zombie?)")
