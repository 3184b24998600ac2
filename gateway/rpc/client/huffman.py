"""The Huffman code of HPACK (RFC 7541, Appendix B): decoding the header strings a server encodes.

The code is canonical, so the bit length of each symbol's code is all it takes to rebuild it:
symbols sorted by (length, symbol) take consecutive codes, shifted left as the length grows.
Decoding walks the bits and, at each length, asks whether the bits so far are one of that length's
codes. Header strings are short and, once in the dynamic table, decoded once per connection, so a
bit at a time is quick enough.
"""

from __future__ import annotations

EOS = 256
# Code length of each symbol 0..255 and of EOS (256), in symbol order, as in Appendix B.
_LENGTHS = bytes(
    [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
        28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5,
        6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6,
        7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23,
        23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
        22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22,
        22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26,
        27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25,
        25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
    ]
)  # fmt: skip
MAX_LENGTH = 30


class HuffmanError(ValueError):
    """A string that is not a valid Huffman encoding (RFC 7541, 5.2)."""


def _canonical() -> tuple[list[int], list[int], list[int], list[int]]:
    """Per code length: the first code, how many codes, where its symbols start in the sorted
    symbol list; and that list."""
    symbols = sorted(range(len(_LENGTHS)), key=lambda s: (_LENGTHS[s], s))
    first = [0] * (MAX_LENGTH + 1)
    count = [0] * (MAX_LENGTH + 1)
    offset = [0] * (MAX_LENGTH + 1)
    code = 0
    length = _LENGTHS[symbols[0]]
    for index, symbol in enumerate(symbols):
        if index:
            code = (code + 1) << (_LENGTHS[symbol] - length)
        length = _LENGTHS[symbol]
        if count[length] == 0:
            first[length], offset[length] = code, index
        count[length] += 1
    return first, count, offset, symbols


_FIRST, _COUNT, _OFFSET, _SYMBOLS = _canonical()
_CODES = {
    symbol: _FIRST[_LENGTHS[symbol]] + rank - _OFFSET[_LENGTHS[symbol]]
    for rank, symbol in enumerate(_SYMBOLS)
}


def code_of(symbol: int) -> tuple[int, int]:
    """(code, bit length) of a symbol."""
    return _CODES[symbol], _LENGTHS[symbol]


def encode(data: bytes) -> bytes:
    """`data` Huffman-encoded, padded with the most significant bits of EOS (all ones). (The client
    sends its strings as they are; this is for tests, which play the server.)"""
    bits = 0
    size = 0
    for byte in data:
        code, length = _CODES[byte], _LENGTHS[byte]
        bits = (bits << length) | code
        size += length
    padding = -size % 8
    bits = (bits << padding) | ((1 << padding) - 1)
    return bits.to_bytes((size + padding) // 8, "big")


def decode(data: bytes) -> bytes:
    """The octets a Huffman-encoded string stands for; raises HuffmanError."""
    out = bytearray()
    code = 0
    length = 0
    first, count, offset, symbols = _FIRST, _COUNT, _OFFSET, _SYMBOLS
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            if count[length] and 0 <= code - first[length] < count[length]:
                symbol = symbols[offset[length] + code - first[length]]
                if symbol == EOS:
                    raise HuffmanError("EOS in a Huffman-encoded string")
                out.append(symbol)
                code = length = 0
            elif length == MAX_LENGTH:
                raise HuffmanError("not a code of the Huffman table")
    # What is left must be padding: fewer than 8 bits, all ones (a prefix of EOS).
    if length > 7 or code != (1 << length) - 1:
        raise HuffmanError("invalid padding in a Huffman-encoded string")
    return bytes(out)
