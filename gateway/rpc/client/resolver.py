"""The addresses a gRPC target names, as gRPC's naming document spells targets:

- `host:port`, `dns:///host:port`, `dns:host:port`: the system's resolver (every address it
  gives, IPv4 and IPv6); an IP address names itself;
- `dns://server[:port]/host:port`: A and AAAA queries to that DNS server, over UDP;
- `ipv4:a:p,b:q`, `ipv6:[a]:p,[b]:q`: a fixed list.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass

DNS_PORT = 53
DNS_TIMEOUT_S = 2.0
DNS_ATTEMPTS = 2
_TYPE_A, _TYPE_AAAA, _CLASS_IN = 1, 28, 1
_HEADER = struct.Struct("!HHHHHH")
_RECORD = struct.Struct("!HHIH")
_RCODE_NXDOMAIN = 3

Address = tuple[str, int]


class ResolutionError(Exception):
    """The target's name gave no address."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed target: what to put in `:authority` (and check a TLS certificate against), and
    where its addresses come from."""

    authority: str
    host: str
    port: int
    dns_server: Address | None = None
    fixed: tuple[Address, ...] = ()

    @property
    def server_name(self) -> str:
        """The host a TLS certificate must name."""
        return self.host

    @property
    def resolves(self) -> bool:
        """Whether the addresses can change (a name, not addresses)."""
        return not self.fixed


def parse_target(text: str) -> Target:
    """The target `text` names; raises ValueError."""
    if text.startswith(("ipv4:", "ipv6:")):
        fixed = tuple(_host_port(part) for part in text[5:].split(","))
        host, port = fixed[0]
        return Target(_authority(host, port), host, port, fixed=fixed)
    dns_server = None
    rest = text
    if text.startswith("dns:"):
        rest = text[4:]
        if rest.startswith("//"):
            server, _, rest = rest[2:].partition("/")
            if server:
                dns_server = _host_port(server, DNS_PORT)
        else:
            rest = rest.removeprefix("/")
    host, port = _host_port(rest)
    literal = _ip(host)
    return Target(_authority(host, port), host, port, dns_server, fixed=((host, port),) if literal else ())


def _host_port(text: str, default_port: int | None = None) -> Address:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1 or (default_port is None and ":" in text):
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"no port in {text!r}")
        return host, default_port
    port = int(port_text)
    if not host or not 0 < port < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host, port


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(target: Target) -> list[Address]:
    """The target's addresses, in the order found, each once; raises ResolutionError."""
    if target.fixed:
        return list(target.fixed)
    if target.dns_server is None:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise ResolutionError(f"{target.host}: {error}") from None
        hosts = [str(address[4][0]) for address in found]
    else:
        hosts = []
        for kind in (_TYPE_A, _TYPE_AAAA):
            hosts += await query(target.dns_server, target.host, kind)
    addresses = list(dict.fromkeys((host, target.port) for host in hosts))
    if not addresses:
        raise ResolutionError(f"{target.host}: no address")
    return addresses


# -- DNS over UDP ---------------------------------------------------------------------------------


async def query(server: Address, name: str, kind: int) -> list[str]:
    """The addresses of the A (or AAAA) records `server` answers for `name`; [] for none."""
    ident = random.getrandbits(16)
    packet = _HEADER.pack(ident, 0x0100, 1, 0, 0, 0) + _name(name) + struct.pack("!HH", kind, _CLASS_IN)
    for attempt in range(DNS_ATTEMPTS):
        try:
            reply = await _exchange(server, packet, ident)
        except TimeoutError:
            if attempt + 1 == DNS_ATTEMPTS:
                raise ResolutionError(f"{name}: no answer from {server[0]}:{server[1]}") from None
            continue
        except OSError as error:
            raise ResolutionError(f"{name}: {error}") from None
        return _answers(reply, kind)
    return []


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, ident: int) -> None:
        self._ident = ident
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if (
            len(data) >= _HEADER.size
            and int.from_bytes(data[:2], "big") == self._ident
            and not self.future.done()
        ):
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


async def _exchange(server: Address, packet: bytes, ident: int) -> bytes:
    loop = asyncio.get_running_loop()
    transport, reply = await loop.create_datagram_endpoint(lambda: _Reply(ident), remote_addr=server)
    try:
        transport.sendto(packet)
        async with asyncio.timeout(DNS_TIMEOUT_S):
            return await reply.future
    finally:
        transport.close()


def _name(name: str) -> bytes:
    labels = [label.encode("idna") for label in name.rstrip(".").split(".") if label]
    return b"".join(len(label).to_bytes(1, "big") + label for label in labels) + b"\x00"


def _skip_name(data: bytes, position: int) -> int:
    while True:
        length = data[position]
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return position + 2
        position += 1 + length
        if length == 0:
            return position


def _answers(reply: bytes, kind: int) -> list[str]:
    try:
        _, flags, questions, answers, _, _ = _HEADER.unpack_from(reply)
        if flags & 0xF == _RCODE_NXDOMAIN:
            return []
        position = _HEADER.size
        for _ in range(questions):
            position = _skip_name(reply, position) + 4
        found = []
        for _ in range(answers):
            position = _skip_name(reply, position)
            record_type, record_class, _, length = _RECORD.unpack_from(reply, position)
            position += _RECORD.size
            data = reply[position : position + length]
            position += length
            if record_type == kind == _TYPE_A and record_class == _CLASS_IN and length == 4:
                found.append(socket.inet_ntop(socket.AF_INET, data))
            elif record_type == kind == _TYPE_AAAA and record_class == _CLASS_IN and length == 16:
                found.append(socket.inet_ntop(socket.AF_INET6, data))
        return found
    except (IndexError, struct.error):
        return []  # a malformed reply counts as no records
