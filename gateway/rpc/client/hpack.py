"""HPACK (RFC 7541) as a gRPC client needs it: decode the server's header blocks, encode requests.

Requests are encoded without the dynamic table: every field is a literal "without indexing",
its name taken from the static table where it is there. That costs a few dozen bytes a call on a
local link and keeps the encoder stateless, so a request's block can be built from a prefix made
once per method. The server's blocks are decoded in full (static and dynamic table, Huffman
strings, size updates), since a server indexes what it sends again.

A gRPC server sends the same few blocks over and over (`:status 200` and the content type; the
trailers `grpc-status: 0`), after the first time as indexes into its dynamic table. A block that
changes nothing in the table means the same thing as long as the table stays as it is, so the
decoder keeps what such blocks decoded to, until the table changes.
"""

from __future__ import annotations

from collections import deque

from gateway.rpc.client.huffman import HuffmanError
from gateway.rpc.client.huffman import decode as huffman_decode

Headers = tuple[tuple[str, str], ...]

DEFAULT_TABLE_SIZE = 4096
ENTRY_OVERHEAD = 32  # octets counted for each entry beyond its name and value (RFC 7541, 4.1)
_MAX_INTEGER = 1 << 32
_CACHE_ENTRIES = 64

STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_STATIC_NAMES = {name: index + 1 for index, (name, _) in reversed(list(enumerate(STATIC_TABLE)))}


class HpackError(ValueError):
    """A header block that does not decode: the connection cannot go on (COMPRESSION_ERROR)."""


# -- decoding ---------------------------------------------------------------------------------


class HeaderDecoder:
    """Decodes the header blocks of one connection, in the order they arrive. `max_table_size` is
    the HEADER_TABLE_SIZE this side announced (the default, 4096, unless it said otherwise)."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._allowed = max_table_size
        self._max_size = max_table_size
        self._entries: deque[tuple[str, str]] = deque()  # newest first: dynamic index 62 is [0]
        self._size = 0
        self._version = 0  # changes with every change to the table
        self._decoded: dict[bytes, Headers] = {}  # blocks that changed nothing, at this version

    def decode(self, block: bytes) -> Headers:
        """The header fields of a block, names and values as latin-1 text; raises HpackError."""
        decoded = self._decoded.get(block)
        if decoded is not None:
            return decoded
        version = self._version
        headers = self._decode(block)
        if self._version == version:
            if len(self._decoded) >= _CACHE_ENTRIES:
                self._decoded.clear()
            self._decoded[bytes(block)] = headers
        else:
            self._decoded.clear()
        return headers

    def _decode(self, block: bytes) -> Headers:
        headers: list[tuple[str, str]] = []
        position, end = 0, len(block)
        fields_seen = False
        try:
            while position < end:
                first = block[position]
                if first & 0x80:  # indexed field
                    index, position = _integer(block, position, 7)
                    headers.append(self._field(index))
                    fields_seen = True
                elif first & 0x40:  # literal with incremental indexing
                    name, value, position = self._literal(block, position, 6)
                    headers.append((name, value))
                    self._add(name, value)
                    fields_seen = True
                elif first & 0x20:  # dynamic table size update: only before the first field
                    if fields_seen:
                        raise HpackError("a table size update after a header field")
                    size, position = _integer(block, position, 5)
                    if size > self._allowed:
                        raise HpackError(f"a table size of {size} is over the {self._allowed} allowed")
                    self._max_size = size
                    self._evict(0)
                    self._version += 1
                else:  # literal without indexing (0000) or never indexed (0001)
                    name, value, position = self._literal(block, position, 4)
                    headers.append((name, value))
                    fields_seen = True
        except IndexError:
            raise HpackError("a header block that ends in the middle of a field") from None
        return tuple(headers)

    def _field(self, index: int) -> tuple[str, str]:
        if 0 < index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dynamic = index - len(STATIC_TABLE) - 1
        if index == 0 or dynamic >= len(self._entries):
            raise HpackError(f"no header table entry {index}")
        return self._entries[dynamic]

    def _literal(self, block: bytes, position: int, prefix_bits: int) -> tuple[str, str, int]:
        index, position = _integer(block, position, prefix_bits)
        if index:
            name = self._field(index)[0]
        else:
            name, position = _string(block, position)
        value, position = _string(block, position)
        return name, value, position

    def _add(self, name: str, value: str) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        self._version += 1
        if size > self._max_size:
            self._entries.clear()  # an entry larger than the table empties it (RFC 7541, 4.4)
            self._size = 0
            return
        self._evict(size)
        self._entries.appendleft((name, value))
        self._size += size

    def _evict(self, room: int) -> None:
        while self._entries and self._size + room > self._max_size:
            name, value = self._entries.pop()
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD


def _integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (RFC 7541, 5.1), and where the block goes on."""
    mask = (1 << prefix_bits) - 1
    value = block[position] & mask
    position += 1
    if value < mask:
        return value, position
    shift = 0
    while True:
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if value >= _MAX_INTEGER:
            raise HpackError("an integer too large for a header block")
        if not byte & 0x80:
            return value, position


def _string(block: bytes, position: int) -> tuple[str, int]:
    huffman = block[position] & 0x80
    length, position = _integer(block, position, 7)
    end = position + length
    if end > len(block):
        raise HpackError("a string longer than its header block")
    raw = block[position:end]
    if huffman:
        try:
            raw = huffman_decode(raw)
        except HuffmanError as error:
            raise HpackError(str(error)) from None
    return bytes(raw).decode("latin-1"), end


# -- encoding ---------------------------------------------------------------------------------


def integer(value: int, prefix_bits: int, first_bits: int = 0) -> bytes:
    """`value` with an N-bit prefix, the bits above the prefix of the first octet set to `first_bits`."""
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first_bits | value,))
    out = bytearray((first_bits | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str, value: str) -> bytes:
    """A literal field without indexing, its name from the static table when it is there. Names
    and values must be ASCII (the caller checks that metadata is)."""
    data = value.encode("ascii")
    return name_of(name) + integer(len(data), 7) + data


def name_of(name: str) -> bytes:
    """The start of a literal field without indexing: its name, by index or as a string. A
    field is this, then its value's length (`integer(n, 7)`), then its value."""
    index = _STATIC_NAMES.get(name)
    if index is not None:
        return integer(index, 4)
    key = name.encode("ascii")
    return b"\x00" + integer(len(key), 7) + key


def indexed(name: str, value: str) -> bytes:
    """A field of the static table, by its index."""
    return integer(STATIC_TABLE.index((name, value)) + 1, 7, 0x80)
