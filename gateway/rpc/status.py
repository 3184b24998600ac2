"""Rule errors as gRPC status: the code, and a google.rpc.Status in `grpc-status-details-bin`.

Every error carries an ErrorInfo (reason, domain, metadata); invalid arguments also
carry BadRequest field violations. The REST front end reads the same details back,
so both surfaces say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

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
)

ERROR_DOMAIN = "hypertrack-gateway"
DETAILS_KEY = "grpc-status-details-bin"

GRPC_CODES: dict[type[OrderError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

Metadata = tuple[tuple[str, str | bytes], ...]


# Trailing metadata past 8 KiB is refused by gRPC clients (RESOURCE_EXHAUSTED instead of the error),
# and the message travels twice (grpc-message, percent-encoded, and inside the details): so an
# error's texts are bounded, in UTF-8 bytes, whatever a caller sent (a 255-emoji handle, say).
MAX_MESSAGE_BYTES = 300
MAX_VIOLATIONS_BYTES = 3000
MAX_FIELD_BYTES = 100
MAX_DESCRIPTION_BYTES = 120


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, its middle replaced by an ellipsis."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    half = (limit - 3) // 2
    head = raw[:half].decode(errors="ignore")
    tail = raw[len(raw) - half :].decode(errors="ignore")
    return f"{head}…{tail}"


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str] | None = None,
    *,
    violations: Sequence[FieldViolation] = (),
    retry_after_s: float | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with an ErrorInfo and, when given, a BadRequest and a RetryInfo."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {}))
    details = [info]
    if violations:
        bad_request = error_details_pb2.BadRequest()
        for v in violations:
            kept = error_details_pb2.BadRequest.FieldViolation(
                field=clip(v.field, MAX_FIELD_BYTES), description=clip(v.description, MAX_DESCRIPTION_BYTES)
            )
            if (
                bad_request.field_violations
                and bad_request.ByteSize() + kept.ByteSize() > MAX_VIOLATIONS_BYTES
            ):
                message = (
                    f"{len(violations)} problems, the first {len(bad_request.field_violations)}"
                    f" in the details: {message}"
                )
                break
            bad_request.field_violations.append(kept)
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    if retry_after_s is not None:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after_s * 1e9))
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    return status_pb2.Status(code=code.value[0], message=clip(message, MAX_MESSAGE_BYTES), details=details)


def status_of(error: OrderError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    code = GRPC_CODES.get(type(error), grpc.StatusCode.INTERNAL)
    violations = error.violations if isinstance(error, InvalidArgument) else ()
    retry_after_s = error.retry_after_s if isinstance(error, ResourceExhausted) else None
    return code, rich_status(
        code, error.message, error.reason, error.metadata, violations=violations, retry_after_s=retry_after_s
    )


def internal_status() -> tuple[grpc.StatusCode, status_pb2.Status]:
    """What an unexpected failure says: nothing about its insides."""
    code = grpc.StatusCode.INTERNAL
    return code, rich_status(code, "internal error; the failure was logged", "INTERNAL")


def trailing_metadata(status: status_pb2.Status) -> Metadata:
    return ((DETAILS_KEY, status.SerializeToString()),)


def details_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> status_pb2.Status | None:
    """The google.rpc.Status a failed call carried, if any (and if it parses)."""
    for key, value in metadata or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:  # a peer's malformed details count as none
                return None
    return None


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def field_violations(status: status_pb2.Status | None) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    return violations


def retry_delay_s(status: status_pb2.Status | None) -> float | None:
    """The RetryInfo delay a failed call carried, in seconds, if any."""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return float(retry.retry_delay.ToNanoseconds()) / 1e9
    return None
