"""Admission: who a call comes from, and the limits applied to it before it runs.

The client address of a call is its peer's IP. Only when the peer is named as a trusted proxy (a
reverse proxy in front of REST, a REST front end in front of gRPC) does its forwarding header say
more: the client is then the right-most forwarded address that is not itself a trusted proxy, as
reverse proxies read `X-Forwarded-For`. Nothing is trusted unless named, and an entry that is not
an IP address is never taken as one. Nothing here knows a transport: a gRPC call is a peer string
(`ipv4:1.2.3.4:5678`) and its metadata, a sequence of (key, value) pairs.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.calls.limits import AccountRateLimit, AuthFailureLimit

Metadata = Iterable[tuple[str, str | bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_FOR = "x-forwarded-for"


def metadata_value(metadata: Metadata | None, key: str) -> str | None:
    """The first text value of `key` (keys are lower case, as gRPC delivers them)."""
    for entry_key, value in metadata or ():
        if entry_key == key:
            return value if isinstance(value, str) else None
    return None


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> Address | None:
    """`text` as an IP address, None when it is not one; cached, since the same few addresses come
    back on every request and parsing one is not free."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def is_trusted(host: str, trusted_proxies: tuple[Network, ...]) -> bool:
    """Whether `host` is an IP address inside one of `trusted_proxies`."""
    address = _address(host)
    return address is not None and any(address in network for network in trusted_proxies)


def forwarded_client(peer: str, forwarded: Sequence[str], trusted_proxies: tuple[Network, ...]) -> str:
    """The client behind `peer`, a trusted proxy, from the forwarding headers' values in the order
    they came (each a comma-separated list, the nearest hop last).

    Walks from the right: each trusted hop passes the walk on to the address it names; the first
    address that is not trusted is the client. An entry that is not an IP address ends the walk,
    since every hop left of it may be made up: the last good hop is the client then.
    """
    client = peer
    for value in reversed(forwarded):
        for entry in reversed(value.split(",")):
            address = _address(entry.strip())
            if address is None:
                return client
            client = str(address)
            if not is_trusted(client, trusted_proxies):
                return client
    return client


@dataclass(frozen=True, slots=True)
class Admission:
    """Limits applied to every call before it runs; None turns a limit off. `trusted_proxies` are
    the peers (the REST front ends) whose `x-forwarded-for` names the client; none by default."""

    rate_limit: AccountRateLimit | None = None
    auth_failures: AuthFailureLimit | None = None
    trusted_proxies: tuple[Network, ...] = ()

    def client_address(self, peer: str, metadata: Metadata | None) -> str:
        """The client address of a gRPC call from `peer` (grpc's form) with `metadata`."""
        host = _peer_host(peer)
        if not self.trusted_proxies or not is_trusted(host, self.trusted_proxies):
            return host
        forwarded = [
            value for key, value in metadata or () if key == FORWARDED_FOR and isinstance(value, str)
        ]
        return forwarded_client(host, forwarded, self.trusted_proxies)


@functools.lru_cache(maxsize=4096)
def _peer_host(peer: str) -> str:
    """The host of a gRPC peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`), the peer itself for other
    kinds (`unix:...`); cached, since a connection's peer repeats on every call."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    return rest.rpartition(":")[0].strip("[]")
