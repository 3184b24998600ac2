"""Admission: who a call comes from, and the limits applied to it before it runs.

The client address of a call is its peer's IP, or, when the peer is a trusted proxy (a REST
front end), the `x-forwarded-for` entry that the front end set from its own client. Nothing
here knows a transport: a call is a peer string (gRPC's form, `ipv4:1.2.3.4:5678`) and its
metadata, a sequence of (key, value) pairs.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.calls.limits import AccountRateLimit, AuthFailureLimit

Metadata = Iterable[tuple[str, str | bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IN_PROCESS_PEER = "in-process"
"""The peer of a call from the REST front end in the same process; it says who the client is."""

LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def metadata_value(metadata: Metadata | None, key: str) -> str | None:
    """The first text value of `key` (keys are lower case, as gRPC delivers them)."""
    for entry_key, value in metadata or ():
        if entry_key == key:
            return value if isinstance(value, str) else None
    return None


@dataclass(frozen=True, slots=True)
class Admission:
    """Limits applied to every call before it runs; None turns a limit off."""

    rate_limit: AccountRateLimit | None = None
    auth_failures: AuthFailureLimit | None = None
    trusted_proxies: tuple[Network, ...] = LOOPBACK

    def client_address(self, peer: str, metadata: Metadata | None) -> str:
        host, trusted = _peer_host(peer, self.trusted_proxies)
        if trusted:
            forwarded = metadata_value(metadata, "x-forwarded-for")
            if forwarded:
                return forwarded.rpartition(",")[2].strip()
        return host


@functools.lru_cache(maxsize=4096)
def _peer_host(peer: str, trusted_proxies: tuple[Network, ...]) -> tuple[str, bool]:
    """The IP of a gRPC peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`) and whether it is a trusted
    proxy; cached, since a connection's peer repeats on every call and parsing it is not free."""
    kind, _, rest = peer.partition(":")
    if peer == IN_PROCESS_PEER:
        return peer, True
    if kind not in ("ipv4", "ipv6"):
        return peer, False
    host = rest.rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host, False
    return host, any(address in network for network in trusted_proxies)
