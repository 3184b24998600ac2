"""Account secrets: generated at random, stored only as a hash, compared in constant time.

Secrets are 32 random bytes, so a single SHA-256 is a sound one-way hash for them (as
for API tokens generally); a slow password hash would only slow every call down.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_BYTES = 32


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
