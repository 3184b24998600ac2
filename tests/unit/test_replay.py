"""ListOrderWebhooks' call: the request's validation, the pages, and the pagination token, which
cannot be forged nor moved to another account, handle or query."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.calls.replay import (
    BAD_TOKEN,
    MUST_BE_REPLAYED_VALUE,
    Position,
    ReplayQuery,
    WebhookReplay,
    make_token,
    read_token,
    replay_query,
    token_key,
)
from gateway.domain.errors import FieldViolation, InvalidArgument, Unauthenticated
from gateway.protos import events_pb2, order_pb2, orders_service_pb2
from gateway.store.events import DeliveryState, EventQuery, ReplayedEvent

CANCELLED = order_pb2.ORDER_STATUS_CANCELLED
COMPLETED = order_pb2.ORDER_STATUS_COMPLETED
DISABLED = order_pb2.ORDER_STATUS_DISABLED
Request = orders_service_pb2.ListOrderWebhooksRequest
KEY = token_key(b"stored hash of account a")
QUERY = ReplayQuery("h", (), None, None, None, descending=True, limit=50)


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def violations(request: Request) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as raised:
        replay_query(request)
    return raised.value.violations


# --- the request -----------------------------------------------------------------------------------


def test_defaults_are_newest_first_fifty_at_a_time_unfiltered() -> None:
    assert replay_query(Request(order_handle="h")) == QUERY


def test_filters_are_read_into_the_query() -> None:
    request = Request(
        order_handle="h",
        value=[COMPLETED, CANCELLED, CANCELLED],
        from_time=ts(10),
        to_time=ts(20),
        fulfillment_attempt=0,
        limit=1,
        sort_direction=events_pb2.SORT_DIRECTION_ASC,
    )
    assert replay_query(request) == ReplayQuery(
        "h", (COMPLETED, CANCELLED), 10_000_000, 20_000_000, 0, descending=False, limit=1
    )
    assert replay_query(Request(order_handle="h", limit=100)).limit == 100
    assert replay_query(Request(order_handle="h", sort_direction=events_pb2.SORT_DIRECTION_DESC)).descending


def test_times_are_rounded_up_to_the_microseconds_events_are_recorded_in() -> None:
    # An event at 10.000001 s is at or after 10.0000005 s, and one at 10.000000 s is not; likewise
    # for the exclusive upper bound.
    query = replay_query(Request(order_handle="h", from_time=ts(10, 500), to_time=ts(10, 1_001)))
    assert (query.from_us, query.to_us) == (10_000_001, 10_000_002)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (Request(order_handle=""), [FieldViolation("order_handle", "must be 1 to 255 characters")]),
        (Request(order_handle="h", limit=0), [FieldViolation("limit", "must be an integer from 1 to 100")]),
        (Request(order_handle="h", limit=101), [FieldViolation("limit", "must be an integer from 1 to 100")]),
        (
            Request(order_handle="h", fulfillment_attempt=-1),
            [FieldViolation("fulfillment_attempt", "must be an integer >= 0")],
        ),
        (
            Request(order_handle="h", value=[CANCELLED, order_pb2.ORDER_STATUS_PLANNED]),
            [FieldViolation("value", MUST_BE_REPLAYED_VALUE)],
        ),
        (Request(order_handle="h", value=[0]), [FieldViolation("value", MUST_BE_REPLAYED_VALUE)]),
        (
            Request(order_handle="h", from_time=ts(20), to_time=ts(20)),
            [FieldViolation("to_time", "must be after from_time")],
        ),
        (
            Request(order_handle="h", from_time=ts(21), to_time=ts(20)),
            [FieldViolation("to_time", "must be after from_time")],
        ),
        (
            Request(order_handle="h", from_time=ts(253402300800)),
            [FieldViolation("from_time", "must be a time from year 1 to year 9999")],
        ),
        (
            Request(order_handle="h", sort_direction=7),
            [FieldViolation("sort_direction", "must be asc or desc")],
        ),  # type: ignore[arg-type]
    ],
)
def test_invalid_requests_name_their_fields(request_: Request, expected: list[FieldViolation]) -> None:
    assert violations(request_) == expected


def test_every_violation_is_named_at_once() -> None:
    found = violations(Request(order_handle="", limit=0, fulfillment_attempt=-2, value=[1]))
    assert [v.field for v in found] == ["order_handle", "value", "fulfillment_attempt", "limit"]


# --- the token -----------------------------------------------------------------------------------


def test_a_token_names_its_position() -> None:
    token = make_token(KEY, "a", QUERY, Position(12345, True))
    assert read_token(KEY, "a", QUERY, token) == Position(12345, True)
    # Opaque, short, and safe in a URL as it is.
    assert len(token) <= 40
    assert token.replace("-", "").replace("_", "").isalnum()


def test_the_page_size_may_change_between_pages() -> None:
    token = make_token(KEY, "a", QUERY, Position(7, True))
    smaller = ReplayQuery("h", (), None, None, None, descending=True, limit=5)
    assert read_token(KEY, "a", smaller, token) == Position(7, True)


@pytest.mark.parametrize(
    "other",
    [
        ReplayQuery("h2", (), None, None, None, descending=True, limit=50),  # another handle
        ReplayQuery("h", (CANCELLED,), None, None, None, descending=True, limit=50),
        ReplayQuery("h", (), 1, None, None, descending=True, limit=50),
        ReplayQuery("h", (), None, 1, None, descending=True, limit=50),
        ReplayQuery("h", (), None, None, 0, descending=True, limit=50),
        ReplayQuery("h", (), None, None, None, descending=False, limit=50),  # the other direction
    ],
)
def test_a_token_serves_only_its_own_query(other: ReplayQuery) -> None:
    token = make_token(KEY, "a", QUERY, Position(7, True))
    with pytest.raises(InvalidArgument) as raised:
        read_token(KEY, "a", other, token)
    assert raised.value.violations == [FieldViolation("pagination_token", BAD_TOKEN)]


def test_a_token_serves_only_its_own_account() -> None:
    token = make_token(KEY, "a", QUERY, Position(7, True))
    with pytest.raises(InvalidArgument):
        read_token(token_key(b"stored hash of account b"), "b", QUERY, token)
    with pytest.raises(InvalidArgument):  # even with the same key, the account is in the MAC
        read_token(KEY, "b", QUERY, token)


def test_a_forged_position_is_refused() -> None:
    token = make_token(KEY, "a", QUERY, Position(7, True))
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[9] ^= 1  # the last byte of the event id
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument):
        read_token(KEY, "a", QUERY, forged)


@pytest.mark.parametrize("token", ["x", "!!!!", "AAAA", "a" * 500, "é", "AQEAAAAAAAAABw", " "])
def test_garbage_is_refused_as_a_bad_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        read_token(KEY, "a", QUERY, token)
    assert raised.value.violations == [FieldViolation("pagination_token", BAD_TOKEN)]


# --- the call, over a store in memory ---------------------------------------------------------------


def event_body(handle: str, value: int, recorded_us: int) -> bytes:
    event = events_pb2.OrderEvent(account_id="a", type="order", version="3.0.0")
    event.recorded_at.FromMicroseconds(recorded_us)
    event.data.order_handle = handle
    event.data.value = value
    return event.SerializeToString()


class MemoryEvents:
    """order_events over a list, as the store contract says, and the account's secret hash."""

    def __init__(self, events: Sequence[tuple[int, int, int]]) -> None:
        """(event id, value, recorded_at_us) of handle `h` of account `a`."""
        self.events = events
        self.queries: list[EventQuery] = []
        self.secret_hash: bytes | None = b"stored hash of account a"

    async def order_events(
        self, account_id: str, order_handle: str, query: EventQuery, *, deadline: float
    ) -> list[ReplayedEvent]:
        self.queries.append(query)
        if (account_id, order_handle) != ("a", "h"):
            return []
        chosen = [
            e
            for e in sorted(self.events, reverse=query.descending)
            if (not query.values or e[1] in query.values)
            and (query.from_us is None or e[2] >= query.from_us)
            and (query.to_us is None or e[2] < query.to_us)
            and (
                query.after_id is None
                or (e[0] < query.after_id if query.descending else e[0] > query.after_id)
            )
        ]
        return [
            ReplayedEvent(i, event_body("h", v, us), DeliveryState.DELIVERED, 200, i % 3, f"ok {i}")
            for i, v, us in chosen[: query.limit]
        ]

    async def account_secret_hash(self, account_id: str) -> bytes | None:
        return self.secret_hash


def request_of(previous: Request, token: str) -> Request:
    following = Request()
    following.CopyFrom(previous)
    following.pagination_token = token
    return following


EVENTS = [(i, (CANCELLED, COMPLETED, DISABLED)[i % 3], 1_000_000 * i) for i in range(1, 8)]


async def test_pages_follow_each_other_newest_first() -> None:
    store = MemoryEvents(EVENTS)
    replay = WebhookReplay(store)
    request = Request(order_handle="h", limit=3)
    seen: list[int] = []
    while True:
        response = await replay.list_order_webhooks("a", request, time.monotonic() + 5)
        seen.append(-1)
        seen.extend(int(w.delivery_http_response_text.split()[1]) for w in response.webhooks)
        if not response.HasField("pagination_token"):
            break
        request = request_of(request, response.pagination_token)
    assert seen == [-1, 7, 6, 5, -1, 4, 3, 2, -1, 1]
    # One more than the page is read, to know whether another page follows.
    assert [q.limit for q in store.queries] == [4, 4, 4]
    assert [q.after_id for q in store.queries] == [None, 5, 2]


async def test_pages_follow_each_other_oldest_first_with_filters() -> None:
    store = MemoryEvents(EVENTS)
    replay = WebhookReplay(store)
    request = Request(
        order_handle="h",
        limit=2,
        value=[CANCELLED, COMPLETED],
        from_time=ts(2),
        sort_direction=events_pb2.SORT_DIRECTION_ASC,
    )
    seen: list[list[int]] = []
    while True:
        response = await replay.list_order_webhooks("a", request, time.monotonic() + 5)
        seen.append([int(w.delivery_http_response_text.split()[1]) for w in response.webhooks])
        if not response.HasField("pagination_token"):
            break
        request = request_of(request, response.pagination_token)
    # Ids 2..7 without the disabled ones (2, 5).
    assert seen == [[3, 4], [6, 7]]
    assert store.queries[0].values == (COMPLETED, CANCELLED)  # sorted: a token does not mind the order
    assert store.queries[0].from_us == 2_000_000


async def test_the_token_key_comes_from_the_lookup_given_not_the_store() -> None:
    store = MemoryEvents(EVENTS)
    looked_up: list[str] = []

    async def cached_hash(account_id: str) -> bytes | None:
        looked_up.append(account_id)
        return await MemoryEvents(EVENTS).account_secret_hash(account_id)

    async def unread(account_id: str) -> bytes | None:
        raise AssertionError("the replay read the store for the account's hash")

    store.account_secret_hash = unread  # type: ignore[method-assign]
    replay = WebhookReplay(store, cached_hash)
    first = await replay.list_order_webhooks("a", Request(order_handle="h", limit=3), time.monotonic() + 5)
    request = request_of(Request(order_handle="h", limit=3), first.pagination_token)
    second = await replay.list_order_webhooks("a", request, time.monotonic() + 5)
    assert [w.delivery_http_response_text for w in second.webhooks] == ["ok 4", "ok 3", "ok 2"]
    assert looked_up == ["a", "a"]  # once a page: the second checks its token and makes the next with one key


async def test_a_page_that_ends_exactly_at_the_last_event_has_no_token() -> None:
    replay = WebhookReplay(MemoryEvents(EVENTS[:2]))
    response = await replay.list_order_webhooks("a", Request(order_handle="h", limit=2), time.monotonic() + 5)
    assert len(response.webhooks) == 2
    assert not response.HasField("pagination_token")


async def test_webhooks_carry_the_event_and_its_delivery() -> None:
    store = MemoryEvents(EVENTS[:1])
    response = await WebhookReplay(store).list_order_webhooks(
        "a", Request(order_handle="h"), time.monotonic() + 5
    )
    (webhook,) = response.webhooks
    assert (webhook.account_id, webhook.type, webhook.data.order_handle) == ("a", "order", "h")
    assert webhook.recorded_at.ToMicroseconds() == 1_000_000
    assert (webhook.delivery_http_status, webhook.retry_count, webhook.delivery_http_response_text) == (
        200,
        1,
        "ok 1",
    )


async def test_a_webhook_never_answered_has_no_status_nor_text() -> None:
    class Unanswered(MemoryEvents):
        async def order_events(self, *args: object, **kwargs: object) -> list[ReplayedEvent]:
            return [ReplayedEvent(1, event_body("h", CANCELLED, 1), DeliveryState.PENDING, None, 0, None)]

    response = await WebhookReplay(Unanswered([])).list_order_webhooks(
        "a", Request(order_handle="h"), time.monotonic() + 5
    )
    (webhook,) = response.webhooks
    assert not webhook.HasField("delivery_http_status")
    assert not webhook.HasField("delivery_http_response_text")


async def test_a_token_of_another_account_or_query_is_refused_before_reading() -> None:
    store = MemoryEvents(EVENTS)
    replay = WebhookReplay(store)
    first = await replay.list_order_webhooks("a", Request(order_handle="h", limit=2), time.monotonic() + 5)
    token = first.pagination_token
    store.queries.clear()
    with pytest.raises(InvalidArgument):
        await replay.list_order_webhooks(
            "a",
            Request(order_handle="h", limit=2, value=[CANCELLED], pagination_token=token),
            time.monotonic() + 5,
        )
    store.secret_hash = b"another account's hash"
    with pytest.raises(InvalidArgument):
        await replay.list_order_webhooks(
            "b", Request(order_handle="h", pagination_token=token), time.monotonic() + 5
        )
    assert store.queries == []


async def test_an_account_gone_since_authentication_is_unauthenticated() -> None:
    store = MemoryEvents(EVENTS)
    store.secret_hash = None
    with pytest.raises(Unauthenticated):
        await WebhookReplay(store).list_order_webhooks(
            "a", Request(order_handle="h", limit=1), time.monotonic() + 5
        )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_any_token_not_made_here_is_refused_as_invalid(token: str) -> None:
    # A valid one would need its 128-bit MAC guessed.
    with pytest.raises(InvalidArgument) as refused:
        read_token(KEY, "a", QUERY, token)
    assert refused.value.violations == [FieldViolation("pagination_token", BAD_TOKEN)]
