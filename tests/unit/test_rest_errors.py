"""The one gRPC -> HTTP status table, the one function that answers every failure, the one error
body, and where a violated field travels in HTTP."""

from __future__ import annotations

from typing import NoReturn

import grpc
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.calls.auth import REALM
from gateway.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OrderError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    invalid,
)
from gateway.protos import SERVICE_DESCRIPTOR
from gateway.rest.app import RestGateway
from gateway.rest.errors import (
    HTTP_STATUS,
    RestError,
    error_body,
    error_response,
    failure_response,
    locate,
    validation_error,
)
from gateway.rest.router import MethodNotAllowed, NoRoute
from gateway.rest.rules import rest_calls
from gateway.rpc.status import call_failed, details_from_metadata, error_of, status_of, trailing_metadata

# Copied from the product contract (CONTRACT.md), "gRPC status -> HTTP status", as it is printed there.
CONTRACT_TABLE = """
| gRPC | HTTP | | gRPC | HTTP |
|---|---|---|---|---|
| OK | 200 | | ABORTED | 409 |
| CANCELLED | 499 | | OUT_OF_RANGE | 400 |
| UNKNOWN | 500 | | UNIMPLEMENTED | 501 |
| INVALID_ARGUMENT | 422 | | INTERNAL | 500 |
| DEADLINE_EXCEEDED | 504 | | UNAVAILABLE | 503 |
| NOT_FOUND | 404 | | DATA_LOSS | 500 |
| ALREADY_EXISTS | 409 | | UNAUTHENTICATED | 401 |
| PERMISSION_DENIED | 403 | | RESOURCE_EXHAUSTED | 429 |
| FAILED_PRECONDITION | 409 | | | |
"""


def contract_table() -> dict[grpc.StatusCode, int]:
    table: dict[grpc.StatusCode, int] = {}
    for line in CONTRACT_TABLE.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name, status in (cells[0:2], cells[3:5]):
            if name:
                table[grpc.StatusCode[name]] = int(status)
    return table


CALLS = {call.name: call for call in rest_calls(SERVICE_DESCRIPTOR)}
TARGETED = ("CancelOrder", "CompleteOrder", "DisableOrder")


def body_of(response: web.Response) -> dict[str, object]:
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    body = orjson.loads(response.body)
    assert isinstance(body, dict)
    assert set(body) == {"detail", "message"}
    assert isinstance(body["detail"], dict)
    assert isinstance(body["message"], str)
    return body


def test_the_status_table_is_the_contracts_table() -> None:
    expected = contract_table()
    assert len(expected) == 17
    assert expected == HTTP_STATUS


def test_the_status_table_covers_every_grpc_code() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


def test_the_service_has_the_calls_of_the_contract() -> None:
    routes = {(c.http_method, c.path.template): name for name, c in CALLS.items()}
    assert routes == {
        ("POST", "/orders/track"): "TrackOrders",
        ("GET", "/orders/{order_handle}"): "GetOrder",
        ("POST", "/orders/{order_handle}/cancel"): "CancelOrder",
        ("POST", "/orders/{order_handle}/complete"): "CompleteOrder",
        ("POST", "/orders/{order_handle}/disable"): "DisableOrder",
        ("GET", "/orders/{order_handle}/webhooks"): "ListOrderWebhooks",
    }
    assert CALLS["TrackOrders"].success_status == 201
    assert {CALLS[name].success_status for name in ("GetOrder", "ListOrderWebhooks", *TARGETED)} == {200}
    # WatchOrderEvents streams over gRPC only: it has no http rule, so no REST call.
    assert "WatchOrderEvents" not in CALLS


@pytest.mark.parametrize("name", ["GetOrder", *TARGETED])
@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("order_handle", ("path", "order_handle")),
        ("type", ("query", "type")),
        ("type_index", ("query", "type_index")),
        ("fulfillment_attempt", ("query", "fulfillment_attempt")),
    ],
)
def test_locate_puts_the_record_fields_in_the_path_and_the_query(
    name: str, field: str, where: tuple[str, str]
) -> None:
    location, key = where
    assert locate(CALLS[name], [FieldViolation(field, "bad")]) == {location: {key: ["bad"]}}


@pytest.mark.parametrize("name", TARGETED)
@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("update", "body"),
        ("update.metadata", "metadata"),
        ("update.metadata.customerID", "metadata.customerID"),
        ("update.metadata.list[2]", "metadata.list[2]"),
    ],
)
def test_locate_names_fields_of_the_update_body_as_the_body_spells_them(
    name: str, field: str, key: str
) -> None:
    assert locate(CALLS[name], [FieldViolation(field, "bad")]) == {"body": {key: ["bad"]}}


@pytest.mark.parametrize(
    "field",
    ["worker_handle", "track_mode", "orders", "orders[0].destination.geometry", "orders[3].type_index"],
)
def test_locate_puts_every_field_of_track_orders_in_the_body(field: str) -> None:
    assert locate(CALLS["TrackOrders"], [FieldViolation(field, "bad")]) == {"body": {field: ["bad"]}}


def test_locate_gathers_violations_by_location_and_field_in_order() -> None:
    violations = [
        FieldViolation("type_index", "must be an integer >= 0"),
        FieldViolation("order_handle", "must be 1 to 255 characters"),
        FieldViolation("type_index", "second"),
        FieldViolation("update.metadata.a", "must be a finite number"),
    ]
    assert locate(CALLS["CancelOrder"], violations) == {
        "query": {"type_index": ["must be an integer >= 0", "second"]},
        "path": {"order_handle": ["must be 1 to 255 characters"]},
        "body": {"metadata.a": ["must be a finite number"]},
    }


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("R", "m"), 404),
        (invalid("R", [FieldViolation("type", "bad")]), 422),
        (FailedPrecondition("R", "m"), 409),
        (AlreadyExists("R", "m"), 409),
        (Unauthenticated("R", "m"), 401),
        (Unavailable("R", "m"), 503),
        (ResourceExhausted("R", "m", retry_after_s=1.0), 429),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, OrderError) else str(v),
)
def test_each_error_kind_gets_its_http_status(error: OrderError, status: int) -> None:
    assert failure_response(error, call=CALLS["CancelOrder"]).status == status


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK])
def test_a_failure_without_details_gets_its_status_and_a_generic_body(code: grpc.StatusCode) -> None:
    response = failure_response(call_failed(code), call=CALLS["CancelOrder"])
    assert response.status == HTTP_STATUS[code]
    body = body_of(response)
    assert set(body["detail"]) == {"reason"}  # type: ignore[arg-type]
    assert body["message"]
    assert "Retry-After" not in response.headers


def test_a_failure_without_details_never_repeats_the_transport_message() -> None:
    response = failure_response(error_of(grpc.StatusCode.UNAVAILABLE, None), call=CALLS["GetOrder"])
    assert response.status == 503
    assert body_of(response) == {
        "detail": {"reason": "BACKEND_UNAVAILABLE"},
        "message": "the order service is unavailable; retry later",
    }


def test_an_error_becomes_the_detail_with_its_reason_and_metadata() -> None:
    error = FailedPrecondition(
        "ORDER_COMPLETED",
        "order 'o' is completed and cannot be cancelled",
        {"status": "completed", "order_handle": "o"},
    )
    response = failure_response(error, call=CALLS["CancelOrder"])
    assert response.status == 409
    assert body_of(response) == {
        "detail": {"reason": "ORDER_COMPLETED", "order_handle": "o", "status": "completed"},
        "message": "order 'o' is completed and cannot be cancelled",
    }
    assert isinstance(response.body, bytes)
    assert response.body.index(b'"order_handle"') < response.body.index(b'"status"')  # sorted


def test_invalid_argument_details_are_located_field_violations() -> None:
    error = InvalidArgument(
        "AMBIGUOUS_ORDER",
        "type: ambiguous",
        {},
        [FieldViolation("type", "ambiguous"), FieldViolation("update.metadata.k", "too big")],
    )
    response = failure_response(error, call=CALLS["CancelOrder"])
    assert response.status == 422
    assert body_of(response) == {
        "detail": {"query": {"type": ["ambiguous"]}, "body": {"metadata.k": ["too big"]}},
        "message": "type: ambiguous",
    }


@pytest.mark.parametrize(("delay", "header"), [(0.2, "1"), (1.0, "1"), (2.5, "3"), (59.01, "60")])
def test_a_retry_delay_is_a_retry_after_header_in_whole_seconds(delay: float, header: str) -> None:
    error = ResourceExhausted("RATE_LIMITED", "slow down", {"limit_per_second": "2"}, retry_after_s=delay)
    response = failure_response(error, call=CALLS["GetOrder"])
    assert response.status == 429
    assert response.headers["Retry-After"] == header
    assert body_of(response)["detail"] == {"reason": "RATE_LIMITED", "limit_per_second": "2"}


def test_an_error_message_is_bounded_as_over_grpc() -> None:
    response = failure_response(NotFound("ORDER_NOT_FOUND", "x" * 1000), call=CALLS["GetOrder"])
    message = body_of(response)["message"]
    assert isinstance(message, str)
    assert len(message.encode()) <= 300
    assert "…" in message


def test_unauthenticated_answers_carry_the_basic_challenge() -> None:
    response = failure_response(
        Unauthenticated("UNAUTHENTICATED", "missing credentials"), call=CALLS["GetOrder"]
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
    assert "WWW-Authenticate" not in error_response(404, "not found", {}).headers


def test_no_route_is_a_404_and_a_wrong_method_a_405_with_allow() -> None:
    assert failure_response(NoRoute()).status == 404
    assert body_of(failure_response(NoRoute())) == {"detail": {}, "message": "no such route"}
    response = failure_response(MethodNotAllowed(["POST"]), method="PUT")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert body_of(response) == {
        "detail": {"allowed": ["POST"]},
        "message": "method PUT not allowed; allowed: POST",
    }


def test_any_other_failure_is_a_500_that_says_nothing_of_it() -> None:
    response = failure_response(RuntimeError("secret insides"))
    assert response.status == 500
    assert body_of(response) == {
        "detail": {"reason": "INTERNAL"},
        "message": "internal error; the failure was logged",
    }


REMOTE_SAMPLES: list[OrderError] = [
    NotFound("ORDER_NOT_FOUND", "order 'h' not found", {"order_handle": "h"}),
    FailedPrecondition("ORDER_COMPLETED", "fp", {"status": "completed", "order_handle": "o", "b": "1"}),
    Unauthenticated("UNAUTHENTICATED", "ua", {"realm": REALM}),
    ResourceExhausted("RATE_LIMITED", "slow", {"limit_per_second": "0.5"}, retry_after_s=1.0000000004),
    ResourceExhausted("TOO_MANY_FAILED_AUTHENTICATIONS", "locked", retry_after_s=59.999999),
    invalid(
        "INVALID_ARGUMENT", [FieldViolation(f"update.metadata.{'😀' * 80}{i}", "x" * 200) for i in range(40)]
    ),
    NotFound("ORDER_NOT_FOUND", f"order '{'😀' * 255}' not found", {"order_handle": "😀" * 255}),
    call_failed(grpc.StatusCode.DEADLINE_EXCEEDED),
]


@pytest.mark.parametrize("error", REMOTE_SAMPLES, ids=lambda e: e.reason)
def test_an_error_answers_the_same_bytes_in_process_and_through_grpc(error: OrderError) -> None:
    code, status = status_of(error)
    remote = error_of(code, details_from_metadata(trailing_metadata(status)))
    here = failure_response(error, call=CALLS["CancelOrder"])
    there = failure_response(remote, call=CALLS["CancelOrder"])
    assert (here.status, dict(here.headers), here.body) == (there.status, dict(there.headers), there.body)


def test_validation_error_is_a_422_with_the_problems_as_detail() -> None:
    error = validation_error(
        {"query": {"type": ["must be one of: pick, drop"]}, "header": {"Grpc-Timeout": ["x"]}}
    )
    assert error.status == 422
    assert error.detail == {
        "query": {"type": ["must be one of: pick, drop"]},
        "header": {"Grpc-Timeout": ["x"]},
    }
    assert "query.type: must be one of: pick, drop" in error.message
    assert "header.Grpc-Timeout: x" in error.message


def test_a_rest_error_keeps_its_headers() -> None:
    response = failure_response(RestError(408, "too slow", {}, {"Connection": "close"}))
    assert response.status == 408
    assert response.headers["Connection"] == "close"
    assert body_of(response) == {"detail": {}, "message": "too slow"}


def test_an_error_naming_a_lone_surrogate_still_has_a_json_body() -> None:
    # json.loads turns a body's "\ud800" into a lone surrogate, which has no UTF-8 form: an error that
    # quotes it must still be answered, with the escape the caller wrote.
    body = orjson.loads(error_body({"body": {"\ud800": ["unknown field"]}}, "body.\udfff: unknown field"))
    assert body == {
        "detail": {"body": {"\\ud800": ["unknown field"]}},
        "message": "body.\\udfff: unknown field",
    }


def test_an_error_body_keeps_unicode_and_nesting_as_given() -> None:
    detail = {"reason": "ORDER_NOT_FOUND", "order_handle": "zürich-🚚", "nested": {"list": [1, 2.5, None]}}
    assert orjson.loads(error_body(detail, "order 'zürich-🚚' not found")) == {
        "detail": detail,
        "message": "order 'zürich-🚚' not found",
    }


class _BrokenBackend:
    """A backend with a bug: every call raises something no error path expects."""

    async def call(self, *args: object) -> NoReturn:
        raise RuntimeError("a bug")

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


async def test_an_unexpected_failure_is_a_500_with_the_error_body_and_request_id() -> None:
    gateway = RestGateway(_BrokenBackend())
    headers = {"X-Request-ID": "req-1", "Authorization": "Basic ZGVtbzpkZW1v"}
    request = make_mocked_request("GET", "/orders/order-1", headers=headers)
    response = await gateway.handle(request)
    assert isinstance(response, web.Response)
    assert response.status == 500
    assert response.headers["X-Request-ID"] == "req-1"
    assert body_of(response) == {
        "detail": {"reason": "INTERNAL"},
        "message": "internal error; the failure was logged",
    }
