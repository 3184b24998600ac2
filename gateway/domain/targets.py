"""Which order record a call names: the target rules of the contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.domain.errors import FieldViolation, NotFound, invalid
from gateway.domain.text import type_name


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """The record a call names: a handle, and optionally a leg and an attempt.

    `type` 0 (ORDER_TYPE_UNSPECIFIED) means any type; None means any index or the
    latest attempt.
    """

    order_handle: str
    type: int = 0
    type_index: int | None = None
    fulfillment_attempt: int | None = None


class RecordKey(Protocol):
    """What the rules need to know of a stored record to choose among them."""

    @property
    def type(self) -> int: ...

    @property
    def type_index(self) -> int: ...

    @property
    def fulfillment_attempt(self) -> int: ...


R = TypeVar("R", bound=RecordKey)


def order_not_found(order_handle: str) -> NotFound:
    """The error of a handle the account has no (matching) order record of."""
    return NotFound("ORDER_NOT_FOUND", f"order {order_handle!r} not found", {"order_handle": order_handle})


def resolve_target(query: OrderQuery, records: Sequence[R]) -> R:
    """Choose the one record `query` names among all records of its handle.

    The records matching the given type, index and attempt; where no attempt is
    given, the latest attempt of each leg. None is NotFound; more than one is
    InvalidArgument on `type`, naming the legs so the caller can choose.
    """
    matching = [
        r
        for r in records
        if query.type in (0, r.type)
        and (query.type_index is None or r.type_index == query.type_index)
        and (query.fulfillment_attempt is None or r.fulfillment_attempt == query.fulfillment_attempt)
    ]
    if query.fulfillment_attempt is None:
        latest: dict[tuple[int, int], R] = {}
        for r in matching:
            leg = (r.type, r.type_index)
            if leg not in latest or r.fulfillment_attempt > latest[leg].fulfillment_attempt:
                latest[leg] = r
        matching = list(latest.values())
    if not matching:
        raise order_not_found(query.order_handle)
    if len(matching) > 1:
        legs = ", ".join(
            f"{type_name(r.type)} {r.type_index} (attempt {r.fulfillment_attempt})"
            for r in sorted(matching, key=lambda r: (r.type, r.type_index, r.fulfillment_attempt))
        )
        raise invalid(
            "AMBIGUOUS_ORDER",
            [
                FieldViolation(
                    "type",
                    f"order {query.order_handle!r} has {len(matching)} legs: {legs}; "
                    "choose one with type and type_index",
                )
            ],
        )
    return matching[0]
