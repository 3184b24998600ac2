"""CPU time a server spent, from /proc/PID/stat: user + system, of the process and its children.

A server with `--workers N` is a supervisor with worker processes, so the time of every live
descendant counts too, plus the `cutime`/`cstime` each has collected from children it already
reaped. The resolution is one clock tick (usually 10 ms), ample for loads of seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after `comm` (which may hold spaces and parentheses), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # the process has exited meanwhile
        return None
    return text.rpartition(")")[2].split()


def descendants(pid: int) -> list[int]:
    """The live descendants of `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system seconds of these processes and all their descendants, reaped ones included."""
    ticks = 0
    for pid in pids:
        for member in (pid, *descendants(pid)):
            fields = _stat_fields(member)
            if fields is not None:
                # After comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
                ticks += sum(int(value) for value in fields[11:15])
    return ticks / _TICKS_PER_S
