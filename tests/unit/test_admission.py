"""Admission: the client address of a call, from its peer and, only behind a proxy named as trusted,
the address the proxy forwarded."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from gateway.calls.admission import Admission, Network, forwarded_client, metadata_value

LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
FORWARDED = (("authorization", "Basic x"), ("x-forwarded-for", "203.0.113.9, 198.51.100.7"))


@pytest.mark.parametrize(
    ("peer", "metadata"),
    [
        ("ipv4:198.51.100.1:5678", ()),
        ("ipv4:198.51.100.1:5678", FORWARDED),
        ("ipv4:127.0.0.1:5678", FORWARDED),
        ("ipv6:[::1]:5678", FORWARDED),
    ],
)
def test_nothing_is_trusted_by_default(peer: str, metadata: tuple[tuple[str, str], ...]) -> None:
    assert Admission().trusted_proxies == ()
    assert Admission().client_address(peer, metadata) == peer.split(":", 1)[1].rpartition(":")[0].strip("[]")


@pytest.mark.parametrize(
    ("peer", "metadata", "address"),
    [
        ("ipv4:198.51.100.1:5678", (), "198.51.100.1"),
        ("ipv4:198.51.100.1:5678", FORWARDED, "198.51.100.1"),  # not a trusted proxy: its word is ignored
        ("ipv4:127.0.0.1:5678", FORWARDED, "198.51.100.7"),  # the last entry: the one our front end added
        ("ipv4:127.0.0.1:5678", (), "127.0.0.1"),
        ("ipv6:[::1]:5678", FORWARDED, "198.51.100.7"),
        ("ipv6:[2001:db8::1]:5678", FORWARDED, "2001:db8::1"),
        ("unix:/tmp/socket", FORWARDED, "unix:/tmp/socket"),
        ("ipv4:not-an-address:1", FORWARDED, "not-an-address"),
        # Not an address: ignored, never keyed on.
        ("ipv4:127.0.0.1:5678", (("x-forwarded-for", "anything at all"),), "127.0.0.1"),
        ("ipv4:127.0.0.1:5678", (("x-forwarded-for", ""),), "127.0.0.1"),
        ("ipv4:127.0.0.1:5678", (("x-forwarded-for", "198.51.100.7:80"),), "127.0.0.1"),
        ("ipv4:127.0.0.1:5678", (("x-forwarded-for", b"198.51.100.7"),), "127.0.0.1"),
        # Several entries: read as one list, the nearest hop last.
        (
            "ipv4:127.0.0.1:5678",
            (("x-forwarded-for", "203.0.113.9"), ("x-forwarded-for", "198.51.100.8")),
            "198.51.100.8",
        ),
        # A forwarded address that is itself trusted passes the walk on to the one it names.
        ("ipv4:127.0.0.1:5678", (("x-forwarded-for", "203.0.113.9, 127.0.0.2"),), "203.0.113.9"),
        ("ipv4:127.0.0.1:5678", (("x-forwarded-for", "127.0.0.2"),), "127.0.0.2"),
        # The canonical form: one address, one key.
        ("ipv4:127.0.0.1:5678", (("x-forwarded-for", "2001:DB8:0::1"),), "2001:db8::1"),
    ],
)
def test_the_client_address_behind_trusted_loopback(
    peer: str, metadata: tuple[tuple[str, str | bytes], ...], address: str
) -> None:
    assert Admission(trusted_proxies=LOOPBACK).client_address(peer, metadata) == address


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ([], "10.0.0.1"),
        (["198.51.100.7"], "198.51.100.7"),
        (["203.0.113.9, 198.51.100.7"], "198.51.100.7"),  # the right-most untrusted: a client's own
        (["203.0.113.9", "198.51.100.7"], "198.51.100.7"),  # entries to the left are its word alone
        (["198.51.100.7, 10.0.0.2"], "198.51.100.7"),  # 10.0.0.2 is another trusted hop
        (["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # every hop trusted: the last good one
        (["198.51.100.7, junk, 10.0.0.2"], "10.0.0.2"),  # a malformed entry ends the walk
        (["198.51.100.7, junk"], "10.0.0.1"),
        (["198.51.100.7,"], "10.0.0.1"),
        (["unknown"], "10.0.0.1"),
        (["198.51.100.7", "junk"], "10.0.0.1"),
        (["[2001:db8::1]"], "10.0.0.1"),
        ([" 2001:db8::1 "], "2001:db8::1"),
    ],
)
def test_the_forwarded_client_is_the_right_most_untrusted_address(forwarded: list[str], client: str) -> None:
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    assert forwarded_client("10.0.0.1", forwarded, trusted) == client


def test_only_the_named_proxies_are_trusted() -> None:
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    admission = Admission(trusted_proxies=proxies)
    assert admission.client_address("ipv4:10.1.2.3:5678", FORWARDED) == "198.51.100.7"
    assert admission.client_address("ipv4:127.0.0.1:5678", FORWARDED) == "127.0.0.1"


def test_metadata_value_is_the_first_text_value_of_its_key() -> None:
    metadata = (("k", "first"), ("k", "second"), ("b", b"bytes"))
    assert metadata_value(metadata, "k") == "first"
    assert metadata_value(metadata, "b") is None
    assert metadata_value(metadata, "missing") is None
    assert metadata_value(None, "k") is None


def test_admission_needs_no_grpc() -> None:
    """In a fresh interpreter, since this one has loaded grpc long ago."""
    check = "import gateway.calls.admission, sys; assert 'grpc' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
