"""The servicer's core raises the error a call failed with; the gRPC face writes it out as rich
status, and the in-process backend hands the error object itself to the REST side."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, NoReturn, cast

import grpc
import pytest

from gateway.calls.admission import Admission
from gateway.calls.auth import Authenticator, duplicate_credentials, unauthenticated
from gateway.calls.limits import AuthFailureLimit
from gateway.calls.orders import OrderCalls
from gateway.calls.replay import WebhookReplay
from gateway.domain.errors import InvalidArgument, NotFound, OrderError
from gateway.events.hub import SHUTTING_DOWN, EventHub, WatchSettings
from gateway.protos import SERVICE_DESCRIPTOR, events_pb2, orders_service_pb2
from gateway.rest.backend import InProcessBackend
from gateway.rest.rules import rest_calls
from gateway.rpc.servicer import MalformedRequest, OrdersServicer
from gateway.rpc.status import (
    CallFailed,
    code_of,
    details_from_metadata,
    error_of,
    internal_error,
    status_of,
)
from gateway.store.events import StoredEvent

CALLS = {call.name: call for call in rest_calls(SERVICE_DESCRIPTOR)}
AUTH = (("authorization", "Basic ok"),)
REQUEST = orders_service_pb2.GetOrderRequest(order_handle="h")


class FakeCalls:
    """OrderCalls whose get_order raises `failure`, or sleeps for `delay_s` and answers."""

    def __init__(self, failure: BaseException | None = None, delay_s: float = 0.0) -> None:
        self.failure = failure
        self.delay_s = delay_s

    async def get_order(self, account_id: str, request: Any, deadline: float) -> Any:
        await asyncio.sleep(self.delay_s)
        if self.failure is not None:
            raise self.failure
        return orders_service_pb2.GetOrderResponse().order

    track_orders = cancel_order = complete_order = disable_order = get_order


class FakeAuthenticator:
    async def authenticate(self, authorization: str | None) -> str:
        if authorization != "Basic ok":
            raise unauthenticated()
        return "account"


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(
        self, metadata: Any = AUTH, *, remaining: float | None = None, peer: str = "ipv4:127.0.0.1:5000"
    ) -> None:
        self.metadata = metadata
        self.remaining = remaining
        self.peer_address = peer
        self.aborted: tuple[grpc.StatusCode, str, Any] | None = None

    def invocation_metadata(self) -> Any:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    def peer(self) -> str:
        return self.peer_address

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        self.aborted = (code, details, trailing_metadata)
        raise Aborted()


class Observer:
    """Records what the servicer tells its observer: calls started, and calls handled with their code."""

    def __init__(self, handled: list[tuple[str, grpc.StatusCode]] | None = None) -> None:
        self.started: list[str] = []
        self.sent: list[str] = []
        self.handled = [] if handled is None else handled

    def call_started(self, method: str) -> None:
        self.started.append(method)

    def message_sent(self, method: str) -> None:
        self.sent.append(method)

    def call_handled(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        assert seconds >= 0
        self.handled.append((method, code))


def servicer(
    calls: FakeCalls,
    observed: list[tuple[str, grpc.StatusCode]] | None = None,
    *,
    admission: Admission | None = None,
    max_timeout_s: float = 60.0,
) -> OrdersServicer:
    """A servicer over `calls`; the calls it handles over gRPC are appended to `observed`."""
    return OrdersServicer(
        cast(OrderCalls, calls),
        cast(Authenticator, FakeAuthenticator()),
        admission=admission,
        observe=Observer(observed),
        max_timeout_s=max_timeout_s,
    )


async def aborted_with(servicer: OrdersServicer, context: FakeContext) -> OrderError:
    """The error a gRPC call was answered with, rebuilt from its rich status."""
    with pytest.raises(Aborted):
        await servicer.GetOrder(REQUEST, context)
    assert context.aborted is not None
    code, _, trailing = context.aborted
    return error_of(code, details_from_metadata(trailing))


async def test_the_in_process_backend_raises_the_error_object_itself() -> None:
    failure = NotFound("ORDER_NOT_FOUND", "order 'h' not found", {"order_handle": "h"})
    backend = InProcessBackend(servicer(FakeCalls(failure)), serving=None)
    with pytest.raises(NotFound) as raised:
        await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 5.0, "127.0.0.1")
    assert raised.value is failure


async def test_the_in_process_backend_answers_unauthenticated_callers_with_the_error() -> None:
    backend = InProcessBackend(servicer(FakeCalls()), serving=None)
    with pytest.raises(OrderError) as raised:
        await backend.call(CALLS["GetOrder"], REQUEST, (), 5.0, "127.0.0.1")
    assert raised.value == unauthenticated()


async def test_an_in_process_call_past_its_timeout_is_deadline_exceeded() -> None:
    observed: list[tuple[str, grpc.StatusCode]] = []
    backend = InProcessBackend(servicer(FakeCalls(delay_s=1.0), observed), serving=None)
    with pytest.raises(CallFailed) as raised:
        await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 0.01, "127.0.0.1")
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.reason == "DEADLINE_EXCEEDED"
    assert observed == []  # an in-process call is no gRPC call: the REST metrics count it


async def test_an_in_process_bug_reaches_the_rest_side_as_itself() -> None:
    observed: list[tuple[str, grpc.StatusCode]] = []
    backend = InProcessBackend(servicer(FakeCalls(RuntimeError("a bug")), observed), serving=None)
    with pytest.raises(RuntimeError):
        await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 5.0, "127.0.0.1")
    assert observed == []


async def test_the_grpc_face_writes_the_error_out_as_rich_status() -> None:
    failure = NotFound("ORDER_NOT_FOUND", "order 'h' not found", {"order_handle": "h"})
    observed: list[tuple[str, grpc.StatusCode]] = []
    context = FakeContext()
    with pytest.raises(Aborted):
        await servicer(FakeCalls(failure), observed).GetOrder(REQUEST, context)
    assert context.aborted is not None
    code, details, trailing = context.aborted
    expected_code, expected_status = status_of(failure)
    assert (code, details) == (expected_code, expected_status.message)
    assert details_from_metadata(trailing) == expected_status
    assert error_of(code, details_from_metadata(trailing)) == failure
    assert observed == [("GetOrder", grpc.StatusCode.NOT_FOUND)]


async def test_the_grpc_face_answers_a_bug_as_internal_without_its_insides() -> None:
    context = FakeContext()
    with pytest.raises(Aborted):
        await servicer(FakeCalls(RuntimeError("secret insides"))).GetOrder(REQUEST, context)
    assert context.aborted is not None
    code, details, trailing = context.aborted
    assert error_of(code, details_from_metadata(trailing)) == internal_error()
    assert "secret" not in details


async def test_a_request_that_did_not_parse_is_an_invalid_argument() -> None:
    context = FakeContext()
    with pytest.raises(Aborted):
        await servicer(FakeCalls()).GetOrder(cast(Any, MalformedRequest("truncated")), context)
    assert context.aborted is not None
    code, _, trailing = context.aborted
    error = error_of(code, details_from_metadata(trailing))
    assert isinstance(error, InvalidArgument)
    assert error.reason == "MALFORMED_REQUEST"
    assert "truncated" in error.message


async def test_a_grpc_call_is_told_to_the_observer_when_it_starts_and_when_it_is_handled() -> None:
    observer = Observer()
    gate = asyncio.Event()

    class Gated(FakeCalls):
        async def get_order(self, *args: Any) -> Any:
            await gate.wait()
            return await super().get_order(*args)

    service = OrdersServicer(
        cast(OrderCalls, Gated()), cast(Authenticator, FakeAuthenticator()), observe=observer
    )
    call = asyncio.create_task(service.GetOrder(REQUEST, FakeContext()))
    await asyncio.sleep(0)
    assert (observer.started, observer.handled) == (["GetOrder"], [])
    gate.set()
    await call
    assert (observer.started, observer.handled) == (["GetOrder"], [("GetOrder", grpc.StatusCode.OK)])


async def test_an_answer_is_the_response_message() -> None:
    observed: list[tuple[str, grpc.StatusCode]] = []
    response = await servicer(FakeCalls(), observed).GetOrder(REQUEST, FakeContext())
    assert isinstance(response, orders_service_pb2.GetOrderResponse)
    assert observed == [("GetOrder", grpc.StatusCode.OK)]


async def test_two_authorization_entries_are_unauthenticated_with_rich_status() -> None:
    twice = (("authorization", "Basic ok"), ("authorization", "Basic other"))
    error = await aborted_with(servicer(FakeCalls()), FakeContext(twice))
    assert error == duplicate_credentials()
    assert code_of(error) is grpc.StatusCode.UNAUTHENTICATED
    # The same entry twice, too: which one a server reads must never matter.
    same = (("authorization", "Basic ok"), ("authorization", "Basic ok"))
    assert await aborted_with(servicer(FakeCalls()), FakeContext(same)) == duplicate_credentials()


@pytest.mark.parametrize("remaining", [None, 99999999 * 3600.0])
async def test_the_cap_ends_a_grpc_call_whatever_deadline_it_asked_for(remaining: float | None) -> None:
    observed: list[tuple[str, grpc.StatusCode]] = []
    slow = servicer(FakeCalls(delay_s=5.0), observed, max_timeout_s=0.05)
    started = time.monotonic()
    error = await aborted_with(slow, FakeContext(remaining=remaining))
    assert time.monotonic() - started < 2.0
    assert code_of(error) is grpc.StatusCode.DEADLINE_EXCEEDED
    assert observed == [("GetOrder", grpc.StatusCode.DEADLINE_EXCEEDED)]


async def test_the_deadline_a_call_runs_with_is_never_past_the_cap() -> None:
    deadlines: list[float] = []

    class Recording(FakeCalls):
        async def get_order(self, account_id: str, request: Any, deadline: float) -> Any:
            deadlines.append(deadline - time.monotonic())
            return orders_service_pb2.GetOrderResponse().order

    capped = servicer(Recording(), max_timeout_s=2.0)
    await capped.GetOrder(REQUEST, FakeContext(remaining=1e9))
    await capped.GetOrder(REQUEST, FakeContext(remaining=None))
    await capped.answer("GetOrder", REQUEST, AUTH, client="198.51.100.7", deadline=time.monotonic() + 1e9)
    assert all(0 < remaining <= 2.0 for remaining in deadlines), deadlines


async def test_an_in_process_call_is_keyed_on_the_client_it_is_handed() -> None:
    """The REST side in this process says who the client is; the metadata's x-forwarded-for is
    nobody's word."""
    admission = Admission(auth_failures=AuthFailureLimit(2, 60.0))
    backend = InProcessBackend(servicer(FakeCalls(), admission=admission), serving=None)
    for spoofed in ("203.0.113.1", "203.0.113.2"):
        bad = (("authorization", "Basic wrong"), ("x-forwarded-for", spoofed))
        with pytest.raises(OrderError) as failed:
            await backend.call(CALLS["GetOrder"], REQUEST, bad, 5.0, "198.51.100.7")
        assert failed.value == unauthenticated()
    with pytest.raises(OrderError) as locked:
        await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 5.0, "198.51.100.7")
    assert locked.value.reason == "TOO_MANY_FAILED_AUTHENTICATIONS"
    assert await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 5.0, "198.51.100.8") is not None


async def test_a_grpc_peer_not_named_as_trusted_cannot_name_another_client() -> None:
    admission = Admission(auth_failures=AuthFailureLimit(2, 60.0))
    guarded = servicer(FakeCalls(), admission=admission)
    for spoofed in ("203.0.113.1", "203.0.113.2"):
        bad = (("authorization", "Basic wrong"), ("x-forwarded-for", spoofed))
        assert await aborted_with(guarded, FakeContext(bad)) == unauthenticated()
    forwarded = (*AUTH, ("x-forwarded-for", "203.0.113.7"))
    locked = await aborted_with(guarded, FakeContext(forwarded))
    assert locked.reason == "TOO_MANY_FAILED_AUTHENTICATIONS"


# --- ListOrderWebhooks and WatchOrderEvents ------------------------------------------------------


class FakeReplay:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def list_order_webhooks(
        self, account_id: str, request: orders_service_pb2.ListOrderWebhooksRequest, deadline: float
    ) -> orders_service_pb2.ListOrderWebhooksResponse:
        self.calls.append((account_id, request.order_handle))
        return orders_service_pb2.ListOrderWebhooksResponse(pagination_token="next")


class StreamContext(FakeContext):
    """A streaming call's context: what was written, when the headers went, and writes that can be
    held (a caller that stopped reading)."""

    def __init__(self, metadata: Any = AUTH) -> None:
        super().__init__(metadata)
        self.written: list[orders_service_pb2.WatchOrderEventsResponse] = []
        self.headers_sent = asyncio.Event()
        self.wrote = asyncio.Event()
        self.hold = False
        self.held: list[asyncio.Future[None]] = []

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        assert not self.written
        self.headers_sent.set()

    async def write(self, message: Any) -> None:
        if self.hold:
            stuck: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.held.append(stuck)
            await stuck
        self.written.append(message)
        self.wrote.set()


def event_body(account_id: str, handle: str) -> bytes:
    event = events_pb2.OrderEvent(account_id=account_id, type="order", version="3.0.0")
    event.data.order_handle = handle
    return event.SerializeToString()


class Outbox:
    """Committed events in memory, as the hub reads them."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.listeners: list[Callable[[], None]] = []

    def commit(self, account_id: str, handle: str) -> int:
        self.events.append(StoredEvent(len(self.events) + 1, account_id, event_body(account_id, handle)))
        for listener in self.listeners:
            listener()
        return len(self.events)

    async def last_event_id(self) -> int:
        return len(self.events)

    async def events_after(
        self, after_id: int, *, limit: int, account_id: str | None = None
    ) -> list[StoredEvent]:
        await asyncio.sleep(0)
        return [e for e in self.events if e.event_id > after_id and account_id in (None, e.account_id)][
            :limit
        ]

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    def on_deliveries_pending(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)


async def watching(
    hub: EventHub, request: orders_service_pb2.WatchOrderEventsRequest, context: StreamContext
) -> tuple[OrdersServicer, asyncio.Task[None], list[tuple[str, grpc.StatusCode]]]:
    observed: list[tuple[str, grpc.StatusCode]] = []
    service = OrdersServicer(
        cast(OrderCalls, FakeCalls()),
        cast(Authenticator, FakeAuthenticator()),
        observe=Observer(observed),
        hub=hub,
    )
    call = asyncio.create_task(service.WatchOrderEvents(request, cast(Any, context)))
    return service, call, observed


async def test_the_replay_is_served_in_process_and_over_grpc() -> None:
    replay = FakeReplay()
    service = OrdersServicer(
        cast(OrderCalls, FakeCalls()),
        cast(Authenticator, FakeAuthenticator()),
        replay=cast(WebhookReplay, replay),
    )
    request = orders_service_pb2.ListOrderWebhooksRequest(order_handle="h")
    backend = InProcessBackend(service, serving=None)
    answered = await backend.call(CALLS["ListOrderWebhooks"], request, AUTH, 5.0, "127.0.0.1")
    assert isinstance(answered, orders_service_pb2.ListOrderWebhooksResponse)
    over_grpc = await service.ListOrderWebhooks(request, FakeContext())
    assert answered == over_grpc
    assert replay.calls == [("account", "h"), ("account", "h")]


async def test_without_a_replay_or_a_hub_the_calls_are_unimplemented() -> None:
    service = servicer(FakeCalls())
    with pytest.raises(CallFailed) as raised:
        await service.answer(
            "ListOrderWebhooks", orders_service_pb2.ListOrderWebhooksRequest(), AUTH, client="", deadline=None
        )
    assert raised.value.code is grpc.StatusCode.UNIMPLEMENTED
    context = StreamContext()
    with pytest.raises(Aborted):
        await service.WatchOrderEvents(orders_service_pb2.WatchOrderEventsRequest(), cast(Any, context))
    assert context.aborted is not None and context.aborted[0] is grpc.StatusCode.UNIMPLEMENTED


async def test_a_watch_writes_each_event_of_its_account_with_its_cursor() -> None:
    outbox = Outbox()
    outbox.commit("account", "before")  # before the watch: not sent
    hub = EventHub(outbox, WatchSettings(poll_interval_s=60))
    await hub.start()
    context = StreamContext()
    _, call, observed = await watching(hub, orders_service_pb2.WatchOrderEventsRequest(), context)
    await context.headers_sent.wait()  # subscribed: whatever commits now is sent
    outbox.commit("other", "theirs")
    mine = outbox.commit("account", "mine")
    await context.wrote.wait()
    assert [(r.cursor, r.event.data.order_handle) for r in context.written] == [(str(mine), "mine")]
    await hub.stop()
    with pytest.raises(Aborted):
        await call
    assert context.aborted is not None
    error = error_of(context.aborted[0], details_from_metadata(context.aborted[2]))
    assert (code_of(error), error.reason) == (grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
    assert observed == [("WatchOrderEvents", grpc.StatusCode.UNAVAILABLE)]
    assert hub.watchers == 0


@pytest.mark.parametrize("cursor", ["x", "-1", "01", " 1", "1.0", "9223372036854775808", "1" * 30, "5"])
async def test_a_cursor_that_this_stream_did_not_send_is_an_invalid_argument(cursor: str) -> None:
    outbox = Outbox()
    for _ in range(4):
        outbox.commit("account", "h")
    hub = EventHub(outbox, WatchSettings(poll_interval_s=60))
    await hub.start()
    context = StreamContext()
    _, call, _ = await watching(hub, orders_service_pb2.WatchOrderEventsRequest(cursor=cursor), context)
    with pytest.raises(Aborted):
        await call
    assert context.aborted is not None
    error = error_of(context.aborted[0], details_from_metadata(context.aborted[2]))
    assert isinstance(error, InvalidArgument)
    assert [v.field for v in error.violations] == ["cursor"]
    assert not context.headers_sent.is_set()
    assert hub.watchers == 0
    await hub.stop()


async def test_a_watcher_that_stopped_reading_is_cut_off_without_waiting_for_its_write() -> None:
    outbox = Outbox()
    hub = EventHub(outbox, WatchSettings(poll_interval_s=60, queue_size=4, batch_size=2))
    await hub.start()
    context = StreamContext()
    _, call, observed = await watching(hub, orders_service_pb2.WatchOrderEventsRequest(), context)
    await context.headers_sent.wait()
    context.hold = True  # every write from now on waits for a reader that never comes
    for _ in range(20):
        outbox.commit("account", "h")
    with pytest.raises(Aborted):
        async with asyncio.timeout(10):  # a guard: left to its write, the call would never end
            await call
    assert context.aborted is not None
    error = error_of(context.aborted[0], details_from_metadata(context.aborted[2]))
    assert code_of(error) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert context.held and all(write.cancelled() for write in context.held)
    assert observed == [("WatchOrderEvents", grpc.StatusCode.RESOURCE_EXHAUSTED)]
    assert hub.watchers == 0
    await hub.stop()


async def test_a_watch_authenticates_like_every_call() -> None:
    hub = EventHub(Outbox(), WatchSettings(poll_interval_s=60))
    await hub.start()
    context = StreamContext(metadata=())
    _, call, _ = await watching(hub, orders_service_pb2.WatchOrderEventsRequest(), context)
    with pytest.raises(Aborted):
        await call
    assert context.aborted is not None and context.aborted[0] is grpc.StatusCode.UNAUTHENTICATED
    assert hub.watchers == 0
    await hub.stop()
