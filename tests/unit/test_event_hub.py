"""The event hub: one reader per process fans committed events out to the watchers of each account,
a watch catches up from the store and goes live with nothing missed or repeated, and a watcher that
falls behind is cut off rather than buffered without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

import pytest

from gateway.domain.errors import ResourceExhausted, Unavailable
from gateway.events.hub import OVERFLOWED, SHUTTING_DOWN, EventHub, Watch, WatchSettings
from gateway.store.events import StoredEvent


class MemoryOutbox:
    """An EventSource over a list: `commit` appends events and tells the listeners, as a store does
    after a commit in its own process; `commit(..., announce=False)` is another process's commit."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.listeners: list[Callable[[], None]] = []
        self.hub_reads = 0
        """Reads of every account's events: the hub's."""
        self.hub_events_read = 0
        self.before_account_read: Callable[[], None] | None = None
        self.failures: list[BaseException] = []

    def commit(self, account_id: str, count: int = 1, *, announce: bool = True) -> list[int]:
        ids = []
        for _ in range(count):
            event_id = len(self.events) + 1
            self.events.append(StoredEvent(event_id, account_id, f"{account_id}:{event_id}".encode()))
            ids.append(event_id)
        if announce:
            for listener in self.listeners:
                listener()
        return ids

    async def last_event_id(self) -> int:
        return len(self.events)

    async def events_after(
        self, after_id: int, *, limit: int, account_id: str | None = None
    ) -> list[StoredEvent]:
        await asyncio.sleep(0)  # a read yields to the loop, as a real one does
        if self.failures:
            raise self.failures.pop()
        if account_id is None:
            self.hub_reads += 1
        elif self.before_account_read is not None:
            self.before_account_read()
        chosen = [e for e in self.events if e.event_id > after_id and account_id in (None, e.account_id)]
        if account_id is None:
            self.hub_events_read += len(chosen[:limit])
        return chosen[:limit]

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)


async def take(events: AsyncGenerator[StoredEvent, None], count: int) -> list[int]:
    """The ids of the next `count` events of a watch's stream (left open)."""
    return [(await anext(events)).event_id for _ in range(count)]


async def take_once(watch: Watch, count: int) -> list[int]:
    """The ids of the first `count` events of the watch, which is then closed."""
    events = watch.events()
    try:
        return await take(events, count)
    finally:
        await events.aclose()


@pytest.fixture
async def outbox() -> MemoryOutbox:
    return MemoryOutbox()


async def started(outbox: MemoryOutbox, **settings: float) -> EventHub:
    hub = EventHub(outbox, WatchSettings(**settings))  # type: ignore[arg-type]
    await hub.start()
    return hub


async def test_one_reader_fans_out_to_every_watcher_of_the_account(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=60)
    a_watches = [await hub.watch("a", None) for _ in range(50)]
    b_watches = [await hub.watch("b", None) for _ in range(5)]
    assert hub.watchers == 55
    a_ids = outbox.commit("a", 3)
    b_ids = outbox.commit("b")
    outbox.commit("c", 2)  # nobody watches c
    results = await asyncio.gather(
        *(take_once(w, 3) for w in a_watches), *(take_once(w, 1) for w in b_watches)
    )
    assert results == [a_ids] * 50 + [b_ids] * 5
    # Fifty-five watchers, two commits: the store was read by the one reader, not per watcher.
    assert outbox.hub_reads <= 4
    await hub.stop()
    assert hub.watchers == 0


async def test_from_now_skips_what_was_committed_before(outbox: MemoryOutbox) -> None:
    outbox.commit("a", 2)
    hub = await started(outbox, poll_interval_s=60)
    outbox.commit("a", 2, announce=False)  # committed, not yet read by the hub
    watch = await hub.watch("a", None)
    (after,) = outbox.commit("a")
    assert await take_once(watch, 1) == [after]
    await hub.stop()


async def test_from_a_cursor_catches_up_then_goes_live_without_gaps_or_repeats(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=60, batch_size=3)
    outbox.commit("a", 4)
    outbox.commit("b", 2)
    outbox.commit("a", 4)
    reads = 0

    # While the backlog is read, more is committed: those events reach the watch both queued live
    # and read from the store, and must be sent once.
    def meanwhile() -> None:
        nonlocal reads
        reads += 1
        if reads <= 3:
            outbox.commit("a")
            outbox.commit("b")

    def expected() -> list[int]:
        return [e.event_id for e in outbox.events if e.account_id == "a" and e.event_id > 2]

    outbox.before_account_read = meanwhile
    watch = await hub.watch("a", 2)
    events = watch.events()
    seen: list[int] = []
    async with asyncio.timeout(10):  # a guard: a missed event would otherwise wait forever
        while len(seen) < len(expected()):
            seen.append((await anext(events)).event_id)
        assert reads >= 3  # the backlog was read while events kept coming
        # Then live: what was queued while catching up is not sent again.
        for _ in range(3):
            live = outbox.commit("a")
            seen += await take(events, 1)
            assert seen[-1:] == live
    assert seen == expected()
    await events.aclose()
    await hub.stop()


async def test_a_watcher_that_falls_behind_is_cut_off(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=60, queue_size=3, batch_size=2)
    slow = await hub.watch("a", None)
    other = await hub.watch("b", None)
    outbox.commit("a", 10)
    await slow.cut.wait()
    assert slow.ended is not None and slow.ended.reason == OVERFLOWED
    assert hub.watchers == 1  # the queue is let go at once, not when the watcher comes back
    events = slow.events()
    with pytest.raises(ResourceExhausted):
        await anext(events)
    await events.aclose()
    # The other account's watcher is not held up.
    (b_id,) = outbox.commit("b")
    assert await take_once(other, 1) == [b_id]
    await hub.stop()


async def test_falling_behind_while_catching_up_is_made_good_from_the_store(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=60, queue_size=2, batch_size=2)
    outbox.commit("a", 5)

    def burst() -> None:
        if len(outbox.events) < 40:
            outbox.commit("a", 5)

    outbox.before_account_read = burst
    watch = await hub.watch("a", 0)
    ids = await take_once(watch, 40)
    assert ids == list(range(1, 41))
    assert not watch.cut.is_set()
    await hub.stop()


async def test_stop_ends_every_watch_and_refuses_new_ones(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=60)
    watch = await hub.watch("a", None)
    events = watch.events()
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    await hub.stop()
    with pytest.raises(Unavailable) as ended:
        await waiting
    assert ended.value.reason == SHUTTING_DOWN
    assert watch.cut.is_set()
    with pytest.raises(Unavailable):
        await hub.watch("a", None)
    assert hub.watchers == 0


async def test_the_poll_finds_commits_nobody_announced(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=0.01)
    watch = await hub.watch("a", None)
    ids = outbox.commit("a", 2, announce=False)  # another process's commit
    assert await take_once(watch, 2) == ids
    await hub.stop()


async def test_a_store_outage_does_not_stop_the_reader(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=0.01)
    watch = await hub.watch("a", None)
    outbox.failures.append(Unavailable("STORE_UNAVAILABLE", "down"))
    ids = outbox.commit("a")
    assert await take_once(watch, 1) == ids
    assert not outbox.failures  # the failure did happen
    await hub.stop()


async def test_a_reader_that_fails_ends_the_watches_instead_of_leaving_them_waiting(
    outbox: MemoryOutbox,
) -> None:
    hub = await started(outbox, poll_interval_s=60)
    watch = await hub.watch("a", None)
    outbox.failures.append(RuntimeError("a bug"))
    outbox.commit("a")
    await watch.cut.wait()
    assert isinstance(watch.ended, Unavailable)
    with pytest.raises(Unavailable):
        await hub.watch("a", None)
    await hub.stop()


async def test_a_watch_that_is_closed_is_forgotten(outbox: MemoryOutbox) -> None:
    hub = await started(outbox, poll_interval_s=60)
    watches = [await hub.watch("a", None) for _ in range(3)]
    assert hub.watchers == 3
    watches[0].close()
    events = watches[1].events()
    outbox.commit("a")
    await anext(events)
    await events.aclose()  # the caller went away mid-stream
    assert hub.watchers == 1
    await hub.stop()


async def test_without_watchers_the_reader_reads_nothing_and_the_next_watcher_starts_from_now(
    outbox: MemoryOutbox,
) -> None:
    hub = await started(outbox, poll_interval_s=60, queue_size=2, batch_size=2)
    first = await hub.watch("a", None)
    (seen,) = outbox.commit("a")
    assert await take_once(first, 1) == [seen]
    assert hub.watchers == 0
    read_before = outbox.hub_events_read
    idle = outbox.commit("a", 10)  # nobody watches: the reader is woken, and reads nothing
    # Two watchers at once: both start from now, not from where the reader stood before.
    watches = await asyncio.gather(hub.watch("a", None), hub.watch("a", None))
    (after,) = outbox.commit("a")
    assert await asyncio.gather(*(take_once(w, 1) for w in watches)) == [[after], [after]]
    assert not any(w.cut.is_set() for w in watches)  # the ten were never queued to them
    assert outbox.hub_events_read - read_before == 1
    # A watcher from a cursor still gets them, from the store.
    backlog = await hub.watch("a", seen)
    assert await take_once(backlog, 11) == [*idle, after]
    await hub.stop()
