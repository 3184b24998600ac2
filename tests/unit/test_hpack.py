"""HPACK of the gRPC client: the Huffman code, decoding (RFC 7541's examples, and blocks made by
the `hpack` package's encoder with its dynamic table), and the literals requests are made of."""

from __future__ import annotations

import hpack as reference
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rpc.client import huffman
from gateway.rpc.client.hpack import STATIC_TABLE, HeaderDecoder, HpackError, indexed, integer, literal

# -- Huffman ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [  # RFC 7541, C.4.1 to C.4.3 and C.6.1
        (b"www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
        (b"no-cache", "a8eb10649cbf"),
        (b"custom-key", "25a849e95ba97d7f"),
        (b"custom-value", "25a849e95bb8e8b4bf"),
        (b"302", "6402"),
        (b"private", "aec3771a4b"),
        (b"Mon, 21 Oct 2013 20:13:21 GMT", "d07abe941054d444a8200595040b8166e082a62d1bff"),
        (b"https://www.example.com", "9d29ad171863c78f0b97c8e9ae82ae43d3"),
    ],
)
def test_the_rfc_examples_encode_and_decode(text: bytes, encoded: str) -> None:
    assert huffman.encode(text).hex() == encoded
    assert huffman.decode(bytes.fromhex(encoded)) == text


def test_every_octet_round_trips_and_matches_the_reference_code() -> None:
    every = bytes(range(256))
    encoder = reference.huffman.HuffmanEncoder(
        reference.huffman_constants.REQUEST_CODES, reference.huffman_constants.REQUEST_CODES_LENGTH
    )
    assert huffman.encode(every) == encoder.encode(every)
    assert huffman.decode(huffman.encode(every)) == every
    for symbol in range(257):
        assert huffman.code_of(symbol) == (
            reference.huffman_constants.REQUEST_CODES[symbol],
            reference.huffman_constants.REQUEST_CODES_LENGTH[symbol],
        )


@pytest.mark.parametrize(
    "encoded",
    [
        "ffffffff",  # 32 ones: longer than any code, and the start of EOS
        "f1e3c2e5f23a6ba0ab90f400",  # padding of zeros, not ones
        "f1e3c2e5f23a6ba0ab90f4ffff",  # a whole octet of padding
    ],
)
def test_invalid_huffman_strings_are_refused(encoded: str) -> None:
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(bytes.fromhex(encoded))


# -- decoding -----------------------------------------------------------------------------------


def test_the_static_table_is_the_rfcs() -> None:
    assert [
        (name.decode(), value.decode()) for name, value in reference.table.HeaderTable.STATIC_TABLE
    ] == list(STATIC_TABLE)


def test_the_rfc_request_examples_decode_in_sequence() -> None:
    """RFC 7541, C.4: three requests on one connection, Huffman-encoded, with the dynamic table."""
    decoder = HeaderDecoder()
    assert decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")) == (
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    )
    assert decoder.decode(bytes.fromhex("828684be5886a8eb10649cbf")) == (
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    )
    assert decoder.decode(bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")) == (
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    )


def test_the_rfc_response_examples_evict_from_a_small_table() -> None:
    """RFC 7541, C.6: three responses with a table of 256 octets, entries evicted as it fills."""
    decoder = HeaderDecoder(max_table_size=256)
    first = "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3"
    assert decoder.decode(bytes.fromhex(first)) == (
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    )
    assert decoder.decode(bytes.fromhex("4883640effc1c0bf")) == (
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    )
    third = (
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af2708"
        "7f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"
    )
    assert decoder.decode(bytes.fromhex(third)) == (
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
    )


def test_a_block_that_reads_the_table_is_read_again_after_the_table_changes() -> None:
    """The same bytes, an index into the dynamic table, mean what the table holds at the time:
    the decoder's memory of blocks it decoded must not outlive a change to the table."""
    decoder = HeaderDecoder()
    index_62 = bytes([0x80 | 62])
    assert decoder.decode(literal_with_indexing("grpc-status", "0")) == (("grpc-status", "0"),)
    assert decoder.decode(index_62) == (("grpc-status", "0"),)
    assert decoder.decode(index_62) == (("grpc-status", "0"),)
    decoder.decode(literal_with_indexing("grpc-status", "5"))
    assert decoder.decode(index_62) == (("grpc-status", "5"),)
    assert decoder.decode(bytes([0x80 | 63])) == (("grpc-status", "0"),)


def literal_with_indexing(name: str, value: str) -> bytes:
    return b"\x40" + integer(len(name), 7) + name.encode() + integer(len(value), 7) + value.encode()


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        (bytes([0x80]), "index 0"),
        (bytes([0x80 | 62]), "an empty dynamic table"),
        (bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), "an index past 2**32"),
        (b"\x3f\xe2\x1f", "a size update over the 4096 allowed"),
        (b"\x82\x20", "a size update after a field"),
        (b"\x40\x05ab", "a name cut short"),
        (b"\x00", "a literal without its name"),
        (b"\x00\x81\xff\x01a", "a Huffman name that does not decode"),
    ],
)
def test_malformed_blocks_are_refused(block: bytes, problem: str) -> None:
    with pytest.raises(HpackError):
        HeaderDecoder().decode(block)


def test_a_table_size_update_evicts_and_an_oversized_entry_empties_the_table() -> None:
    decoder = HeaderDecoder()
    decoder.decode(literal_with_indexing("a", "1"))
    decoder.decode(literal_with_indexing("b", "2"))
    decoder.decode(b"\x20")  # size 0: everything goes
    with pytest.raises(HpackError):
        decoder.decode(bytes([0x80 | 62]))
    decoder.decode(b"\x3f\x11" + literal_with_indexing("c", "3"))  # size 48: room for one small entry
    assert decoder.decode(bytes([0x80 | 62])) == (("c", "3"),)
    assert decoder.decode(literal_with_indexing("long-name", "x" * 100)) == (("long-name", "x" * 100),)
    with pytest.raises(HpackError):  # larger than the table: it emptied it, and is not in it
        decoder.decode(bytes([0x80 | 62]))


header_names = st.sampled_from(
    [":status", "content-type", "grpc-status", "grpc-message", "grpc-status-details-bin", "x-custom", "date"]
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.tuples(header_names, header_values), max_size=8), min_size=1, max_size=12),
    st.sampled_from([64, 256, 4096]),
    st.booleans(),
)
def test_blocks_of_the_reference_encoder_decode_to_what_it_encoded(
    blocks: list[list[tuple[str, str]]], table_size: int, use_huffman: bool
) -> None:
    """A server's encoder indexes what it sends again, evicts as its table fills, Huffman-encodes
    strings or not: whatever it does, the decoder follows it, block after block."""
    encoder = reference.Encoder()
    encoder.header_table_size = table_size
    decoder = HeaderDecoder()
    for headers in blocks:
        block = encoder.encode(headers, huffman=use_huffman)
        assert decoder.decode(block) == tuple(headers)


# -- encoding -----------------------------------------------------------------------------------


def test_request_fields_decode_with_the_reference_decoder() -> None:
    block = (
        indexed(":method", "POST")
        + indexed(":scheme", "http")
        + literal(":path", "/hypertrack.orders.v1.OrdersService/CancelOrder")
        + literal(":authority", "127.0.0.1:50051")
        + literal("te", "trailers")
        + literal("content-type", "application/grpc")
        + literal("authorization", "Basic ZGVtbzpkZW1vLXNlY3JldA==")
        + literal("x-request-id", "r" * 200)
    )
    assert [(str(name), str(value)) for name, value in reference.Decoder().decode(block)] == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/hypertrack.orders.v1.OrdersService/CancelOrder"),
        (":authority", "127.0.0.1:50051"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("authorization", "Basic ZGVtbzpkZW1vLXNlY3JldA=="),
        ("x-request-id", "r" * 200),
    ]
    assert HeaderDecoder().decode(block)[-1] == ("x-request-id", "r" * 200)


@pytest.mark.parametrize(
    ("value", "prefix_bits", "encoded"), [(10, 5, "0a"), (1337, 5, "1f9a0a"), (42, 8, "2a")]
)
def test_integers_are_encoded_as_the_rfc_says(value: int, prefix_bits: int, encoded: str) -> None:
    """RFC 7541, C.1."""
    assert integer(value, prefix_bits).hex() == encoded
