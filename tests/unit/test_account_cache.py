"""The authenticator's cache of stored secret hashes: expiry, the bound, and invalidation."""

from __future__ import annotations

import asyncio
import base64
from typing import cast

import pytest

from gateway.calls.auth import AccountCache, Authenticator
from gateway.calls.credentials import hash_secret
from gateway.domain.errors import Unauthenticated
from gateway.store.base import OrderStore
from tests.unit.test_auth import FakeAccounts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(account_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{account_id}:{secret}".encode()).decode()


def authenticator(
    accounts: FakeAccounts, clock: Clock, *, cache_seconds: float = 5.0, cache_entries: int = 100
) -> Authenticator:
    return Authenticator(
        cast(OrderStore, accounts), clock=clock, cache_seconds=cache_seconds, cache_entries=cache_entries
    )


# AccountCache on its own


def test_an_entry_is_kept_until_its_time_is_up() -> None:
    clock = Clock()
    cache = AccountCache(ttl_s=5.0, max_entries=10, clock=clock)
    cache.put("acme", b"hash", cache.generation)
    cache.put("nobody", None, cache.generation)
    clock.now += 4.9
    assert cache.get("acme") == (True, b"hash")
    assert cache.get("nobody") == (True, None)
    clock.now += 0.1
    assert cache.get("acme") == (False, None)
    assert cache.get("nobody") == (False, None)
    assert len(cache) == 0


def test_expired_entries_leave_from_the_front_as_they_are_met() -> None:
    clock = Clock()
    cache = AccountCache(ttl_s=5.0, max_entries=10, clock=clock)
    for n in range(3):
        cache.put(f"early-{n}", b"h", cache.generation)
    clock.now += 3
    cache.put("late", b"h", cache.generation)
    clock.now += 2.5  # the early ones are past their time, the late one is not
    assert cache.get("early-1") == (False, None)
    assert len(cache) == 1
    assert cache.get("late") == (True, b"h")


def test_the_cache_never_holds_more_than_its_bound_and_the_oldest_goes_first() -> None:
    clock = Clock()
    cache = AccountCache(ttl_s=60.0, max_entries=100, clock=clock)
    cache.put("acme", b"hash", cache.generation)
    for n in range(10_000):  # a flood of made-up ids, each an unknown account
        clock.now += 0.001
        cache.put(f"made-up-{n}", None, cache.generation)
        assert len(cache) <= 100
    assert len(cache) == 100
    assert cache.get("acme") == (False, None)  # pushed out like any other entry of its age
    assert cache.get("made-up-9999") == (True, None)
    assert cache.get("made-up-9899") == (False, None)


def test_known_and_unknown_accounts_are_evicted_alike() -> None:
    """Whether an entry is still there depends on its age only: a caller who fills the cache
    learns nothing about which of the ids it asked about exist."""
    clock = Clock()
    cache = AccountCache(ttl_s=60.0, max_entries=4, clock=clock)
    for account_id, secret_hash in (("a", b"h"), ("b", None), ("c", b"h"), ("d", None)):
        cache.put(account_id, secret_hash, cache.generation)
    cache.put("e", None, cache.generation)
    cache.put("f", b"h", cache.generation)
    assert [cache.get(k)[0] for k in "abcdef"] == [False, False, True, True, True, True]


def test_a_renewed_entry_moves_to_the_end() -> None:
    clock = Clock()
    cache = AccountCache(ttl_s=5.0, max_entries=2, clock=clock)
    cache.put("a", b"1", cache.generation)
    cache.put("b", b"2", cache.generation)
    clock.now += 1
    cache.put("a", b"3", cache.generation)
    cache.put("c", b"4", cache.generation)  # full: "b" is now the oldest
    assert cache.get("a") == (True, b"3")
    assert cache.get("b") == (False, None)
    clock.now += 4.5  # "b" would have expired first; "a" and "c" were put a second later
    assert cache.get("a") == (True, b"3")


def test_forget_drops_the_account_and_what_a_lookup_in_flight_read() -> None:
    clock = Clock()
    cache = AccountCache(ttl_s=5.0, max_entries=10, clock=clock)
    cache.put("acme", b"old", cache.generation)
    began = cache.generation  # a lookup begins here, reads the store ...
    cache.forget("acme")  # ... the account changes meanwhile ...
    cache.put("acme", b"old", began)  # ... and what it read is not kept
    assert cache.get("acme") == (False, None)
    cache.put("acme", b"new", cache.generation)
    assert cache.get("acme") == (True, b"new")


@pytest.mark.parametrize(("ttl_s", "max_entries"), [(0.0, 10), (5.0, 0)])
def test_a_cache_of_no_time_or_no_room_keeps_nothing(ttl_s: float, max_entries: int) -> None:
    cache = AccountCache(ttl_s=ttl_s, max_entries=max_entries, clock=Clock())
    cache.put("acme", b"hash", cache.generation)
    assert cache.get("acme") == (False, None)
    assert len(cache) == 0


# Through the Authenticator


async def test_the_store_is_asked_once_per_account_until_the_entry_expires() -> None:
    accounts, clock = FakeAccounts({"acme": "right"}), Clock()
    auth = authenticator(accounts, clock, cache_seconds=5.0)
    for _ in range(3):
        assert await auth.authenticate(basic("acme", "right")) == "acme"
        with pytest.raises(Unauthenticated):
            await auth.authenticate(basic("acme", "wrong"))
        with pytest.raises(Unauthenticated):
            await auth.authenticate(basic("nobody", "right"))
    assert accounts.lookups == ["acme", "nobody"]
    clock.now += 5.0
    assert await auth.authenticate(basic("acme", "right")) == "acme"
    assert accounts.lookups == ["acme", "nobody", "acme"]


async def test_a_changed_account_is_read_anew_at_once() -> None:
    accounts, clock = FakeAccounts({"acme": "first"}), Clock()
    auth = authenticator(accounts, clock)
    assert await auth.authenticate(basic("acme", "first")) == "acme"
    with pytest.raises(Unauthenticated):  # not yet created: kept as unknown
        await auth.authenticate(basic("newcomer", "s"))
    accounts.hashes["acme"] = hash_secret("second")
    accounts.hashes["newcomer"] = hash_secret("s")
    # Changed by another process: the old secret still works, the newcomer waits, within the TTL.
    assert await auth.authenticate(basic("acme", "first")) == "acme"
    with pytest.raises(Unauthenticated):
        await auth.authenticate(basic("newcomer", "s"))
    auth.account_changed("acme")
    auth.account_changed("newcomer")
    with pytest.raises(Unauthenticated):
        await auth.authenticate(basic("acme", "first"))
    assert await auth.authenticate(basic("acme", "second")) == "acme"
    assert await auth.authenticate(basic("newcomer", "s")) == "newcomer"


async def test_a_change_during_a_lookup_is_not_overwritten_by_it() -> None:
    accounts, clock = FakeAccounts({"acme": "first"}), Clock()
    gate, reading = asyncio.Event(), asyncio.Event()
    read = accounts.account_secret_hash

    async def slow(account_id: str) -> bytes | None:
        found = await read(account_id)
        reading.set()
        await gate.wait()
        return found

    accounts.account_secret_hash = slow  # type: ignore[method-assign]
    auth = authenticator(accounts, clock)
    first = asyncio.create_task(auth.authenticate(basic("acme", "first")))
    await reading.wait()
    accounts.hashes["acme"] = hash_secret("second")
    auth.account_changed("acme")
    gate.set()
    assert await first == "acme"  # it read the old secret, and answers by it
    with pytest.raises(Unauthenticated):
        await auth.authenticate(basic("acme", "first"))  # but did not keep it
    assert accounts.lookups == ["acme", "acme"]


async def test_failed_lookups_are_not_kept_past_the_bound() -> None:
    accounts, clock = FakeAccounts({"acme": "right"}), Clock()
    auth = authenticator(accounts, clock, cache_entries=50)
    for n in range(500):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(basic(f"guess-{n}", "x"))
    assert len(auth._cache) == 50
    assert len(accounts.lookups) == 500


async def test_a_store_failure_is_not_kept() -> None:
    class Down(Exception):
        pass

    accounts, clock = FakeAccounts({"acme": "right"}), Clock()
    read = accounts.account_secret_hash
    failing = True

    async def flaky(account_id: str) -> bytes | None:
        if failing:
            raise Down
        return await read(account_id)

    accounts.account_secret_hash = flaky  # type: ignore[method-assign]
    auth = authenticator(accounts, clock)
    with pytest.raises(Down):
        await auth.authenticate(basic("acme", "right"))
    failing = False
    assert await auth.authenticate(basic("acme", "right")) == "acme"
