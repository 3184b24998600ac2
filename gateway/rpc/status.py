"""Errors as gRPC status, and back: the code of each error kind, and the google.rpc.Status in
`grpc-status-details-bin` that carries the rest of it.

Every error carries an ErrorInfo (reason, domain, metadata); invalid arguments also carry
BadRequest field violations, and an error with a retry delay a RetryInfo. The servicer writes an
error out with `status_of`; a gRPC client turns a failed call back into the same error with
`error_of`, once, at its edge. In one process the error object travels as itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message
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
"""The one table of the gRPC code of each error kind (CallFailed carries its own)."""

KINDS: dict[grpc.StatusCode, type[OrderError]] = {code: kind for kind, code in GRPC_CODES.items()}
"""GRPC_CODES read backwards: the kind a client rebuilds from a code the service answered."""

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass
class CallFailed(OrderError):
    """A call that ended with a gRPC code that no error kind stands for, or with no answer from the
    service at all: the transport failed (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED...), or the
    service answered a code the rules never raise (INTERNAL)."""

    code: grpc.StatusCode = field(kw_only=True)


# What a failure says when the service sent no details of its own (the transport failed):
# never the transport's words, which may carry addresses and internals.
TRANSPORT_FAILURES: dict[grpc.StatusCode, tuple[str, str]] = {
    grpc.StatusCode.UNAVAILABLE: ("BACKEND_UNAVAILABLE", "the order service is unavailable; retry later"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "DEADLINE_EXCEEDED",
        "the order service did not answer within the deadline",
    ),
    grpc.StatusCode.CANCELLED: ("CANCELLED", "the call was cancelled"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("RESOURCE_EXHAUSTED", "too many requests; retry later"),
    grpc.StatusCode.UNIMPLEMENTED: ("UNIMPLEMENTED", "the order service does not implement this call"),
}
_UNEXPLAINED = ("INTERNAL", "internal error")


def call_failed(code: grpc.StatusCode) -> CallFailed:
    """A call that failed with `code` and no details: the generic reason and message of the code."""
    reason, message = TRANSPORT_FAILURES.get(code, _UNEXPLAINED)
    return CallFailed(reason, message, code=code)


def internal_error() -> CallFailed:
    """What an unexpected failure says: nothing about its insides."""
    return CallFailed("INTERNAL", "internal error; the failure was logged", code=grpc.StatusCode.INTERNAL)


def code_of(error: OrderError) -> grpc.StatusCode:
    if isinstance(error, CallFailed):
        return error.code
    return GRPC_CODES.get(type(error), grpc.StatusCode.INTERNAL)


# Trailing metadata past 8 KiB is refused by gRPC clients (RESOURCE_EXHAUSTED instead of the error),
# and the message travels twice (grpc-message, percent-encoded, and inside the details): so an
# error's texts are bounded, in UTF-8 bytes, whatever a caller sent (a 255-emoji handle, say). The
# REST front end writes the same bounded texts, so that its answers do not depend on whether the
# error came through gRPC or from the servicer in its own process.
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


def _fitting(violations: list[FieldViolation], message: str) -> tuple[list[FieldViolation], str]:
    """The violations with their texts clipped, as many as fit in a BadRequest of at most
    MAX_VIOLATIONS_BYTES (at least one), and the message, saying so when some were left out."""
    bad_request = error_details_pb2.BadRequest()
    kept: list[FieldViolation] = []
    for violation in violations:
        entry = error_details_pb2.BadRequest.FieldViolation(
            field=clip(violation.field, MAX_FIELD_BYTES),
            description=clip(violation.description, MAX_DESCRIPTION_BYTES),
        )
        if kept and bad_request.ByteSize() + entry.ByteSize() > MAX_VIOLATIONS_BYTES:
            message = f"{len(violations)} problems, the first {len(kept)} in the details: {message}"
            break
        bad_request.field_violations.append(entry)
        kept.append(FieldViolation(entry.field, entry.description))
    return kept, message


E = TypeVar("E", bound=OrderError)


def bounded(error: E) -> E:
    """`error` as every edge writes it out: its texts bounded, and its retry delay in whole
    nanoseconds as a RetryInfo carries it. The same error when nothing needs to change; bounding
    a bounded error changes nothing."""
    violations = error.violations if isinstance(error, InvalidArgument) else []
    kept, message = _fitting(violations, error.message) if violations else (violations, error.message)
    message = clip(message, MAX_MESSAGE_BYTES)
    retry_after_s = error.retry_after_s
    if retry_after_s is not None:
        retry_after_s = round(retry_after_s * 1e9) / 1e9
    if message == error.message and kept == violations and retry_after_s == error.retry_after_s:
        return error
    copy = dataclasses.replace(error, message=message, retry_after_s=retry_after_s)
    if isinstance(copy, InvalidArgument):
        copy.violations = kept
    return copy


def _packed(detail: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def status_of(error: OrderError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The code and the google.rpc.Status that say `error` over gRPC."""
    code = code_of(error)
    error = bounded(error)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    details = [_packed(info)]
    if isinstance(error, InvalidArgument) and error.violations:
        entries = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=entries)))
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(error.retry_after_s * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return code, status_pb2.Status(code=code.value[0], message=error.message, details=details)


def trailing_metadata(status: status_pb2.Status) -> Metadata:
    return ((DETAILS_KEY, status.SerializeToString()),)


def error_of(code: grpc.StatusCode, status: status_pb2.Status | None) -> OrderError:
    """The error a failed call carried: the kind its code stands for, rebuilt from the service's
    google.rpc.Status; a CallFailed with the code's generic words when it carried no details (the
    transport failed), or when no kind stands for its code."""
    info = error_info(status)
    if status is None or info is None:
        return call_failed(code)
    metadata = dict(info.metadata)
    retry_after_s = retry_delay_s(status)
    kind = KINDS.get(code)
    if kind is None:
        return CallFailed(info.reason, status.message, metadata, retry_after_s=retry_after_s, code=code)
    if kind is InvalidArgument:
        violations = field_violations(status)
        return InvalidArgument(info.reason, status.message, metadata, violations, retry_after_s=retry_after_s)
    return kind(info.reason, status.message, metadata, retry_after_s=retry_after_s)


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
