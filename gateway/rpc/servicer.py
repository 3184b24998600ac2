"""OrdersService over grpc.aio: the core of every call, and its gRPC face.

The core of a call (`answer`) authenticates the caller, applies admission, runs the call, and
either returns the response message or raises the OrderError it failed with. The gRPC methods
wrap it and write an error out as rich status; the REST front end's in-process backend calls
the core directly and gets the error object itself, so both surfaces share authentication,
admission and the error, with no status serialised to be parsed back.

WatchOrderEvents, the one streaming method (gRPC only), goes through the same core: its run writes
the events of the process's EventHub to the stream until the caller leaves, the hub cuts it off
(too slow, RESOURCE_EXHAUSTED) or the server stops (UNAVAILABLE: resume from the last cursor).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from gateway.calls.admission import Admission, Metadata
from gateway.calls.auth import Authenticator, authorization_of
from gateway.calls.orders import OrderCalls
from gateway.calls.replay import WebhookReplay
from gateway.domain.errors import (
    FieldViolation,
    InvalidArgument,
    OrderError,
    Unauthenticated,
    Unavailable,
    invalid,
)
from gateway.events.hub import SHUTTING_DOWN, EventHub, Watch
from gateway.protos import events_pb2, orders_service_pb2
from gateway.rpc.status import call_failed, internal_error, status_of, trailing_metadata
from gateway.rpc.stubs import orders_service_grpc

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")
Run = Callable[[str, Req, float], Awaitable[Res]]
"""One call after admission: (account id, request, monotonic deadline) -> response message."""

DEFAULT_DEADLINE_S = 30.0
"""Time a call may take in the store when its caller set no deadline (never over the cap)."""
DEFAULT_MAX_TIMEOUT_S = 60.0
"""Cap on a call's deadline, whatever deadline its caller set."""
WATCH = "WatchOrderEvents"
# A cursor is the decimal id of the last event sent (an int64), as this service wrote it.
_CURSOR = re.compile(r"(?:0|[1-9][0-9]{0,18})")
MUST_BE_CURSOR = "must be empty or a cursor this stream sent, unchanged"


class CallContext(Protocol):
    """The part of grpc.aio.ServicerContext the servicer uses."""

    def invocation_metadata(self) -> Any: ...

    def time_remaining(self) -> float | None: ...

    def peer(self) -> str: ...

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn: ...


class StreamContext(CallContext, Protocol):
    """A streaming call's context: it also writes responses."""

    async def write(self, message: Any) -> None: ...

    async def send_initial_metadata(self, initial_metadata: Any) -> None: ...


class CallObserver(Protocol):
    """Told of each call that arrives through the gRPC server; calls made in this process (the
    REST front end's) are not gRPC calls, and are not told."""

    def call_started(self, method: str) -> None: ...

    def message_sent(self, method: str) -> None:
        """A streaming call wrote one message."""
        ...

    def call_handled(self, method: str, code: grpc.StatusCode, seconds: float) -> None: ...


class CallWatch(Protocol):
    """Wraps each call that arrives through the gRPC server (its span, its access log line): told
    the method's name and the call's context, it awaits the call and returns what it returned."""

    def __call__(self, method: str, context: Any, call: Awaitable[Res]) -> Awaitable[Res]: ...


class MalformedRequest:
    """Request bytes that did not parse as the method's message (see gateway/rpc/server.py).

    grpc would answer a parser's exception itself, as UNKNOWN with the exception's text and no
    details; handed to the servicer instead, it is answered like any invalid argument.
    """

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class OrdersServicer(orders_service_grpc.OrdersServiceServicer):
    """The gRPC face of OrderCalls, and the core of each call for callers in this process."""

    def __init__(
        self,
        calls: OrderCalls,
        authenticator: Authenticator,
        *,
        admission: Admission | None = None,
        observe: CallObserver | None = None,
        max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S,
        watch: CallWatch | None = None,
        replay: WebhookReplay | None = None,
        hub: EventHub | None = None,
    ) -> None:
        """`replay` serves ListOrderWebhooks and `hub` WatchOrderEvents; without them the calls
        are answered UNIMPLEMENTED."""
        self._calls = calls
        self._replay = replay
        self._hub = hub
        self._authenticator = authenticator
        self._admission = admission or Admission()
        self._observe = observe
        self._max_timeout_s = max_timeout_s
        self._watch = watch
        self._default_timeout_s = min(DEFAULT_DEADLINE_S, max_timeout_s)
        self._runs: dict[str, Run[Any, Message]] = {
            "TrackOrders": calls.track_orders,
            "GetOrder": self._get_order,
            "CancelOrder": self._cancel_order,
            "CompleteOrder": self._complete_order,
            "DisableOrder": self._disable_order,
            "ListOrderWebhooks": self._list_order_webhooks,
        }

    def answer(
        self, method: str, request: Message, metadata: Metadata, *, client: str, deadline: float | None
    ) -> Awaitable[Message]:
        """The response to a call of `method` (its name in the service); raises the OrderError it
        failed with. `client` is the caller's address as the caller in this process determined it
        (its `x-forwarded-for` metadata is not read); `deadline` is on the monotonic clock, None for
        none, and never later than the cap. (A plain function that returns the core's coroutine:
        one frame fewer on the in-process path.)"""
        return self._answer(method, self._runs[method], request, metadata, client=client, deadline=deadline)

    async def _answer(
        self,
        method: str,
        run: Run[Req, Res],
        request: Req | MalformedRequest,
        metadata: Metadata,
        *,
        client: str,
        deadline: float | None,
    ) -> Res:
        started = time.monotonic()
        try:
            account_id = await self._authenticate(metadata, client)
            if isinstance(request, MalformedRequest):
                raise InvalidArgument(
                    "MALFORMED_REQUEST", f"the request message does not parse: {request.problem}"
                )
            if deadline is None:
                deadline = started + self._default_timeout_s
            else:
                deadline = min(deadline, started + self._max_timeout_s)
            return await run(account_id, request, deadline)
        except Unavailable as error:
            # The caller hears "retry later"; the operator needs the cause. A busy database is
            # the cause itself (no traceback: under contention there is one per call). A watch
            # ended by the server's shutdown is no failure of the store.
            if error.reason != SHUTTING_DOWN:
                cause = None if error.reason == "STORE_BUSY" else error.__cause__
                log.warning("store unavailable in %s: %s", method, error, exc_info=cause)
            raise

    async def _authenticate(self, metadata: Metadata, client: str) -> str:
        """The caller's account, after the address and account limits admit the call."""
        admission = self._admission
        failures = admission.auth_failures
        if failures is not None:
            failures.admit(client)
        try:
            account_id = await self._authenticator.authenticate(authorization_of(metadata))
        except Unauthenticated:
            if failures is not None:
                failures.failed(client)
            raise
        if admission.rate_limit is not None:
            admission.rate_limit.admit(account_id)
        return account_id

    def _served(
        self,
        method: str,
        run: Run[Req, Res],
        request: Req | MalformedRequest,
        context: CallContext,
        *,
        capped: bool = True,
    ) -> Awaitable[Res]:
        """`_serve` inside the watch of calls that arrive through the gRPC server, if any."""
        served = self._serve(method, run, request, context, capped=capped)
        return served if self._watch is None else self._watch(method, context, served)

    async def _serve(
        self,
        method: str,
        run: Run[Req, Res],
        request: Req | MalformedRequest,
        context: CallContext,
        *,
        capped: bool = True,
    ) -> Res:
        """The core of a gRPC call, its error written out as rich status. grpc ends a call at the
        deadline its caller set; when the cap comes first, the call is ended here. A stream that
        is not `capped` (a watch, which holds no store work while it waits) lasts as long as its
        caller's deadline, if any, and the connection's maximum age."""
        started = time.monotonic()
        remaining = context.time_remaining()
        deadline = None if remaining is None else started + remaining
        observe = self._observe
        if observe is not None:
            observe.call_started(method)
        # What the observer hears unless the call returns, fails with an error it names, or is
        # cancelled (by its caller, or its deadline as grpc keeps it).
        code = grpc.StatusCode.INTERNAL
        try:
            metadata = context.invocation_metadata()
            client = ""
            if self._admission.auth_failures is not None:
                client = self._admission.client_address(context.peer() or "", metadata)
            answer = self._answer(method, run, request, metadata, client=client, deadline=deadline)
            if not capped or (remaining is not None and remaining <= self._max_timeout_s):
                response = await answer
            else:
                cap = asyncio.timeout(self._max_timeout_s)
                try:
                    async with cap:
                        response = await answer
                except TimeoutError:
                    if not cap.expired():
                        raise
                    raise call_failed(grpc.StatusCode.DEADLINE_EXCEEDED) from None
            code = grpc.StatusCode.OK
            return response
        except OrderError as error:
            code, status = status_of(error)
            await context.abort(code, status.message, trailing_metadata(status))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            # The gRPC surface's last resort: logged, and answered without its insides rather
            # than as grpc's UNKNOWN with the exception's text.
            log.exception("unexpected failure in %s", method)
            code, status = status_of(internal_error())
            await context.abort(code, status.message, trailing_metadata(status))
        finally:
            if observe is not None:
                observe.call_handled(method, code, time.monotonic() - started)

    async def _get_order(
        self, account_id: str, request: orders_service_pb2.GetOrderRequest, deadline: float
    ) -> orders_service_pb2.GetOrderResponse:
        order = await self._calls.get_order(account_id, request, deadline)
        return orders_service_pb2.GetOrderResponse(order=order)

    async def _cancel_order(
        self, account_id: str, request: orders_service_pb2.CancelOrderRequest, deadline: float
    ) -> orders_service_pb2.CancelOrderResponse:
        order = await self._calls.cancel_order(account_id, request, deadline)
        return orders_service_pb2.CancelOrderResponse(order=order)

    async def _complete_order(
        self, account_id: str, request: orders_service_pb2.CompleteOrderRequest, deadline: float
    ) -> orders_service_pb2.CompleteOrderResponse:
        order = await self._calls.complete_order(account_id, request, deadline)
        return orders_service_pb2.CompleteOrderResponse(order=order)

    async def _disable_order(
        self, account_id: str, request: orders_service_pb2.DisableOrderRequest, deadline: float
    ) -> orders_service_pb2.DisableOrderResponse:
        order = await self._calls.disable_order(account_id, request, deadline)
        return orders_service_pb2.DisableOrderResponse(order=order)

    async def _list_order_webhooks(
        self, account_id: str, request: orders_service_pb2.ListOrderWebhooksRequest, deadline: float
    ) -> orders_service_pb2.ListOrderWebhooksResponse:
        if self._replay is None:
            raise call_failed(grpc.StatusCode.UNIMPLEMENTED)
        return await self._replay.list_order_webhooks(account_id, request, deadline)

    async def _watch_order_events(
        self,
        context: StreamContext,
        account_id: str,
        request: orders_service_pb2.WatchOrderEventsRequest,
        deadline: float,
    ) -> None:
        """Write the account's events past the cursor to the stream, then live ones, until the
        caller leaves or the hub ends the watch (raised)."""
        hub = self._hub
        if hub is None:
            raise call_failed(grpc.StatusCode.UNIMPLEMENTED)
        after_id = _cursor_of(request.cursor)
        watch = await hub.watch(account_id, after_id)
        events = watch.events()
        # Waited on beside each write: a watcher that stopped reading is cut off when the hub
        # says so, not when its write would return.
        cut = asyncio.ensure_future(watch.cut.wait())
        try:
            if after_id is not None and after_id > watch.last_committed:
                raise _bad_cursor()  # from another database, or made up: events would be skipped
            # Said at once, not with the first event: a caller that has the headers knows that
            # whatever it commits from now on will reach it.
            await context.send_initial_metadata(())
            async for event in events:
                response = orders_service_pb2.WatchOrderEventsResponse(
                    cursor=str(event.event_id), event=events_pb2.OrderEvent.FromString(event.body)
                )
                await _write(context, response, watch, cut)
                if self._observe is not None:
                    self._observe.message_sent(WATCH)
        finally:
            cut.cancel()
            await events.aclose()
            watch.close()

    async def TrackOrders(
        self, request: orders_service_pb2.TrackOrdersRequest, context: CallContext
    ) -> orders_service_pb2.TrackOrdersResponse:
        return await self._served("TrackOrders", self._calls.track_orders, request, context)

    async def GetOrder(
        self, request: orders_service_pb2.GetOrderRequest, context: CallContext
    ) -> orders_service_pb2.GetOrderResponse:
        return await self._served("GetOrder", self._get_order, request, context)

    async def CancelOrder(
        self, request: orders_service_pb2.CancelOrderRequest, context: CallContext
    ) -> orders_service_pb2.CancelOrderResponse:
        return await self._served("CancelOrder", self._cancel_order, request, context)

    async def CompleteOrder(
        self, request: orders_service_pb2.CompleteOrderRequest, context: CallContext
    ) -> orders_service_pb2.CompleteOrderResponse:
        return await self._served("CompleteOrder", self._complete_order, request, context)

    async def DisableOrder(
        self, request: orders_service_pb2.DisableOrderRequest, context: CallContext
    ) -> orders_service_pb2.DisableOrderResponse:
        return await self._served("DisableOrder", self._disable_order, request, context)

    async def ListOrderWebhooks(
        self, request: orders_service_pb2.ListOrderWebhooksRequest, context: CallContext
    ) -> orders_service_pb2.ListOrderWebhooksResponse:
        return await self._served("ListOrderWebhooks", self._list_order_webhooks, request, context)

    async def WatchOrderEvents(
        self, request: orders_service_pb2.WatchOrderEventsRequest, context: StreamContext
    ) -> None:
        run = partial(self._watch_order_events, context)
        await self._served(WATCH, run, request, context, capped=False)


async def _write(
    context: StreamContext,
    response: orders_service_pb2.WatchOrderEventsResponse,
    watch: Watch,
    cut: asyncio.Future[Any],
) -> None:
    """Write one response, unless the hub cuts the watch off first (then raise why)."""
    write = asyncio.ensure_future(context.write(response))
    # A write given up (the caller left, or was cut off) fails or is cancelled on its own: that is
    # no news, and must not be logged as an exception nobody retrieved.
    write.add_done_callback(_retrieved)
    try:
        done, _ = await asyncio.wait((write, cut), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        write.cancel()
        raise
    if write not in done:
        write.cancel()
        assert watch.ended is not None  # `cut` is set only with the reason
        raise watch.ended
    write.result()


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _cursor_of(cursor: str) -> int | None:
    """The event id a cursor names; None for an empty one (from now). Raises InvalidArgument."""
    if not cursor:
        return None
    if not _CURSOR.fullmatch(cursor) or int(cursor) >= 2**63:
        raise _bad_cursor()
    return int(cursor)


def _bad_cursor() -> InvalidArgument:
    return invalid("INVALID_ARGUMENT", [FieldViolation("cursor", MUST_BE_CURSOR)])
