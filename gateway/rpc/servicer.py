"""OrdersService over grpc.aio: credentials, deadline, the call, and errors as rich status.

The REST front end's in-process backend calls these same methods with its own
CallContext, so both surfaces share authentication and the error path.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from gateway.domain.errors import InvalidArgument, OrderError, Unauthenticated, Unavailable
from gateway.protos import orders_service_pb2
from gateway.rpc.stubs import orders_service_grpc
from gateway.rpc.status import internal_status, status_of, trailing_metadata
from gateway.calls.auth import Authenticator
from gateway.calls.limits import AccountRateLimit, AuthFailureLimit
from gateway.calls.orders import OrderCalls

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

DEFAULT_DEADLINE_S = 30.0
"""Time a call may take in the store when its caller set no deadline."""


class CallContext(Protocol):
    """The part of grpc.aio.ServicerContext the servicer uses."""

    def invocation_metadata(self) -> Any: ...

    def time_remaining(self) -> float | None: ...

    def peer(self) -> str: ...

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn: ...


CallObserver = Callable[[str, grpc.StatusCode, float], None]


def metadata_value(context: CallContext, key: str) -> str | None:
    for entry_key, value in context.invocation_metadata() or ():
        if entry_key == key:
            return value if isinstance(value, str) else None
    return None


class MalformedRequest:
    """Request bytes that did not parse as the method's message (see gateway/rpc/server.py).

    grpc would answer a parser's exception itself, as UNKNOWN with the exception's text and no
    details; handed to the servicer instead, it is answered like any invalid argument.
    """

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


IN_PROCESS_PEER = "in-process"
"""The peer of a call from the REST front end in the same process; it says who the client is."""

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class Admission:
    """Limits applied to every call before it runs; None turns a limit off.

    The client address of a call is its peer's IP, or, when the peer is a trusted proxy (a REST
    front end), the `x-forwarded-for` entry that the front end set from its own client.
    """

    rate_limit: AccountRateLimit | None = None
    auth_failures: AuthFailureLimit | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = LOOPBACK

    def client_address(self, context: CallContext) -> str:
        host, trusted = _peer_host(context.peer() or "", self.trusted_proxies)
        if trusted:
            forwarded = metadata_value(context, "x-forwarded-for")
            if forwarded:
                return forwarded.rpartition(",")[2].strip()
        return host


@functools.lru_cache(maxsize=4096)
def _peer_host(
    peer: str, trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> tuple[str, bool]:
    """The IP of a gRPC peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`) and whether it is a trusted
    proxy; cached, since a connection's peer repeats on every call and parsing it is not free."""
    kind, _, rest = peer.partition(":")
    if peer == IN_PROCESS_PEER:
        return peer, True
    if kind not in ("ipv4", "ipv6"):
        return peer, False
    host = rest.rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host, False
    return host, any(address in network for network in trusted_proxies)


class OrdersServicer(orders_service_grpc.OrdersServiceServicer):
    """The gRPC face of OrderCalls."""

    def __init__(
        self,
        calls: OrderCalls,
        authenticator: Authenticator,
        *,
        admission: Admission | None = None,
        observe: CallObserver | None = None,
    ) -> None:
        self._calls = calls
        self._authenticator = authenticator
        self._admission = admission or Admission()
        self._observe = observe

    async def _authenticate(self, context: CallContext) -> str:
        """The caller's account, after the address and account limits admit the call."""
        admission = self._admission
        failures = admission.auth_failures
        client = admission.client_address(context) if failures is not None else ""
        if failures is not None:
            failures.admit(client)
        try:
            account_id = await self._authenticator.authenticate(metadata_value(context, "authorization"))
        except Unauthenticated:
            if failures is not None:
                failures.failed(client)
            raise
        if admission.rate_limit is not None:
            admission.rate_limit.admit(account_id)
        return account_id

    async def _run(
        self,
        method: str,
        context: CallContext,
        call: Callable[[str, Req, float], Awaitable[Res]],
        request: Req,
    ) -> Res:
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            account_id = await self._authenticate(context)
            if isinstance(request, MalformedRequest):
                raise InvalidArgument(
                    "MALFORMED_REQUEST", f"the request message does not parse: {request.problem}"
                )
            remaining = context.time_remaining()
            deadline = started + (DEFAULT_DEADLINE_S if remaining is None else remaining)
            return await call(account_id, request, deadline)
        except OrderError as error:
            if isinstance(error, Unavailable):
                # The caller hears "retry later"; the operator needs the cause. A busy database is
                # the cause itself (no traceback: under contention there is one per call).
                cause = None if error.reason == "STORE_BUSY" else error.__cause__
                log.warning("store unavailable in %s: %s", method, error, exc_info=cause)
            code, status = status_of(error)
            await context.abort(code, status.message, trailing_metadata(status))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("unexpected failure in %s", method)
            code, status = internal_status()
            await context.abort(code, status.message, trailing_metadata(status))
        finally:
            if self._observe is not None:
                self._observe(method, code, time.monotonic() - started)

    async def TrackOrders(
        self, request: orders_service_pb2.TrackOrdersRequest, context: CallContext
    ) -> orders_service_pb2.TrackOrdersResponse:
        return await self._run("TrackOrders", context, self._calls.track_orders, request)

    async def GetOrder(
        self, request: orders_service_pb2.GetOrderRequest, context: CallContext
    ) -> orders_service_pb2.GetOrderResponse:
        order = await self._run("GetOrder", context, self._calls.get_order, request)
        return orders_service_pb2.GetOrderResponse(order=order)

    async def CancelOrder(
        self, request: orders_service_pb2.CancelOrderRequest, context: CallContext
    ) -> orders_service_pb2.CancelOrderResponse:
        order = await self._run("CancelOrder", context, self._calls.cancel_order, request)
        return orders_service_pb2.CancelOrderResponse(order=order)

    async def CompleteOrder(
        self, request: orders_service_pb2.CompleteOrderRequest, context: CallContext
    ) -> orders_service_pb2.CompleteOrderResponse:
        order = await self._run("CompleteOrder", context, self._calls.complete_order, request)
        return orders_service_pb2.CompleteOrderResponse(order=order)

    async def DisableOrder(
        self, request: orders_service_pb2.DisableOrderRequest, context: CallContext
    ) -> orders_service_pb2.DisableOrderResponse:
        order = await self._run("DisableOrder", context, self._calls.disable_order, request)
        return orders_service_pb2.DisableOrderResponse(order=order)
