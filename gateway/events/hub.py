"""The fan-out of committed events to the WatchOrderEvents streams of this process.

One reader per process, not one per watcher: it follows the outbox with `events_after(last)` for
every account, woken by the store after each commit that wrote events (`on_events_committed`) and
by a modest poll, since another process's commits on a shared PostgreSQL database reach this one
only by the poll or by the store's notification. It hands each event to the watchers of its
account, through a bounded queue per watcher. The reader never waits for a watcher: a watcher whose
queue is full is cut off (RESOURCE_EXHAUSTED) and resumes from its last cursor, rather than holding
memory without bound or slowing the others.

Event ids are the commit order of the database (gateway/store/events.py), so what the reader reads
past `last` is everything committed past it; a watcher that subscribes, then reads the store for
what came before (Watch), misses nothing and skips what it already has.

Without watchers the reader reads nothing: a commit then costs the process no read of its events.
The first watcher after such a time waits for the reader to move its position to the last event
committed, before it reads its own starting point; what lies between is the store's to give it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.errors import OrderError, ResourceExhausted, Unavailable
from gateway.store.events import StoredEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """The fan-out's limits, with their defaults."""

    queue_size: int = 1000
    """Events a watcher may have waiting to be sent before it is cut off."""
    poll_interval_s: float = 1.0
    """How often the reader looks for events it was not woken for (another process's commits)."""
    batch_size: int = 500
    """Events the reader (and a watcher catching up) reads from the store at a time."""


class EventSource(Protocol):
    """What the hub reads (gateway/store/events.py's EventStore)."""

    async def last_event_id(self) -> int: ...

    async def events_after(
        self, after_id: int, *, limit: int, account_id: str | None = None
    ) -> list[StoredEvent]: ...

    def on_events_committed(self, listener: Callable[[], None]) -> None: ...


OVERFLOWED = "WATCH_TOO_SLOW"


def overflowed() -> ResourceExhausted:
    return ResourceExhausted(
        OVERFLOWED,
        "the watcher did not keep up with its account's events; resume from the last cursor received",
    )


SHUTTING_DOWN = "SHUTTING_DOWN"


def shutting_down() -> Unavailable:
    return Unavailable(SHUTTING_DOWN, "the server is shutting down; resume from the last cursor received")


def hub_failed() -> Unavailable:
    return Unavailable(
        "WATCH_UNAVAILABLE", "the event stream of this server failed; resume elsewhere or later"
    )


class Subscription:
    """One watcher's queue of its account's live events. The hub appends; the watcher takes."""

    def __init__(
        self,
        hub: EventHub,
        account_id: str,
        queue_size: int,
        on_end: Callable[[OrderError], None] | None = None,
    ) -> None:
        self.account_id = account_id
        self._hub = hub
        self._queue: deque[StoredEvent] = deque()
        self._queue_size = queue_size
        self._ready = asyncio.Event()
        self._on_end = on_end
        self.ended: OrderError | None = None
        """Why the hub ended the subscription (too slow, shutdown), or None while it is live."""

    def offer(self, event: StoredEvent) -> None:
        """From the hub's reader: the event, or the end of the subscription if the queue is full
        (the queue is dropped at once, so a stalled watcher holds no more than `queue_size`)."""
        if len(self._queue) >= self._queue_size:
            self.end(overflowed())
            return
        self._queue.append(event)
        self._ready.set()

    def end(self, why: OrderError) -> None:
        if self.ended is None:
            self.ended = why
            self._queue.clear()
            self._hub.forget(self)
            self._ready.set()
            if self._on_end is not None:
                self._on_end(why)

    async def next(self) -> StoredEvent:
        """The next live event; raises the reason once the hub ended the subscription (events
        still queued are dropped then: the watcher resumes from its cursor)."""
        while True:
            if self.ended is not None:
                raise self.ended
            if self._queue:
                return self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """The watcher went away."""
        self._queue.clear()
        self._hub.forget(self)


class EventHub:
    """The one reader of the outbox in a process, and its watchers (see the module)."""

    def __init__(self, source: EventSource, settings: WatchSettings | None = None) -> None:
        self.source = source
        self.settings = settings or WatchSettings()
        self._by_account: dict[str, set[Subscription]] = {}
        """The open subscriptions by account; an account without any has no entry."""
        self._last = 0
        self._wake = asyncio.Event()
        self._current = asyncio.Event()
        """Set while the position follows the outbox; clear once the reader skipped a wake-up for
        want of watchers, until it has moved the position to the last event committed."""
        self._task: asyncio.Task[None] | None = None
        self._closed: OrderError | None = None

    @property
    def watchers(self) -> int:
        """Subscriptions open now (for metrics)."""
        return sum(map(len, self._by_account.values()))

    @property
    def position(self) -> int:
        """The last event id the reader has handed out."""
        return self._last

    async def start(self) -> None:
        """Start following the outbox from the last event committed now."""
        self._last = await self.source.last_event_id()
        self._current.set()
        self.source.on_events_committed(self._committed)
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="event-hub")

    async def stop(self) -> None:
        """Stop reading and end every subscription (the watchers hear SHUTTING_DOWN)."""
        if self._closed is None:
            self._closed = shutting_down()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._end_all(self._closed)
        self._current.set()  # nobody waits for a reader that is gone

    def subscribe(self, account_id: str, on_end: Callable[[OrderError], None] | None = None) -> Subscription:
        """A subscription to the account's events committed from now on (those past `position`);
        `on_end` is told why when the hub ends it. Raises Unavailable once the hub is stopped."""
        if self._closed is not None:
            raise self._closed
        subscription = Subscription(self, account_id, self.settings.queue_size, on_end)
        self._by_account.setdefault(account_id, set()).add(subscription)
        return subscription

    async def watch(self, account_id: str, after_id: int | None) -> Watch:
        """A watch of the account's events past `after_id` (None: from now), subscribed, its
        starting point read (see Watch); raises Unavailable once the hub is stopped."""
        watch = Watch(self, account_id)
        try:
            if not self._current.is_set():
                # Subscribed, so the reader follows again; it first moves its position to now.
                self._wake.set()
                await self._current.wait()
            await watch.start(after_id)
        except BaseException:
            watch.close()
            raise
        return watch

    def forget(self, subscription: Subscription) -> None:
        """Stop handing the subscription events (it ended, or its watcher went away)."""
        watchers = self._by_account.get(subscription.account_id)
        if watchers is None or subscription not in watchers:
            return
        watchers.discard(subscription)
        if not watchers:
            del self._by_account[subscription.account_id]

    def _end_all(self, why: OrderError) -> None:
        for watchers in list(self._by_account.values()):
            for subscription in list(watchers):
                subscription.end(why)

    def _committed(self) -> None:
        """A commit wrote events. Without watchers the reader is not woken (a task switch per
        commit, on every cancel of a process nobody watches): the position falls behind instead,
        and the next watcher first brings it up to date (see `watch`)."""
        if self._by_account:
            self._wake.set()
        else:
            self._current.clear()

    async def _follow(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval_s):
                        await self._wake.wait()
                # Cleared before reading: a commit signalled during the read wakes the next round.
                self._wake.clear()
                if not self._by_account:
                    self._current.clear()  # something may have been committed, and not read
                    continue
                try:
                    if not self._current.is_set():
                        self._last = max(self._last, await self.source.last_event_id())
                        self._current.set()
                    await self._read_all()
                except Unavailable as error:
                    log.warning("event hub: store unavailable, retrying: %s", error)
        except Exception:
            # A bug, not an outage: the watchers are told to go elsewhere, and so is any new one,
            # rather than waiting on a reader that is gone.
            log.exception("event hub: the reader failed; watchers on this process are ended")
            self._closed = hub_failed()
            self._end_all(self._closed)
            self._current.set()

    async def _read_all(self) -> None:
        """Hand out everything committed past `_last`."""
        batch_size = self.settings.batch_size
        while True:
            events = await self.source.events_after(self._last, limit=batch_size)
            for event in events:
                watchers = self._by_account.get(event.account_id)
                if watchers:
                    for subscription in list(watchers):
                        subscription.offer(event)
                self._last = event.event_id
            if len(events) < batch_size:
                return


class Watch:
    """One watcher's stream: `events()` yields the account's events past `after_id` (None: from
    now), in commit order, then live, each once, and raises the reason the hub ended it (too slow,
    shutdown). `cut` is set when the hub has ended the stream for good: a watcher blocked in a
    write waits on it too, so that it is cut off at once rather than when the write returns.

    It subscribes first, then reads: what the hub hands out from then on has ids above its
    `position` at subscription, and the store's reads cover everything below, so nothing falls
    between; ids already sent are skipped.
    """

    def __init__(self, hub: EventHub, account_id: str) -> None:
        self._hub = hub
        self._account_id = account_id
        self._live = False
        self._sent = 0
        self.last_committed = 0
        """The last event id committed when the watch started."""
        self.cut = asyncio.Event()
        self.ended: OrderError | None = None
        """Why the stream was cut, once `cut` is set."""
        self._subscription = hub.subscribe(account_id, self._subscription_ended)

    async def start(self, after_id: int | None) -> None:
        """Read where the watch starts, once subscribed: past `after_id`, or past every event
        committed now. Once this returns, no event committed later can be missed."""
        self.last_committed = await self._hub.source.last_event_id()
        # Every id at or below the last committed now is "before now", whether or not the hub
        # has handed it out yet.
        self._live = after_id is None
        self._sent = self.last_committed if after_id is None else after_id

    def _subscription_ended(self, why: OrderError) -> None:
        # Falling behind while the backlog is read from the store is made good from the store
        # (see `events`); anything else, or falling behind live, ends the stream.
        if self._live or why.reason != OVERFLOWED:
            self.ended = why
            self.cut.set()

    def close(self) -> None:
        self._subscription.close()

    async def events(self) -> AsyncGenerator[StoredEvent, None]:
        hub, account_id = self._hub, self._account_id
        batch_size = hub.settings.batch_size
        sent = self._sent
        try:
            while not self._live:
                events = await hub.source.events_after(sent, limit=batch_size, account_id=account_id)
                for event in events:
                    yield event
                    sent = event.event_id
                if len(events) == batch_size:
                    continue
                ended = self._subscription.ended
                if ended is None:
                    self._live = True
                elif ended.reason != OVERFLOWED:
                    raise ended
                else:
                    # Live events came faster than the backlog was sent: the queue is lost, but
                    # the store holds everything. Subscribe again, then read on from the store.
                    self._subscription = hub.subscribe(account_id, self._subscription_ended)
            while True:
                event = await self._subscription.next()
                if event.event_id > sent:
                    yield event
                    sent = event.event_id
        finally:
            self._subscription.close()
