"""Admission limits: the per-account token bucket and the failed-authentication lock-out."""

from __future__ import annotations

import pytest

from gateway.calls import limits
from gateway.calls.limits import AccountRateLimit, AuthFailureLimit
from gateway.domain.errors import ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_admitted_then_the_rate_applies() -> None:
    clock = Clock()
    bucket = AccountRateLimit(2.0, 3, clock)
    for _ in range(3):
        bucket.admit("acme")
    with pytest.raises(ResourceExhausted) as refused:
        bucket.admit("acme")
    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    bucket.admit("acme")
    with pytest.raises(ResourceExhausted):
        bucket.admit("acme")


def test_accounts_have_buckets_of_their_own() -> None:
    bucket = AccountRateLimit(1.0, 1, Clock())
    bucket.admit("acme")
    bucket.admit("rival")
    with pytest.raises(ResourceExhausted):
        bucket.admit("acme")


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    clock = Clock()
    bucket = AccountRateLimit(10.0, 2, clock)
    bucket.admit("acme")
    clock.now += 3600
    bucket.admit("acme")
    bucket.admit("acme")
    with pytest.raises(ResourceExhausted):
        bucket.admit("acme")


def test_an_address_is_locked_out_after_the_limit_until_the_window_ends() -> None:
    clock = Clock()
    guard = AuthFailureLimit(3, 60.0, clock)
    for _ in range(3):
        guard.admit("10.0.0.1")
        guard.failed("10.0.0.1")
    with pytest.raises(ResourceExhausted) as refused:
        guard.admit("10.0.0.1")
    assert refused.value.reason == "TOO_MANY_FAILED_AUTHENTICATIONS"
    assert refused.value.retry_after_s == pytest.approx(60.0)
    guard.admit("10.0.0.2")
    clock.now += 45
    with pytest.raises(ResourceExhausted) as still:
        guard.admit("10.0.0.1")
    assert still.value.retry_after_s == pytest.approx(15.0)
    clock.now += 15
    guard.admit("10.0.0.1")


def test_failures_in_an_old_window_do_not_count() -> None:
    clock = Clock()
    guard = AuthFailureLimit(2, 10.0, clock)
    guard.failed("a")
    clock.now += 11
    guard.failed("a")
    guard.admit("a")


def test_memory_is_bounded_by_forgetting_the_least_recent_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_TRACKED_KEYS", 3)
    guard = AuthFailureLimit(1, 60.0, Clock())
    for address in ("a", "b", "c", "d"):
        guard.failed(address)
    guard.admit("a")  # forgotten: the oldest of four when three are kept
    for address in ("b", "c", "d"):
        with pytest.raises(ResourceExhausted):
            guard.admit(address)
