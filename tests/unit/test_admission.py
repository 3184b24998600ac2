"""Admission: the client address of a call, from its peer and, behind a trusted proxy, the address
the proxy forwarded."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from gateway.calls.admission import IN_PROCESS_PEER, LOOPBACK, Admission, metadata_value

FORWARDED = (("authorization", "Basic x"), ("x-forwarded-for", "203.0.113.9, 198.51.100.7"))


@pytest.mark.parametrize(
    ("peer", "metadata", "address"),
    [
        ("ipv4:198.51.100.1:5678", (), "198.51.100.1"),
        ("ipv4:198.51.100.1:5678", FORWARDED, "198.51.100.1"),  # not a trusted proxy: its word is ignored
        ("ipv4:127.0.0.1:5678", FORWARDED, "198.51.100.7"),  # the last entry: the one our front end added
        ("ipv4:127.0.0.1:5678", (), "127.0.0.1"),
        ("ipv6:[::1]:5678", FORWARDED, "198.51.100.7"),
        ("ipv6:[2001:db8::1]:5678", FORWARDED, "2001:db8::1"),
        (IN_PROCESS_PEER, FORWARDED, "198.51.100.7"),
        (IN_PROCESS_PEER, (), IN_PROCESS_PEER),
        ("unix:/tmp/socket", FORWARDED, "unix:/tmp/socket"),
        ("ipv4:not-an-address:1", FORWARDED, "not-an-address"),
    ],
)
def test_the_client_address_of_a_call(peer: str, metadata: tuple[tuple[str, str], ...], address: str) -> None:
    assert Admission().client_address(peer, metadata) == address


def test_trusted_proxies_are_loopback_by_default_and_may_be_set() -> None:
    assert Admission().trusted_proxies == LOOPBACK
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
