"""HTTP Basic credentials: parsing, and the check against stored hashes."""

from __future__ import annotations

import base64
from typing import cast

import pytest

from gateway.calls.auth import REALM, Authenticator, authorization_of, parse_basic
from gateway.calls.credentials import hash_secret, new_secret, secret_matches
from gateway.domain.errors import Unauthenticated
from gateway.store.base import OrderStore


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class FakeAccounts:
    """The one store call the Authenticator makes, over a dict, counting calls."""

    def __init__(self, accounts: dict[str, str]) -> None:
        self.hashes = {account: hash_secret(secret) for account, secret in accounts.items()}
        self.lookups: list[str] = []

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        self.lookups.append(account_id)
        return self.hashes.get(account_id)


def authenticator(fake: FakeAccounts, cache_seconds: float = 5.0) -> Authenticator:
    return Authenticator(cast(OrderStore, fake), cache_seconds=cache_seconds)


# parse_basic


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + b64(b"demo:demo-secret"), ("demo", "demo-secret")),
        ("basic " + b64(b"demo:s"), ("demo", "s")),
        ("BASIC " + b64(b"demo:s"), ("demo", "s")),
        ("  Basic   " + b64(b"demo:s") + "  ", ("demo", "s")),
        ("Basic " + b64(b"demo:a:b:c"), ("demo", "a:b:c")),
        ("Basic " + b64(b"demo:"), ("demo", "")),
        ("Basic " + b64("änna:sécret".encode()), ("änna", "sécret")),
    ],
)
def test_parse_basic_accepts(header: str, expected: tuple[str, str]) -> None:
    assert parse_basic(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Basic",
        "Basic ",
        "Bearer " + b64(b"demo:s"),
        "Basicdemo",
        b64(b"demo:s"),
        "Basic !!!!",
        "Basic ZGVtbzpzZQ",  # missing padding
        "Basic " + b64(b"no-colon"),
        "Basic " + b64(b":secret-only"),
        "Basic " + b64(b"\xff\xfe:s"),  # not UTF-8
        "Basic " + b64(b"demo:s") + " extra",
    ],
)
def test_parse_basic_rejects(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        parse_basic(header)
    assert caught.value.reason == "UNAUTHENTICATED"
    assert caught.value.metadata == {"realm": REALM}


# authorization_of


def test_the_one_authorization_entry_is_taken() -> None:
    assert authorization_of((("x-request-id", "r"), ("authorization", "Basic a"))) == "Basic a"
    assert authorization_of((("x-request-id", "r"),)) is None
    assert authorization_of(None) is None
    assert authorization_of((("authorization", b"Basic a"),)) is None


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Basic a"), ("authorization", "Basic b")),
        (("authorization", "Basic a"), ("x-request-id", "r"), ("authorization", "Basic a")),
        (("authorization", b"Basic a"), ("authorization", "Basic b")),
    ],
)
def test_two_authorization_entries_are_unauthenticated(metadata: tuple[tuple[str, str | bytes], ...]) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authorization_of(metadata)
    assert caught.value.reason == "UNAUTHENTICATED"
    assert caught.value.metadata == {"realm": REALM}
    assert "more than one" in caught.value.message


# Authenticator


async def test_valid_credentials_name_the_account() -> None:
    auth = authenticator(FakeAccounts({"demo": "demo-secret"}))
    assert await auth.authenticate("Basic " + b64(b"demo:demo-secret")) == "demo"


async def test_unknown_account_and_wrong_secret_fail_alike() -> None:
    auth = authenticator(FakeAccounts({"demo": "demo-secret"}))
    failures = []
    for credentials in (b"demo:wrong", b"nobody:demo-secret", b"demo:", b"DEMO:demo-secret"):
        with pytest.raises(Unauthenticated) as caught:
            await auth.authenticate("Basic " + b64(credentials))
        failures.append(caught.value)
    assert all(f == failures[0] for f in failures)
    assert failures[0].reason == "UNAUTHENTICATED"
    assert failures[0].metadata == {"realm": REALM}
    assert "Basic" in failures[0].message


async def test_malformed_header_fails_like_wrong_credentials_without_a_lookup() -> None:
    fake = FakeAccounts({"demo": "demo-secret"})
    auth = authenticator(fake)
    with pytest.raises(Unauthenticated) as malformed:
        await auth.authenticate("Bearer token")
    with pytest.raises(Unauthenticated) as wrong:
        await auth.authenticate("Basic " + b64(b"demo:nope"))
    assert malformed.value == wrong.value
    assert fake.lookups == ["demo"]


async def test_stored_hashes_are_cached() -> None:
    fake = FakeAccounts({"demo": "demo-secret"})
    auth = authenticator(fake)
    for _ in range(3):
        await auth.authenticate("Basic " + b64(b"demo:demo-secret"))
    with pytest.raises(Unauthenticated):
        await auth.authenticate("Basic " + b64(b"demo:wrong"))
    assert fake.lookups == ["demo"]


async def test_without_cache_every_call_asks_the_store() -> None:
    fake = FakeAccounts({"demo": "demo-secret"})
    auth = authenticator(fake, cache_seconds=0)
    await auth.authenticate("Basic " + b64(b"demo:demo-secret"))
    await auth.authenticate("Basic " + b64(b"demo:demo-secret"))
    assert fake.lookups == ["demo", "demo"]


def test_secrets_are_random_and_only_their_hash_matches() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(first) >= 40
    stored = hash_secret(first)
    assert stored != first.encode()
    assert secret_matches(first, stored)
    assert not secret_matches(second, stored)
