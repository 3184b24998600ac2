"""The servicer's core raises the error a call failed with; the gRPC face writes it out as rich
status, and the in-process backend hands the error object itself to the REST side."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn, cast

import grpc
import pytest

from gateway.calls.auth import Authenticator, unauthenticated
from gateway.calls.orders import OrderCalls
from gateway.domain.errors import InvalidArgument, NotFound, OrderError
from gateway.protos import SERVICE_DESCRIPTOR, orders_service_pb2
from gateway.rest.backend import InProcessBackend
from gateway.rest.rules import rest_calls
from gateway.rpc.servicer import MalformedRequest, OrdersServicer
from gateway.rpc.status import CallFailed, details_from_metadata, error_of, internal_error, status_of

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
    def __init__(self, metadata: Any = AUTH) -> None:
        self.metadata = metadata
        self.aborted: tuple[grpc.StatusCode, str, Any] | None = None

    def invocation_metadata(self) -> Any:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        self.aborted = (code, details, trailing_metadata)
        raise Aborted()


def servicer(calls: FakeCalls, observed: list[tuple[str, grpc.StatusCode]] | None = None) -> OrdersServicer:
    def observe(method: str, code: grpc.StatusCode, seconds: float) -> None:
        if observed is not None:
            observed.append((method, code))

    return OrdersServicer(cast(OrderCalls, calls), cast(Authenticator, FakeAuthenticator()), observe=observe)


async def test_the_in_process_backend_raises_the_error_object_itself() -> None:
    failure = NotFound("ORDER_NOT_FOUND", "order 'h' not found", {"order_handle": "h"})
    backend = InProcessBackend(servicer(FakeCalls(failure)), serving=None)
    with pytest.raises(NotFound) as raised:
        await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 5.0)
    assert raised.value is failure


async def test_the_in_process_backend_answers_unauthenticated_callers_with_the_error() -> None:
    backend = InProcessBackend(servicer(FakeCalls()), serving=None)
    with pytest.raises(OrderError) as raised:
        await backend.call(CALLS["GetOrder"], REQUEST, (), 5.0)
    assert raised.value == unauthenticated()


async def test_an_in_process_call_past_its_timeout_is_deadline_exceeded() -> None:
    observed: list[tuple[str, grpc.StatusCode]] = []
    backend = InProcessBackend(servicer(FakeCalls(delay_s=1.0), observed), serving=None)
    with pytest.raises(CallFailed) as raised:
        await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 0.01)
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.reason == "DEADLINE_EXCEEDED"
    assert observed == [("GetOrder", grpc.StatusCode.CANCELLED)]


async def test_an_in_process_bug_reaches_the_rest_side_as_itself() -> None:
    observed: list[tuple[str, grpc.StatusCode]] = []
    backend = InProcessBackend(servicer(FakeCalls(RuntimeError("a bug")), observed), serving=None)
    with pytest.raises(RuntimeError):
        await backend.call(CALLS["GetOrder"], REQUEST, AUTH, 5.0)
    assert observed == [("GetOrder", grpc.StatusCode.INTERNAL)]


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


async def test_an_answer_is_the_response_message() -> None:
    observed: list[tuple[str, grpc.StatusCode]] = []
    response = await servicer(FakeCalls(), observed).GetOrder(REQUEST, FakeContext())
    assert isinstance(response, orders_service_pb2.GetOrderResponse)
    assert observed == [("GetOrder", grpc.StatusCode.OK)]
