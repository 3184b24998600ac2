"""Rule errors as rich gRPC status, and back: what a client reads from `grpc-status-details-bin`."""

from __future__ import annotations

import base64
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    OrderError,
    Unauthenticated,
    Unavailable,
    invalid,
)
from gateway.rpc.status import (
    DETAILS_KEY,
    ERROR_DOMAIN,
    details_from_metadata,
    error_info,
    field_violations,
    internal_status,
    rich_status,
    status_of,
    trailing_metadata,
)


def round_trip(status: status_pb2.Status) -> status_pb2.Status:
    # What a client sees: the trailing metadata the server sent, with other entries around it.
    metadata = (("x-other", "1"), *trailing_metadata(status), ("x-last", b"\x00"))
    read = details_from_metadata(metadata)
    assert read is not None
    return read


def test_rich_status_round_trip_with_error_info_only() -> None:
    status = rich_status(
        grpc.StatusCode.NOT_FOUND, "order 'x' not found", "ORDER_NOT_FOUND", {"order_handle": "x"}
    )
    read = round_trip(status)
    assert read == status
    assert read.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert read.message == "order 'x' not found"
    info = error_info(read)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "ORDER_NOT_FOUND",
        ERROR_DOMAIN,
        {"order_handle": "x"},
    )
    assert field_violations(read) == []
    assert len(read.details) == 1


def test_rich_status_round_trip_with_violations() -> None:
    violations = [
        FieldViolation("order_handle", "must be 1 to 255 characters"),
        FieldViolation("type_index", "bad"),
    ]
    status = rich_status(grpc.StatusCode.INVALID_ARGUMENT, "m", "INVALID_ARGUMENT", violations=violations)
    read = round_trip(status)
    assert field_violations(read) == violations
    info = error_info(read)
    assert info is not None
    assert info.reason == "INVALID_ARGUMENT"
    assert dict(info.metadata) == {}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("ORDER_NOT_FOUND", "nf", {"order_handle": "h"}), grpc.StatusCode.NOT_FOUND),
        (
            FailedPrecondition("ORDER_COMPLETED", "fp", {"status": "completed"}),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (AlreadyExists("ORDER_ALREADY_TRACKED", "ae", {"status": "ongoing"}), grpc.StatusCode.ALREADY_EXISTS),
        (Unauthenticated("UNAUTHENTICATED", "ua", {"realm": "r"}), grpc.StatusCode.UNAUTHENTICATED),
        (Unavailable("STORE_BUSY", "un"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_status_of_each_error_kind(error: OrderError, code: grpc.StatusCode) -> None:
    got_code, status = status_of(error)
    assert got_code == code
    read = round_trip(status)
    assert read.code == code.value[0]
    assert read.message == error.message
    info = error_info(read)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (error.reason, ERROR_DOMAIN, error.metadata)
    assert field_violations(read) == []


def test_status_of_invalid_argument_carries_its_violations() -> None:
    error = invalid("INVALID_ARGUMENT", [FieldViolation("orders[0].destination.geometry", "is required")])
    code, status = status_of(error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    read = round_trip(status)
    assert read.message == "orders[0].destination.geometry: is required"
    assert field_violations(read) == [FieldViolation("orders[0].destination.geometry", "is required")]


def test_an_unmapped_error_kind_is_internal() -> None:
    code, _ = status_of(OrderError("ODD", "odd"))
    assert code == grpc.StatusCode.INTERNAL


def test_internal_status_says_nothing_of_the_failure() -> None:
    code, status = internal_status()
    assert code == grpc.StatusCode.INTERNAL
    info = error_info(status)
    assert info is not None
    assert info.reason == "INTERNAL"
    assert "logged" in status.message


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


def test_readers_skip_unknown_details() -> None:
    other = any_pb2.Any()
    other.Pack(error_details_pb2.RetryInfo())
    status = rich_status(grpc.StatusCode.NOT_FOUND, "m", "R")
    status.details.insert(0, other)
    info = error_info(status)
    assert info is not None
    assert info.reason == "R"


def test_an_error_about_huge_input_still_fits_in_the_trailing_metadata() -> None:
    """gRPC clients refuse trailing metadata past 8 KiB; the texts of an error are bounded instead."""
    huge = "😀" * 255
    violations = [FieldViolation(f"orders[{i}].metadata.{huge}" + "[0]" * 40, huge) for i in range(30)]
    _, status = status_of(invalid("INVALID_ARGUMENT", violations))
    encoded = len(quote(status.message)) + len(base64.b64encode(status.SerializeToString()))
    assert encoded < 6 * 1024
    kept = field_violations(status)
    assert 1 <= len(kept) < 30
    assert status.message.startswith(f"30 problems, the first {len(kept)} in the details")
    assert kept[0].field.startswith("orders[0].metadata.😀")
    assert kept[0].field.endswith("[0][0]")
    assert "…" in kept[0].field
