"""A tiny authoritative DNS server for tests: A records of a few names, over UDP, stdlib only.

It answers an A query for a known name with all its addresses, any other query for a
known name (AAAA, TXT, SRV...) with no records, and a query for an unknown name with
NXDOMAIN, so a resolver pointed at it (gRPC's `dns://127.0.0.1:PORT/NAME:PORT`) sees
exactly the addresses the test chose. It counts the queries it answered, by type.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

TYPE_A = 1
TYPE_NAMES = {1: "A", 16: "TXT", 28: "AAAA", 33: "SRV"}
_FLAGS_ANSWER = 0x8400  # QR (a response) and AA (authoritative); the opcode is 0 (a query)
_RCODE_FORMERR, _RCODE_NXDOMAIN = 1, 3
TTL_S = 1


class DnsServer:
    """`records` maps a lower-case name (`orders.test`) to its IPv4 addresses."""

    def __init__(self, records: Mapping[str, Sequence[str]], host: str = "127.0.0.1") -> None:
        self._records = {name.lower().rstrip("."): list(addresses) for name, addresses in records.items()}
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, 0))
        self._socket.settimeout(0.1)
        self.address: tuple[str, int] = self._socket.getsockname()
        self.queries: Counter[tuple[str, str]] = Counter()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    @property
    def authority(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                query, client = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            reply = self.answer(query)
            if reply is not None:
                self._socket.sendto(reply, client)

    def answer(self, query: bytes) -> bytes | None:
        """The reply to one query packet (None for a packet too short to reply to)."""
        if len(query) < 12:
            return None
        (ident, flags, qdcount) = struct.unpack("!HHH", query[:6])
        name, end = _read_name(query, 12)
        if qdcount != 1 or name is None or end + 4 > len(query):
            return struct.pack("!HHHHHH", ident, _FLAGS_ANSWER | _RCODE_FORMERR, 0, 0, 0, 0)
        qtype, qclass = struct.unpack("!HH", query[end : end + 4])
        question = query[12 : end + 4]  # echoed as sent (letter case and all)
        self.queries[(name, TYPE_NAMES.get(qtype, str(qtype)))] += 1
        rd = flags & 0x0100
        addresses = self._records.get(name)
        if addresses is None:
            return struct.pack("!HHHHHH", ident, _FLAGS_ANSWER | rd | _RCODE_NXDOMAIN, 1, 0, 0, 0) + question
        answers = [] if qtype != TYPE_A else addresses
        records = b"".join(
            # 0xC00C: a pointer to the question's name at offset 12.
            struct.pack("!HHHIH", 0xC00C, TYPE_A, qclass, TTL_S, 4) + ipaddress.IPv4Address(a).packed
            for a in answers
        )
        header = struct.pack("!HHHHHH", ident, _FLAGS_ANSWER | rd, 1, len(answers), 0, 0)
        return header + question + records

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.close()


def _read_name(packet: bytes, offset: int) -> tuple[str | None, int]:
    """The name at `offset` of a question (no compression there) and the offset after it."""
    labels: list[str] = []
    while offset < len(packet):
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels).lower(), offset
        if length > 63 or offset + length > len(packet):
            break
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return None, offset


@contextlib.contextmanager
def dns_server(records: Mapping[str, Sequence[str]]) -> Iterator[DnsServer]:
    """A started DnsServer on a free UDP port of 127.0.0.1, stopped on the way out."""
    server = DnsServer(records)
    server.start()
    try:
        yield server
    finally:
        server.stop()
