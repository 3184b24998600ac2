"""HTTP Basic credentials (`Basic base64(AccountID:SecretKey)`), checked against stored hashes.

The same check serves gRPC (`authorization` metadata) and REST (`Authorization`
header). Every failure says the same thing, and an unknown account costs the same
comparison as a wrong secret, so a caller learns nothing about which accounts exist.
"""

from __future__ import annotations

import binascii
import time
from base64 import b64decode
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.calls.credentials import hash_secret, secret_matches
from gateway.domain.errors import Unauthenticated
from gateway.store.base import OrderStore

REALM = "hypertrack-gateway"
_UNKNOWN_ACCOUNT_HASH = hash_secret("no account has this secret")
_CACHE_LIMIT = 10_000


def unauthenticated() -> Unauthenticated:
    return Unauthenticated(
        "UNAUTHENTICATED",
        "missing or invalid credentials: send Authorization: Basic base64(AccountID:SecretKey)",
        {"realm": REALM},
    )


def duplicate_credentials() -> Unauthenticated:
    return Unauthenticated(
        "UNAUTHENTICATED",
        "more than one authorization entry: send exactly one Authorization: Basic base64(AccountID:SecretKey)",
        {"realm": REALM},
    )


def authorization_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The one `authorization` entry of a call's metadata, None when there is none. Two entries
    raise Unauthenticated: which one a proxy or a server reads differs, so neither is taken."""
    found: str | None = None
    seen = False
    for key, value in metadata or ():
        if key == "authorization":
            if seen:
                raise duplicate_credentials()
            seen = True
            found = value if isinstance(value, str) else None
    return found


def parse_basic(header: str | None) -> tuple[str, str]:
    """(account id, secret) from a Basic Authorization value; raises Unauthenticated."""
    if not header:
        raise unauthenticated()
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        raise unauthenticated()
    try:
        decoded = b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise unauthenticated() from None
    account_id, sep, secret = decoded.partition(":")
    if not sep or not account_id:
        raise unauthenticated()
    return account_id, secret


@dataclass(slots=True)
class _Cached:
    secret_hash: bytes | None
    expires: float


class Authenticator:
    """Verifies credentials. Stored hashes are cached for `cache_seconds` to spare the store."""

    def __init__(self, store: OrderStore, *, cache_seconds: float = 5.0) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}

    async def _stored_hash(self, account_id: str) -> bytes | None:
        now = time.monotonic()
        cached = self._cache.get(account_id)
        if cached is not None and cached.expires > now:
            return cached.secret_hash
        secret_hash = await self._store.account_secret_hash(account_id)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[account_id] = _Cached(secret_hash, now + self._cache_seconds)
        return secret_hash

    async def authenticate(self, authorization: str | None) -> str:
        """The account id the credentials prove; raises Unauthenticated."""
        account_id, secret = parse_basic(authorization)
        stored = await self._stored_hash(account_id)
        matches = secret_matches(secret, stored if stored is not None else _UNKNOWN_ACCOUNT_HASH)
        if stored is None or not matches:
            raise unauthenticated()
        return account_id
