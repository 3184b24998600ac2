"""Admission limits: a token bucket per account, and a cap on failed authentications per
client address. State is per process and bounded: the least recently seen keys are
forgotten first, so a flood of distinct keys cannot grow memory without end."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.domain.errors import ResourceExhausted

MAX_TRACKED_KEYS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class _Lru(OrderedDict[str, object]):
    def touch(self, key: str) -> None:
        self.move_to_end(key)
        while len(self) > MAX_TRACKED_KEYS:
            self.popitem(last=False)


class AccountRateLimit:
    """At most `rate_per_s` calls a second per account on average, `burst` at once."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: _Lru = _Lru()

    def admit(self, account_id: str) -> None:
        """Take a token for the account; raises ResourceExhausted with the wait when none is left."""
        now = self._clock()
        bucket = self._buckets.get(account_id)
        if not isinstance(bucket, _Bucket):
            bucket = _Bucket(self._burst, now)
            self._buckets[account_id] = bucket
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        self._buckets.touch(account_id)
        if bucket.tokens < 1.0:
            raise ResourceExhausted(
                "RATE_LIMITED",
                f"too many requests for this account: at most {self._rate:g} a second; retry later",
                {"limit_per_second": f"{self._rate:g}"},
                retry_after_s=(1.0 - bucket.tokens) / self._rate,
            )
        bucket.tokens -= 1.0


@dataclass(slots=True)
class _Failures:
    count: int
    window_start: float


class AuthFailureLimit:
    """After `limit` failed authentications from one address within `window_s`, every call from
    that address is refused until the window ends, right credentials or not (else the refusals
    themselves would tell a guesser when it guessed right)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._failures: _Lru = _Lru()

    def _current(self, address: str, now: float) -> _Failures | None:
        failures = self._failures.get(address)
        if isinstance(failures, _Failures) and now - failures.window_start < self._window_s:
            return failures
        return None

    def admit(self, address: str) -> None:
        """Raises ResourceExhausted while the address is locked out."""
        now = self._clock()
        failures = self._current(address, now)
        if failures is not None and failures.count >= self._limit:
            raise ResourceExhausted(
                "TOO_MANY_FAILED_AUTHENTICATIONS",
                "too many failed authentications from this address; retry later",
                {},
                retry_after_s=failures.window_start + self._window_s - now,
            )

    def failed(self, address: str) -> None:
        now = self._clock()
        failures = self._current(address, now)
        if failures is None:
            failures = _Failures(0, now)
            self._failures[address] = failures
        failures.count += 1
        self._failures.touch(address)
