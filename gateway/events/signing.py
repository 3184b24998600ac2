"""The webhook's signature header: `X-HyperTrack-Signature: t=<unix seconds>,v1=<hex>`, where
`<hex>` is HMAC-SHA256, keyed by the UTF-8 bytes of the account's signing secret, over
`<t>.<body bytes>`.

The timestamp is signed with the body so that a receiver can refuse a replay of an old request
(`verify`'s `tolerance_s`), and the header names its scheme (`v1`) so that another can be added
beside it later without breaking receivers that check this one.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-HyperTrack-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
"""How old a signed timestamp `verify` accepts by default (as Stripe's receivers do)."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` keyed by `secret`'s UTF-8 bytes."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The header's value for `body` sent now (or at `timestamp`, unix seconds)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},{SCHEME}={signature(secret, t, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance_s` of `now`.
    Compares in constant time; a malformed header is simply not valid."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, equals, value = part.strip().partition("=")
        if equals:
            fields.setdefault(key, []).append(value)
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()):
        return False
    timestamp = int(stamps[0])
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).encode("ascii")
    # Any of the v1 signatures may match (a sender rotating its secret may send two); compared as
    # bytes, since compare_digest refuses text that is not ASCII.
    return any(
        hmac.compare_digest(expected, candidate.encode("utf-8")) for candidate in fields.get(SCHEME, [])
    )
