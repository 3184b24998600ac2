"""Established TCP connections as the kernel counts them (`ss -tinp`): which process holds each
one and how many bytes it has received. The gRPC servers expose no per-server call counts
(no /metrics in grpc-only mode, no log line per call), so the bytes each server's accepted
connections received are the honest measure of how much of a load reached it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_ADDRESS = re.compile(r"^\[?(?:::ffff:)?([0-9.]+)\]?:(\d+)$")
_PID = re.compile(r"pid=(\d+)")
_BYTES_RECEIVED = re.compile(r"\bbytes_received:(\d+)")


@dataclass(frozen=True)
class Connection:
    local: tuple[str, int]
    peer: tuple[str, int]
    pid: int | None
    bytes_received: int
    unread: int  # Recv-Q: bytes the kernel holds that the process has not read yet


def _address(text: str) -> tuple[str, int]:
    match = _ADDRESS.match(text)
    assert match, f"not an IPv4 address and port: {text!r}"
    return match.group(1), int(match.group(2))


def connections(port_filter: str) -> list[Connection]:
    """Established TCP connections matching an ss filter such as `sport = :50051`."""
    ss = shutil.which("ss")
    assert ss is not None, "these tests read TCP counters with `ss` (iproute2): install it"
    result = subprocess.run(
        [ss, "-H", "-t", "-i", "-n", "-p", "state", "established", f"( {port_filter} )"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    found: list[Connection] = []
    lines = result.stdout.splitlines()
    for line, info in zip(lines[::2], lines[1::2], strict=True):
        # Recv-Q Send-Q Local Peer [users:(("name",pid=N,fd=M))]; the tcp_info line follows.
        fields = line.split()
        pid = _PID.search(line)
        received = _BYTES_RECEIVED.search(info)
        found.append(
            Connection(
                _address(fields[2]),
                _address(fields[3]),
                int(pid.group(1)) if pid else None,
                int(received.group(1)) if received else 0,
                int(fields[0]),
            )
        )
    return found


def bytes_received_by_host(port: int) -> Counter[str]:
    """Bytes received so far by the accepted connections of every server listening on `port`,
    by the server's address."""
    totals: Counter[str] = Counter()
    for connection in connections(f"sport = :{port}"):
        totals[connection.local[0]] += connection.bytes_received
    return totals


def unread_by_peer(host: str, port: int) -> dict[tuple[str, int], int]:
    """For the server on `host:port`: the bytes each of its connections holds unread, by peer."""
    return {c.peer: c.unread for c in connections(f"sport = :{port}") if c.local[0] == host}


def peers_by_pid(port: int, pids: Iterable[int]) -> dict[int, set[str]]:
    """The server addresses on `port` that each of the processes `pids` holds a connection to."""
    wanted = {pid: set[str]() for pid in pids}
    for connection in connections(f"dport = :{port}"):
        if connection.pid in wanted:
            wanted[connection.pid].add(connection.peer[0])
    return wanted
