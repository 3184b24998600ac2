"""What the PostgreSQL modules of the store share: the shape of a unit of work, how long each of
its statements may take, and the answer to a statement that did not finish in time."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.domain.errors import Unavailable

T = TypeVar("T")

# asyncpg ships no type hints: its connection is `Any` here, and only here.
Work = Callable[[Any, float], Awaitable[T]]
"""A unit of work: given a connection and the `time.monotonic()` deadline of its call."""

MIN_STATEMENT_S = 0.05
"""A statement always gets at least this long, so a call that reaches the store at its deadline
still makes one real attempt (as the SQLite store does)."""
MIN_COMMIT_S = 1.0
"""COMMIT comes after all the work is done; cutting it short would only leave the caller unsure
whether the change happened, so it gets at least this long."""


def statement_timeout(deadline: float, floor: float = MIN_STATEMENT_S) -> float:
    """Seconds the next statement may take: what is left before `deadline`, at least `floor`."""
    return max(deadline - time.monotonic(), floor)


def answer_too_late() -> Unavailable:
    """STORE_BUSY for a call whose statements did not finish before its deadline."""
    return Unavailable("STORE_BUSY", "the database did not answer before the deadline; retry later")
