"""File descriptors: the soft limit raised to the hard one at start-up, and the connection caps
derived from the limit in force, so that a flood of connections meets a cap (idle connections
closed, new ones refused) before it meets EMFILE, which would stop the REST and the gRPC listener,
the database and the logs alike."""

from __future__ import annotations

import dataclasses
import logging
import resource
from dataclasses import dataclass

from gateway.rpc.server import ConnectionLimits
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Linux's default fs.nr_open: the most a soft limit may be raised to when the hard one is unlimited.
UNLIMITED_TARGET = 1 << 20
RESERVED_MIN = 64
"""Descriptors kept out of every cap: the database and its journal, the listening sockets, the
event loops' own descriptors, gRPC's internal pipes and threads, the log stream, a backend channel."""
GRPC_MIN = 16


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE in force (an unlimited one counted as UNLIMITED_TARGET)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_TARGET if soft == resource.RLIM_INFINITY else soft


def raise_descriptor_limit() -> int:
    """Raise the soft descriptor limit to the hard one (once per process, before listening); the
    limit it ends with. A limit that cannot be raised is kept, and the caps follow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning(
                "cannot raise the descriptor limit", extra={"soft": soft, "hard": hard, "error": str(error)}
            )
    limit = descriptor_limit()
    log.info(
        "descriptor limit",
        extra={"limit": limit, "hard": "unlimited" if hard == resource.RLIM_INFINITY else hard},
    )
    return limit


@dataclass(frozen=True, slots=True)
class ConnectionCaps:
    """Open connections at most per listener; 0 for a listener the process does not run."""

    rest: int
    grpc: int


def connection_caps(settings: GatewaySettings, limit: int | None = None) -> ConnectionCaps:
    """The caps for the listeners `settings` runs under the descriptor `limit` (the one in force
    by default): `--max-connections` for REST when set; otherwise what is left after a reserve,
    shared three to one between REST and gRPC when one process runs both (the REST side takes
    the public traffic, the gRPC side mostly a few long-lived channels)."""
    limit = descriptor_limit() if limit is None else limit
    usable = max(limit - RESERVED_MIN - limit // 16, 2 * GRPC_MIN)
    wanted = settings.connections.max_connections
    if settings.serves_rest and settings.serves_grpc:
        rest = wanted or usable * 3 // 4
        return ConnectionCaps(rest, max(GRPC_MIN, usable - rest))
    if settings.serves_rest:
        return ConnectionCaps(wanted or usable, 0)
    return ConnectionCaps(0, usable)


def grpc_limits(settings: GatewaySettings) -> ConnectionLimits:
    """The gRPC server's connection limits: `settings.grpc`'s, the cap from the descriptor limit,
    and the REST header timeout as the time a connection gets to start speaking HTTP/2."""
    return dataclasses.replace(
        settings.grpc.connections,
        max_connections=connection_caps(settings).grpc,
        handshake_timeout_s=settings.connections.header_timeout_s,
    )
