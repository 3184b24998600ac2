"""A fresh database for one server under test: its account, its credentials, its seeded orders, and
its webhook when a row needs one.

Every pool of orders a measurement cancels gets its own handle prefix (`run1-embedded-0`, ...), so no
measurement ever meets an order another one cancelled; the prefixes end in "-" and hold no digit
before it, so one pool's handles can never be read as another's.
"""

from __future__ import annotations

import base64
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.processes import run_gateway_command

ACCOUNT = "bench"


@dataclass(frozen=True)
class Database:
    """A database of the product (SQLite, or PostgreSQL for issue 7's rows), with the load's account."""

    url: str
    account: str
    secret: str

    @property
    def authorization(self) -> str:
        token = base64.b64encode(f"{self.account}:{self.secret}".encode()).decode()
        return f"Basic {token}"

    @classmethod
    def create(cls, path: Path) -> Database:
        """A new SQLite database file at `path` with the benchmark's account (`accounts create`)."""
        if path.exists():
            raise FileExistsError(f"{path} exists: every benchmark run starts from a fresh database")
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls.on(f"sqlite:///{path}")

    @classmethod
    def on(cls, url: str) -> Database:
        """The benchmark's account on the empty database `url` (`accounts create` brings its schema)."""
        printed = run_gateway_command(["accounts", "create", "--database", url, ACCOUNT]).strip()
        account, _, secret = printed.rpartition("\n")[2].partition(":")
        return cls(url, account, secret)

    def subscribe(self, url: str) -> None:
        """The account's webhook to `url` (`hypertrack-gateway webhooks set`, as an operator would)."""
        printed = run_gateway_command(
            ["webhooks", "set", "--database", self.url, "--account", self.account, "--url", url]
        )
        if not printed.strip():
            raise RuntimeError(f"webhooks set printed no signing secret for {self.account}")

    def seed(self, prefix: str, count: int) -> None:
        """`prefix0` ... `prefix<count-1>` as open orders (`hypertrack-gateway seed`)."""
        started = time.monotonic()
        printed = run_gateway_command(
            [
                "seed",
                "--database",
                self.url,
                "--account",
                self.account,
                "--count",
                str(count),
                "--prefix",
                prefix,
            ]
        )
        # A fresh prefix has no orders yet, so every one is created; fewer means another pool overlaps.
        if not printed.startswith(f"seeded {count} "):
            raise RuntimeError(f"seeding {count} orders {prefix}0 ... printed {printed.strip()!r}")
        print(
            f"bench: seeded {count} orders {prefix}0 ... in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
