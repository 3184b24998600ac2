"""How a PostgreSQL store hears of the events other processes commit: LISTEN on a connection of its own.

Every event-writing transaction sends a notification on the outbox's channel (postgres_events.py),
which the server delivers to the listening sessions when, and only if, it commits. One connection
per store listens (not one per watcher) and wakes the store's listeners. Its own commits' notices
carry the store's token and are ignored: the store wakes its listeners itself after each commit.

A wake-up only, never a record of what was committed: notifications sent while the connection is
down are lost, so after every reconnection the listeners are woken once to read what they may
have missed; and a connection that dies without a word (a network that drops packets silently) is
not noticed until the operating system gives up on it. Hence the callers' modest poll besides.

The connection is opened on the first listener, so a store nobody watches (a command-line tool,
a test) holds no connection beyond its pool. When the server ends it (a restart, an administrator's
pg_terminate_backend), it is opened again, with a growing pause between attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.05
MAX_RETRY_S = 5.0
CLOSE_TIMEOUT_S = 2.0

Connect = Callable[[], Awaitable[Any]]
"""Opens a new asyncpg connection (asyncpg ships no types)."""


class CommitListener:
    """LISTEN on `channel` with a connection from `connect`, calling `wake()` (on the event loop) for
    each notification whose payload is not `own_notice`, and after each reconnection."""

    def __init__(
        self,
        connect: Connect,
        channel: str,
        own_notice: str,
        wake: Callable[[], None],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._own_notice = own_notice
        self._wake = wake
        self._errors = errors
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None

    def start(self) -> None:
        """Start listening (in the background; on the running event loop). Idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="postgres-listen")

    async def _listen(self) -> None:
        delay = FIRST_RETRY_S
        reconnected = False
        while True:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            try:
                connection = self._connection = await self._connect()
                connection.add_termination_listener(functools.partial(_settle, lost))
                await connection.add_listener(self._channel, self._notified)
            except self._errors as error:
                await self._drop()
                log.warning("cannot listen for committed events (retrying in %.2f s): %r", delay, error)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            delay = FIRST_RETRY_S
            if reconnected:
                # What was committed while nobody listened is read now.
                self._wake()
            reconnected = True
            await lost
            self._connection = None
            log.info("the connection listening for committed events was lost; opening another")

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._own_notice:
            self._wake()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*self._errors, TimeoutError):
                await connection.close(timeout=CLOSE_TIMEOUT_S)
            if not connection.is_closed():
                connection.terminate()

    async def close(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()


def _settle(lost: asyncio.Future[None], _connection: Any) -> None:
    if not lost.done():
        lost.set_result(None)
