"""HTTP Basic credentials (`Basic base64(AccountID:SecretKey)`), checked against stored hashes.

The same check serves gRPC (`authorization` metadata) and REST (`Authorization`
header). Every failure says the same thing, and an unknown account costs the same
comparison as a wrong secret, so a caller learns nothing about which accounts exist.
"""

from __future__ import annotations

import binascii
import time
from base64 import b64decode
from collections.abc import Callable, Iterable

from gateway.calls.credentials import hash_secret, secret_matches
from gateway.domain.errors import Unauthenticated
from gateway.store.base import OrderStore

REALM = "hypertrack-gateway"
_UNKNOWN_ACCOUNT_HASH = hash_secret("no account has this secret")
CACHE_SECONDS = 5.0
"""How long an account's stored hash is kept: also how long another process's change to an account
(a new account, a new secret) may go unseen by this one."""
CACHE_ENTRIES = 10_000
"""Most accounts kept at once, known or not: a bound on memory whatever ids callers make up."""


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


class AccountCache:
    """What a verification needs from the store, an account's stored secret hash (None: no such
    account), kept for `ttl_s` seconds in at most `max_entries` entries, so that a call does not
    ask the store each time.

    Unknown accounts are kept like known ones, in the same entries, with the same lifetime and the
    same eviction: a lookup then costs the same whether the account exists or not (a cached "no"
    next to an uncached "yes" would tell a caller which accounts exist), and a flood of made-up
    account ids can neither grow memory past the bound nor push out known accounts any sooner than
    unknown ones. The presented secret is never kept: every call still hashes it and compares the
    digests in constant time, which costs a microsecond, not a round trip.

    Every entry lives the same `ttl_s`, so insertion order is expiry order: expired entries are
    dropped from the front, and when the cache is full the first entry goes, the one nearest its
    end. `forget` drops an account at once (its secret changed in this process); a change made by
    another process is seen within `ttl_s`.
    """

    def __init__(
        self, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[bytes | None, float]] = {}
        # Bumped by every forget: a lookup that began before it must not store what it read.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, account_id: str) -> tuple[bool, bytes | None]:
        """(True, the stored hash or None for no such account) while it is kept, else (False, None)."""
        entry = self._entries.get(account_id)
        if entry is None:
            return False, None
        secret_hash, expires = entry
        if expires <= self._clock():
            self._drop_expired()
            return False, None
        return True, secret_hash

    def put(self, account_id: str, secret_hash: bytes | None, generation: int) -> None:
        """Keep what a lookup that began at `generation` read, unless an account was forgotten since."""
        if self._ttl_s <= 0 or self._max_entries <= 0 or generation != self.generation:
            return
        entries = self._entries
        entries.pop(account_id, None)  # re-inserted at the end: its expiry is now the latest
        if len(entries) >= self._max_entries:
            self._drop_expired()
            while len(entries) >= self._max_entries:
                del entries[next(iter(entries))]
        entries[account_id] = (secret_hash, self._clock() + self._ttl_s)

    def forget(self, account_id: str) -> None:
        """The account was created or its secret changed: ask the store next time."""
        self.generation += 1
        self._entries.pop(account_id, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        entries = self._entries
        while entries:
            first = next(iter(entries))
            if entries[first][1] > now:
                return
            del entries[first]


class Authenticator:
    """Verifies credentials against the stored hashes, kept in an AccountCache for `cache_seconds`
    (0: the store is asked on every call) in at most `cache_entries` accounts."""

    def __init__(
        self,
        store: OrderStore,
        *,
        cache_seconds: float = CACHE_SECONDS,
        cache_entries: int = CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cache = AccountCache(ttl_s=cache_seconds, max_entries=cache_entries, clock=clock)

    def account_changed(self, account_id: str) -> None:
        """Say that `account_id` was created or its secret changed, so the next call reads it anew."""
        self._cache.forget(account_id)

    async def stored_hash(self, account_id: str) -> bytes | None:
        """The account's stored secret hash (None: no such account), from the cache when it has it."""
        cache = self._cache
        known, secret_hash = cache.get(account_id)
        if known:
            return secret_hash
        generation = cache.generation
        secret_hash = await self._store.account_secret_hash(account_id)
        cache.put(account_id, secret_hash, generation)
        return secret_hash

    async def authenticate(self, authorization: str | None) -> str:
        """The account id the credentials prove; raises Unauthenticated."""
        account_id, secret = parse_basic(authorization)
        stored = await self.stored_hash(account_id)
        matches = secret_matches(secret, stored if stored is not None else _UNKNOWN_ACCOUNT_HASH)
        if stored is None or not matches:
            raise unauthenticated()
        return account_id
