"""ListOrderWebhooks: the events of one order handle, with what became of their delivery, a page
at a time, read top to bottom: validate the request, read the page (and one event more, to know
whether another page follows), build the webhooks, name the next page.

The pagination token is opaque to callers but says, to this service, where the page ended (the
last event id and the direction) and is bound to the query it belongs to (the account, the handle,
the filters): urlsafe base64 of the position and a truncated HMAC-SHA256 over the position and the
query. Its key is derived from the account's stored secret hash: every process of a deployment
reads the same hash from the same database, callers never see it, and another account's key is
another key. So a token cannot be forged, nor moved to another account's events or to another
query (refused as INVALID_ARGUMENT on `pagination_token`). A token dies with the secret it was
made under: after the account's secret changes, a replay starts again from its first page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import orjson

from gateway.calls.auth import unauthenticated
from gateway.domain.errors import FieldViolation, InvalidArgument, invalid
from gateway.domain.targets import order_not_found
from gateway.domain.validation import HANDLE, NON_NEGATIVE, PAGE_SIZE, check_timestamp
from gateway.protos import events_pb2, order_pb2, orders_service_pb2
from gateway.store.base import StoredRecord
from gateway.store.events import EventQuery, ReplayedEvent

DEFAULT_PAGE_SIZE = 50
REPLAYED_VALUES = (
    order_pb2.ORDER_STATUS_CANCELLED,
    order_pb2.ORDER_STATUS_COMPLETED,
    order_pb2.ORDER_STATUS_DISABLED,
)
"""The `data.value`s an event can have: the changes that write one."""
MUST_BE_REPLAYED_VALUE = "must name only cancelled, completed or disabled"

_TOKEN_VERSION = 1
# version, direction (1: descending), last event id.
_POSITION = struct.Struct(">BBq")
_MAC_BYTES = 16
"""128 bits of HMAC-SHA256: beyond guessing, and the token stays short."""
_KEY_LABEL = b"hypertrack-gateway ListOrderWebhooks pagination token v1"
BAD_TOKEN = (
    "is not a pagination token of this query: pass the previous page's token unchanged, with the same filters"
)


class ReplayStore(Protocol):
    """What the replay reads: the events (gateway/store/events.py), whether the order exists, and
    the key of its tokens."""

    async def order_events(
        self, account_id: str, order_handle: str, query: EventQuery, *, deadline: float
    ) -> list[ReplayedEvent]: ...

    async def read_records(
        self, account_id: str, order_handle: str, *, deadline: float
    ) -> list[StoredRecord]: ...

    async def account_secret_hash(self, account_id: str) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class ReplayQuery:
    """A validated request: the handle, the filters and the page size."""

    order_handle: str
    values: tuple[int, ...]
    from_us: int | None
    to_us: int | None
    fulfillment_attempt: int | None
    descending: bool
    limit: int


class Position(NamedTuple):
    """Where a page ended: the last event id it held, in the direction it was read."""

    event_id: int
    descending: bool


def _ceil_micros(seconds: int, nanos: int) -> int:
    """The first whole microsecond at or after the instant: events are recorded in microseconds,
    so `recorded_at >= from` and `recorded_at < to` hold of an event exactly when they hold of it
    against these."""
    return seconds * 1_000_000 + -(-nanos // 1_000)


def replay_query(request: orders_service_pb2.ListOrderWebhooksRequest) -> ReplayQuery:
    """The request's query, validated; raises InvalidArgument naming every bad field."""
    violations: list[FieldViolation] = []
    HANDLE.check("order_handle", request.order_handle, violations)
    if any(value not in REPLAYED_VALUES for value in request.value):
        violations.append(FieldViolation("value", MUST_BE_REPLAYED_VALUE))
    bounds: dict[str, int] = {}
    for name in ("from_time", "to_time"):
        if request.HasField(name):
            instant = getattr(request, name)
            before = len(violations)
            check_timestamp(name, instant, violations)
            if len(violations) == before:
                bounds[name] = _ceil_micros(instant.seconds, instant.nanos)
    if "from_time" in bounds and "to_time" in bounds and bounds["from_time"] >= bounds["to_time"]:
        violations.append(FieldViolation("to_time", "must be after from_time"))
    attempt = request.fulfillment_attempt if request.HasField("fulfillment_attempt") else None
    if attempt is not None:
        NON_NEGATIVE.check("fulfillment_attempt", attempt, violations)
    limit = request.limit if request.HasField("limit") else DEFAULT_PAGE_SIZE
    PAGE_SIZE.check("limit", limit, violations)
    direction = request.sort_direction
    if direction not in (
        events_pb2.SORT_DIRECTION_UNSPECIFIED,
        events_pb2.SORT_DIRECTION_ASC,
        events_pb2.SORT_DIRECTION_DESC,
    ):
        violations.append(FieldViolation("sort_direction", "must be asc or desc"))
    if violations:
        raise invalid("INVALID_ARGUMENT", violations)
    return ReplayQuery(
        order_handle=request.order_handle,
        values=tuple(sorted(set(request.value))),
        from_us=bounds.get("from_time"),
        to_us=bounds.get("to_time"),
        fulfillment_attempt=attempt,
        descending=direction != events_pb2.SORT_DIRECTION_ASC,
        limit=limit,
    )


def token_key(secret_hash: bytes) -> bytes:
    """The key of an account's tokens, derived from its stored secret hash (see the module): a key
    of its own, so that the hash itself is never used for anything but checking secrets."""
    return hmac.new(secret_hash, _KEY_LABEL, hashlib.sha256).digest()


def _bound_to(account_id: str, query: ReplayQuery, position: bytes) -> bytes:
    """What a token's MAC covers: its position, and the query it belongs to but for the page size
    (a caller may change that between pages). Canonical JSON, so no two queries share bytes."""
    binding = [
        account_id,
        query.order_handle,
        list(query.values),
        query.from_us,
        query.to_us,
        query.fulfillment_attempt,
    ]
    return position + orjson.dumps(binding)


def make_token(key: bytes, account_id: str, query: ReplayQuery, position: Position) -> str:
    """The opaque token of the page after `position`."""
    packed = _POSITION.pack(_TOKEN_VERSION, int(position.descending), position.event_id)
    mac = hmac.new(key, _bound_to(account_id, query, packed), hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(packed + mac).rstrip(b"=").decode("ascii")


def read_token(key: bytes, account_id: str, query: ReplayQuery, token: str) -> Position:
    """The position a token names, if this account made it for this query (in this direction);
    raises InvalidArgument on `pagination_token` otherwise, saying nothing of why."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _bad_token() from None
    if len(raw) != _POSITION.size + _MAC_BYTES:
        raise _bad_token()
    packed, mac = raw[: _POSITION.size], raw[_POSITION.size :]
    expected = hmac.new(key, _bound_to(account_id, query, packed), hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise _bad_token()
    version, descending, event_id = _POSITION.unpack(packed)
    # Made by this service, so well formed; the direction is the request's own, as the rest of it.
    if version != _TOKEN_VERSION or bool(descending) != query.descending:
        raise _bad_token()
    return Position(event_id, bool(descending))


def _bad_token() -> InvalidArgument:
    return invalid("INVALID_ARGUMENT", [FieldViolation("pagination_token", BAD_TOKEN)])


def webhook_of(event: ReplayedEvent) -> events_pb2.OrderWebhook:
    """The event as the replay shows it: its own fields (an OrderEvent's bytes are an OrderWebhook's
    first fields), then its delivery."""
    webhook = events_pb2.OrderWebhook.FromString(event.body)
    if event.http_status is not None:
        webhook.delivery_http_status = event.http_status
    webhook.retry_count = event.retry_count
    if event.response_text is not None:
        webhook.delivery_http_response_text = event.response_text
    return webhook


def page_of(
    events: Sequence[ReplayedEvent], query: ReplayQuery
) -> tuple[list[events_pb2.OrderWebhook], Position | None]:
    """The page of `events` (read with one more than the page holds), and where the next starts."""
    page = events[: query.limit]
    more = len(events) > query.limit
    return [webhook_of(e) for e in page], Position(page[-1].event_id, query.descending) if more else None


class WebhookReplay:
    """ListOrderWebhooks for an authenticated account, over a store."""

    def __init__(
        self, store: ReplayStore, secret_hash: Callable[[str], Awaitable[bytes | None]] | None = None
    ) -> None:
        self.store = store
        # The key of the tokens comes from the account's stored secret hash: the authenticator's
        # cached lookup (which the call was just authenticated with) spares a store read per page.
        self._secret_hash = secret_hash or store.account_secret_hash

    async def list_order_webhooks(
        self, account_id: str, request: orders_service_pb2.ListOrderWebhooksRequest, deadline: float
    ) -> orders_service_pb2.ListOrderWebhooksResponse:
        query = replay_query(request)
        key: bytes | None = None
        after_id = None
        if request.pagination_token:
            key = await self._key(account_id)
            after_id = read_token(key, account_id, query, request.pagination_token).event_id
        events = await self.store.order_events(
            account_id,
            query.order_handle,
            EventQuery(
                values=query.values,
                from_us=query.from_us,
                to_us=query.to_us,
                fulfillment_attempt=query.fulfillment_attempt,
                after_id=after_id,
                descending=query.descending,
                limit=query.limit + 1,
            ),
            deadline=deadline,
        )
        if not events and after_id is None:
            await self._check_order_exists(account_id, query.order_handle, deadline)
        webhooks, next_position = page_of(events, query)
        response = orders_service_pb2.ListOrderWebhooksResponse(webhooks=webhooks)
        if next_position is not None:
            key = key if key is not None else await self._key(account_id)
            response.pagination_token = make_token(key, account_id, query, next_position)
        return response

    async def _check_order_exists(self, account_id: str, order_handle: str, deadline: float) -> None:
        """An empty first page of a handle the account has no order of is NOT_FOUND, as for every
        other call that names an order: a page is empty only for an order that has no event."""
        if not await self.store.read_records(account_id, order_handle, deadline=deadline):
            raise order_not_found(order_handle)

    async def _key(self, account_id: str) -> bytes:
        secret_hash = await self._secret_hash(account_id)
        if secret_hash is None:  # the account went away since it was authenticated
            raise unauthenticated()
        return token_key(secret_hash)
