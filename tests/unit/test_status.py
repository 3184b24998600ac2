"""Errors as rich gRPC status, and back: what a client reads from `grpc-status-details-bin`, and the
error a client rebuilds from it, which must be the error the servicer raised, as any edge writes it."""

from __future__ import annotations

import base64
import inspect
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.domain import errors
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
from gateway.rpc.status import (
    DETAILS_KEY,
    ERROR_DOMAIN,
    GRPC_CODES,
    KINDS,
    TRANSPORT_FAILURES,
    CallFailed,
    bounded,
    call_failed,
    code_of,
    details_from_metadata,
    error_info,
    error_of,
    field_violations,
    internal_error,
    retry_delay_s,
    status_of,
    trailing_metadata,
)

Code = grpc.StatusCode


def round_trip(status: status_pb2.Status) -> status_pb2.Status:
    # What a client sees: the trailing metadata the server sent, with other entries around it.
    metadata = (("x-other", "1"), *trailing_metadata(status), ("x-last", b"\x00"))
    read = details_from_metadata(metadata)
    assert read is not None
    return read


def over_the_wire(error: OrderError) -> OrderError:
    """The error a gRPC client rebuilds from what the servicer writes out for `error`."""
    code, status = status_of(error)
    return error_of(code, round_trip(status))


KIND_CODES = [
    (NotFound, Code.NOT_FOUND),
    (InvalidArgument, Code.INVALID_ARGUMENT),
    (FailedPrecondition, Code.FAILED_PRECONDITION),
    (AlreadyExists, Code.ALREADY_EXISTS),
    (Unauthenticated, Code.UNAUTHENTICATED),
    (Unavailable, Code.UNAVAILABLE),
    (ResourceExhausted, Code.RESOURCE_EXHAUSTED),
]

SAMPLES: list[OrderError] = [
    NotFound("ORDER_NOT_FOUND", "order 'h' not found", {"order_handle": "h"}),
    FailedPrecondition("ORDER_COMPLETED", "fp", {"order_handle": "o", "status": "completed"}),
    AlreadyExists("ORDER_ALREADY_TRACKED", "ae", {"status": "ongoing"}),
    Unauthenticated("UNAUTHENTICATED", "ua", {"realm": "r"}),
    Unavailable("STORE_BUSY", "un"),
    ResourceExhausted("RATE_LIMITED", "slow down", {"limit_per_second": "2"}, retry_after_s=0.25),
    invalid("INVALID_ARGUMENT", [FieldViolation("orders[0].destination.geometry", "is required")]),
    InvalidArgument("AMBIGUOUS_ORDER", "type: ambiguous", {}, [FieldViolation("type", "ambiguous")]),
]


@pytest.mark.parametrize(("kind", "code"), KIND_CODES)
def test_each_kind_has_its_code_in_the_one_table(kind: type[OrderError], code: grpc.StatusCode) -> None:
    assert GRPC_CODES[kind] is code
    assert code_of(kind("R", "m")) is code
    assert KINDS[code] is kind


def test_every_kind_of_the_domain_is_in_the_table_and_the_table_reads_both_ways() -> None:
    kinds = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, OrderError) and cls is not OrderError
    }
    assert kinds == set(GRPC_CODES)
    assert len(KINDS) == len(GRPC_CODES)  # no two kinds share a code


def test_a_call_failed_carries_its_own_code_and_an_unmapped_kind_is_internal() -> None:
    assert code_of(CallFailed("R", "m", code=Code.DEADLINE_EXCEEDED)) is Code.DEADLINE_EXCEEDED
    assert code_of(OrderError("ODD", "odd")) is Code.INTERNAL
    assert status_of(OrderError("ODD", "odd"))[0] is Code.INTERNAL


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: e.reason)
def test_status_of_writes_the_error_info(error: OrderError) -> None:
    code, status = status_of(error)
    read = round_trip(status)
    assert read.code == code.value[0] == code_of(error).value[0]
    assert read.message == error.message
    info = error_info(read)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (error.reason, ERROR_DOMAIN, error.metadata)
    expected = error.violations if isinstance(error, InvalidArgument) else []
    assert field_violations(read) == expected
    assert retry_delay_s(read) == error.retry_after_s


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: e.reason)
def test_a_client_rebuilds_the_error_the_servicer_raised(error: OrderError) -> None:
    rebuilt = over_the_wire(error)
    assert type(rebuilt) is type(error)
    assert rebuilt == error


def test_only_an_error_with_a_delay_carries_a_retry_info() -> None:
    _, status = status_of(NotFound("R", "m"))
    assert [d.type_url.rpartition("/")[2] for d in status.details] == ["google.rpc.ErrorInfo"]
    _, status = status_of(ResourceExhausted("R", "m", retry_after_s=1.5))
    assert retry_delay_s(status) == 1.5


def test_internal_error_says_nothing_of_the_failure() -> None:
    code, status = status_of(internal_error())
    assert code is Code.INTERNAL
    info = error_info(status)
    assert info is not None
    assert info.reason == "INTERNAL"
    assert status.message == "internal error; the failure was logged"


@pytest.mark.parametrize("code", [c for c in Code if c is not Code.OK])
def test_a_failure_without_details_is_a_call_failed_with_generic_words(code: grpc.StatusCode) -> None:
    error = error_of(code, None)
    assert isinstance(error, CallFailed)
    assert error.code is code
    assert (error.reason, error.message) == TRANSPORT_FAILURES.get(code, ("INTERNAL", "internal error"))
    assert error == call_failed(code)


def test_the_generic_words_of_a_transport_failure() -> None:
    assert call_failed(Code.UNAVAILABLE) == CallFailed(
        "BACKEND_UNAVAILABLE", "the order service is unavailable; retry later", code=Code.UNAVAILABLE
    )
    assert (
        call_failed(Code.DEADLINE_EXCEEDED).message == "the order service did not answer within the deadline"
    )


def test_details_without_an_error_info_count_as_none() -> None:
    status = status_pb2.Status(code=Code.NOT_FOUND.value[0], message="the transport's words")
    error = error_of(Code.NOT_FOUND, status)
    assert error == call_failed(Code.NOT_FOUND)
    assert error.message == "internal error"


def test_a_code_no_kind_stands_for_keeps_the_services_details() -> None:
    code, status = status_of(internal_error())
    assert error_of(code, round_trip(status)) == internal_error()
    _, other = status_of(NotFound("DENIED", "not yours", {"k": "v"}, retry_after_s=2.0))
    rebuilt = error_of(Code.PERMISSION_DENIED, other)
    assert rebuilt == CallFailed(
        "DENIED", "not yours", {"k": "v"}, retry_after_s=2.0, code=Code.PERMISSION_DENIED
    )


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        (),
        (("x-other", "1"),),
        ((DETAILS_KEY, "not bytes"),),
        ((DETAILS_KEY, b"\xff\xff\xff"),),
    ],
)
def test_missing_or_malformed_details_read_as_none(
    metadata: tuple[tuple[str, str | bytes], ...] | None,
) -> None:
    assert details_from_metadata(metadata) is None


def test_readers_of_no_status() -> None:
    assert error_info(None) is None
    assert field_violations(None) == []
    assert retry_delay_s(None) is None


def test_readers_skip_unknown_details() -> None:
    other = any_pb2.Any()
    other.Pack(error_details_pb2.RetryInfo())
    _, status = status_of(NotFound("R", "m"))
    status.details.insert(0, other)
    info = error_info(status)
    assert info is not None
    assert info.reason == "R"


def huge_invalid_argument() -> InvalidArgument:
    huge = "😀" * 255
    violations = [FieldViolation(f"orders[{i}].metadata.{huge}" + "[0]" * 40, huge) for i in range(30)]
    return invalid("INVALID_ARGUMENT", violations)


def test_an_error_about_huge_input_still_fits_in_the_trailing_metadata() -> None:
    """gRPC clients refuse trailing metadata past 8 KiB; the texts of an error are bounded instead."""
    _, status = status_of(huge_invalid_argument())
    encoded = len(quote(status.message)) + len(base64.b64encode(status.SerializeToString()))
    assert encoded < 6 * 1024
    kept = field_violations(status)
    assert 1 <= len(kept) < 30
    assert status.message.startswith(f"30 problems, the first {len(kept)} in the details")
    assert kept[0].field.startswith("orders[0].metadata.😀")
    assert kept[0].field.endswith("[0][0]")
    assert "…" in kept[0].field


@pytest.mark.parametrize(
    "error",
    [
        huge_invalid_argument(),
        NotFound("ORDER_NOT_FOUND", f"order '{'😀' * 255}' not found", {"order_handle": "😀" * 255}),
        ResourceExhausted("RATE_LIMITED", "m", retry_after_s=2.0000000004),
        ResourceExhausted("RATE_LIMITED", "m", retry_after_s=1 / 3),
    ],
    ids=["violations", "message", "retry just past a second", "retry of no whole nanoseconds"],
)
def test_bounded_is_what_a_client_reads_back_and_bounding_twice_changes_nothing(error: OrderError) -> None:
    once = bounded(error)
    assert once != error
    assert bounded(once) == once
    assert over_the_wire(error) == once
    assert over_the_wire(once) == once


def test_bounded_leaves_an_error_within_bounds_as_itself() -> None:
    for error in SAMPLES:
        assert bounded(error) is error


def test_bounded_keeps_the_kind_and_the_other_fields() -> None:
    error = NotFound("ORDER_NOT_FOUND", "x" * 1000, {"order_handle": "h"})
    once = bounded(error)
    assert type(once) is NotFound
    assert (once.reason, once.metadata) == (error.reason, error.metadata)
    assert len(once.message.encode()) <= 300
    failed = bounded(CallFailed("R", "y" * 1000, code=Code.DEADLINE_EXCEEDED))
    assert failed.code is Code.DEADLINE_EXCEEDED
