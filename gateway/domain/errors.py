"""The errors a call can end with: one family, raised by the rules and carried as itself to the
edge that writes it out (a gRPC status, a REST error body). Each transport maps each kind to its
own status in one table of its own; the domain knows no transport."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field, named by its path in the request message (`orders[0].type_index`)."""

    field: str
    description: str


@dataclass
class OrderError(Exception):
    """Base of the errors: a machine-readable reason, a message, and string metadata.

    `retry_after_s`, when set, says how long the caller should wait before trying again (gRPC
    RetryInfo, HTTP Retry-After). It is keyword-only, so that every kind keeps its positional
    fields (`InvalidArgument(reason, message, metadata, violations)`).
    """

    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = field(default=None, kw_only=True)

    def __str__(self) -> str:
        return self.message


@dataclass
class NotFound(OrderError):
    """No record matches (also for another account's handle)."""


@dataclass
class InvalidArgument(OrderError):
    """The request is malformed; `violations` name the fields."""

    violations: list[FieldViolation] = field(default_factory=list)


@dataclass
class FailedPrecondition(OrderError):
    """The order's status does not allow the call."""


@dataclass
class AlreadyExists(OrderError):
    """The call would create a record that exists already."""


@dataclass
class Unauthenticated(OrderError):
    """Missing, malformed or wrong credentials."""


@dataclass
class Unavailable(OrderError):
    """The store cannot be reached or stayed busy past the deadline."""


@dataclass
class ResourceExhausted(OrderError):
    """A limit refused the call; it may be retried after `retry_after_s` seconds."""


def invalid(reason: str, violations: list[FieldViolation]) -> InvalidArgument:
    """An InvalidArgument whose message lists its violations."""
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgument(reason, message or "invalid request", {}, violations)
