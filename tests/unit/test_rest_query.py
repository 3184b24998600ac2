"""The query string: split and decoded strictly, then typed into request fields by their descriptors."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, quote_from_bytes

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.jsonmap.enums import enum_names
from gateway.protos import SERVICE_DESCRIPTOR, order_pb2, orders_service_pb2
from gateway.rest.query import apply_query, parse_query_string, takes_query
from gateway.rest.rules import rest_calls

CALLS = {call.name: call for call in rest_calls(SERVICE_DESCRIPTOR)}
CANCEL_FIELDS = CALLS["CancelOrder"].query_fields


def cancel_with(query: str) -> tuple[orders_service_pb2.CancelOrderRequest, dict[str, list[str]]]:
    """The request a query string makes, and every problem found on the way."""
    params, problems = parse_query_string(query)
    request = orders_service_pb2.CancelOrderRequest(order_handle="o")
    problems.update(apply_query(request, params, CANCEL_FIELDS))
    return request, problems


# parse_query_string


@pytest.mark.parametrize(
    ("raw", "params"),
    [
        ("", {}),
        ("type=drop", {"type": "drop"}),
        ("type=drop&type_index=1", {"type": "drop", "type_index": "1"}),
        ("a=1&&b=2&", {"a": "1", "b": "2"}),  # empty pairs are skipped
        ("flag", {"flag": ""}),
        ("flag=", {"flag": ""}),
        ("=1", {"": "1"}),
        ("a=b=c", {"a": "b=c"}),  # only the first = separates
        ("a+b=c+d", {"a b": "c d"}),  # + is a space in a query
        ("a%2Bb=c%2Bd", {"a+b": "c+d"}),
        ("k=%26%3D%23", {"k": "&=#"}),
        ("k=%2525", {"k": "%25"}),  # decoded exactly once
        ("k=z%C3%BCrich", {"k": "zürich"}),
        ("k=%zz", {"k": "%zz"}),  # not an escape: kept as it is
        ("k=%", {"k": "%"}),
        ("%", {"%": ""}),
    ],
)
def test_parse_query_string_splits_and_decodes(raw: str, params: dict[str, str]) -> None:
    assert parse_query_string(raw) == (params, {})


def test_a_repeated_parameter_is_a_problem_named_after_it() -> None:
    params, problems = parse_query_string("type=drop&type_index=0&type=pick")
    assert problems == {"type": ["is given more than once"]}
    assert params["type_index"] == "0"


def test_repeats_are_found_after_decoding() -> None:
    _, problems = parse_query_string("type=drop&%74ype=drop")
    assert problems == {"type": ["is given more than once"]}


def test_a_value_that_is_not_utf8_is_a_problem_of_its_parameter() -> None:
    params, problems = parse_query_string("type=%FF&type_index=1")
    assert params == {"type_index": "1"}
    assert problems == {"type": ["must be valid percent-encoded UTF-8"]}


def test_a_name_that_is_not_utf8_is_a_problem_of_the_query() -> None:
    params, problems = parse_query_string("%C3=1&type=drop")
    assert params == {"type": "drop"}
    assert list(problems) == ["query"]


# apply_query


@pytest.mark.parametrize(
    ("query", "type_", "type_index", "attempt"),
    [
        ("", order_pb2.ORDER_TYPE_UNSPECIFIED, None, None),
        ("type=pick", order_pb2.ORDER_TYPE_PICK, None, None),
        ("type=drop&type_index=0", order_pb2.ORDER_TYPE_DROP, 0, None),
        ("type_index=2&fulfillment_attempt=0", order_pb2.ORDER_TYPE_UNSPECIFIED, 2, 0),
        ("fulfillment_attempt=2147483647", order_pb2.ORDER_TYPE_UNSPECIFIED, None, 2**31 - 1),
        ("type_index=007", order_pb2.ORDER_TYPE_UNSPECIFIED, 7, None),
    ],
)
def test_apply_query_sets_typed_fields(
    query: str, type_: int, type_index: int | None, attempt: int | None
) -> None:
    request, problems = cancel_with(query)
    assert problems == {}
    assert request.type == type_
    assert (request.type_index if request.HasField("type_index") else None) == type_index
    assert (request.fulfillment_attempt if request.HasField("fulfillment_attempt") else None) == attempt


def test_an_explicit_zero_is_set_not_left_unset() -> None:
    request, _ = cancel_with("type_index=0")
    assert request.HasField("type_index")


def test_negative_integers_pass_the_query_and_are_left_to_the_service_rules() -> None:
    # The query only knows int32; that a type_index must be >= 0 is the service's rule (422 either way).
    request, problems = cancel_with("type_index=-1")
    assert problems == {}
    assert request.type_index == -1


@pytest.mark.parametrize(
    "value", ["PICK", "Drop", "unspecified", "order_type_drop", "1", "", "drop ", "pick,drop"]
)
def test_an_enum_takes_only_the_json_names_of_its_declared_values(value: str) -> None:
    _, problems = cancel_with(f"type={value}")
    assert problems == {"type": ["must be one of: pick, drop"]}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1.5",
        "1e3",
        "0x10",
        "+1",
        "--1",
        "-",
        "1-",
        "one",
        "%201",  # " 1"
        "1%20",
        "%EF%BC%91",  # a fullwidth digit one
        "%D9%A1",  # an Arabic-Indic digit one
        "%C2%B2",  # a superscript two
        "1_000",
        "true",
    ],
)
def test_an_integer_must_be_spelled_as_one(value: str) -> None:
    _, problems = cancel_with(f"type_index={value}")
    assert problems == {"type_index": ["must be an integer"]}


@pytest.mark.parametrize(
    "value", ["2147483648", "-2147483649", "99999999999999999999", "1" * 5000, "-" + "9" * 30]
)
def test_an_integer_out_of_its_range_is_refused_with_the_range(value: str) -> None:
    _, problems = cancel_with(f"fulfillment_attempt={value}")
    assert problems == {"fulfillment_attempt": ["must be an integer from -2147483648 to 2147483647"]}


def test_unknown_parameters_are_named_with_the_allowed_ones() -> None:
    _, problems = cancel_with("order_handle=x&update=1&Type=drop&x=1")
    allowed = "unknown query parameter (allowed: type, type_index, fulfillment_attempt)"
    assert problems == {"order_handle": [allowed], "update": [allowed], "Type": [allowed], "x": [allowed]}


def test_every_problem_is_reported_at_once() -> None:
    _, problems = cancel_with("type=foo&type_index=x&fulfillment_attempt=1&fulfillment_attempt=2&zzz")
    assert set(problems) == {"type", "type_index", "fulfillment_attempt", "zzz"}


def test_track_orders_takes_no_query_parameters() -> None:
    call = CALLS["TrackOrders"]
    assert call.query_fields == {}
    problems = apply_query(orders_service_pb2.TrackOrdersRequest(), {"worker_handle": "w"}, call.query_fields)
    assert problems == {"worker_handle": ["unknown query parameter (allowed: none)"]}


def test_the_query_fields_are_the_record_fields_not_bound_elsewhere() -> None:
    for name in ("GetOrder", "CancelOrder", "CompleteOrder", "DisableOrder"):
        assert list(CALLS[name].query_fields) == ["type", "type_index", "fulfillment_attempt"]


# Other scalar types, through a message made for the test.


def _scalars() -> type[Message]:
    file = descriptor_pb2.FileDescriptorProto(
        name="test_rest_query_scalars.proto", package="t", syntax="proto3"
    )
    message = file.message_type.add(name="Scalars")
    types = {
        "u32": FieldDescriptor.TYPE_UINT32,
        "i64": FieldDescriptor.TYPE_INT64,
        "u64": FieldDescriptor.TYPE_UINT64,
        "flag": FieldDescriptor.TYPE_BOOL,
        "text": FieldDescriptor.TYPE_STRING,
        "ratio": FieldDescriptor.TYPE_DOUBLE,
        "raw": FieldDescriptor.TYPE_BYTES,
    }
    for number, (name, type_) in enumerate(types.items(), start=1):
        message.field.add(name=name, number=number, type=type_, label=FieldDescriptor.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    return GetMessageClass(pool.Add(file).message_types_by_name["Scalars"])


SCALARS = _scalars()
SCALAR_FIELDS = dict(SCALARS.DESCRIPTOR.fields_by_name)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("u32", "4294967295", 4294967295),
        ("i64", "-9223372036854775808", -(2**63)),
        ("u64", "18446744073709551615", 2**64 - 1),
        ("flag", "true", True),
        ("flag", "false", False),
        ("text", "any thing", "any thing"),
        ("ratio", "2.5", 2.5),
    ],
)
def test_scalars_are_typed_by_their_descriptor(name: str, value: str, expected: object) -> None:
    message = SCALARS()
    assert apply_query(message, {name: value}, SCALAR_FIELDS) == {}
    assert getattr(message, name) == expected


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("u32", "-1", "must be an integer from 0 to 4294967295"),
        ("u64", "18446744073709551616", "must be an integer from 0 to 18446744073709551615"),
        ("flag", "1", "must be true or false"),
        ("flag", "True", "must be true or false"),
        ("ratio", "abc", "must be a number"),
        ("raw", "AAAA", "cannot be given in the query string"),
    ],
)
def test_scalars_that_do_not_fit_are_refused(name: str, value: str, problem: str) -> None:
    assert apply_query(SCALARS(), {name: value}, SCALAR_FIELDS) == {name: [problem]}


# The replay's query: a repeated enum as one comma-separated list, timestamps as RFC 3339 instants.

WEBHOOK_FIELDS = CALLS["ListOrderWebhooks"].query_fields
VALUE_CHOICES = (
    "must be one or more of unplanned, planned, assigned, dispatched, ongoing, disabled, completed, "
    "cancelled, separated by commas"
)
INSTANT = "must be a timestamp such as 2023-10-26T02:30:00.000Z (RFC 3339, with Z or an offset whose + is sent as %2B)"


def webhooks_with(query: str) -> tuple[orders_service_pb2.ListOrderWebhooksRequest, dict[str, list[str]]]:
    params, problems = parse_query_string(query)
    request = orders_service_pb2.ListOrderWebhooksRequest(order_handle="o")
    problems.update(apply_query(request, params, WEBHOOK_FIELDS))
    return request, problems


def test_the_replay_takes_its_filters_from_the_query() -> None:
    assert list(WEBHOOK_FIELDS) == [
        "value",
        "from_time",
        "to_time",
        "fulfillment_attempt",
        "limit",
        "pagination_token",
        "sort_direction",
    ]
    request, problems = webhooks_with(
        "value=cancelled,completed&from_time=2023-10-26T02:30:00.5Z&to_time=2023-10-26T04:30:00%2B02:00"
        "&fulfillment_attempt=0&limit=10&pagination_token=abc_-&sort_direction=asc"
    )
    assert problems == {}
    assert list(request.value) == [order_pb2.ORDER_STATUS_CANCELLED, order_pb2.ORDER_STATUS_COMPLETED]
    assert (request.from_time.seconds, request.from_time.nanos) == (1698287400, 500_000_000)
    assert (request.to_time.seconds, request.to_time.nanos) == (1698287400, 0)
    assert request.HasField("fulfillment_attempt") and request.fulfillment_attempt == 0
    assert request.limit == 10
    assert request.pagination_token == "abc_-"
    assert request.sort_direction == 1  # SORT_DIRECTION_ASC


def test_absent_filters_are_left_unset() -> None:
    request, problems = webhooks_with("")
    assert problems == {}
    assert not request.value
    assert not request.HasField("from_time") and not request.HasField("to_time")
    assert not request.HasField("limit") and not request.HasField("fulfillment_attempt")


def test_a_single_value_is_a_list_of_one() -> None:
    request, problems = webhooks_with("value=disabled")
    assert problems == {}
    assert list(request.value) == [order_pb2.ORDER_STATUS_DISABLED]


@pytest.mark.parametrize(
    "value", ["", ",", "cancelled,", ",cancelled", "cancelled,,completed", "CANCELLED", "unspecified", "x"]
)
def test_a_value_list_names_declared_values_and_nothing_else(value: str) -> None:
    request, problems = webhooks_with(f"value={value}")
    assert problems == {"value": [VALUE_CHOICES]}
    assert not request.value  # nothing half-applied


def test_a_list_is_one_parameter_not_repeated_ones() -> None:
    _, problems = webhooks_with("value=cancelled&value=completed")
    assert problems == {"value": ["is given more than once"]}


@pytest.mark.parametrize(
    "value",
    [
        "2023-10-26T04:30:00+02:00",  # an unencoded + is a space in a query string
        "2023-10-26",
        "2023-10-26T02:30:00",
        "1698287400",
        "",
        "9999-12-31T23:59:60Z",
    ],
)
def test_a_time_must_be_an_rfc3339_instant(value: str) -> None:
    request, problems = webhooks_with(f"from_time={value}&to_time={value}")
    assert problems == {"from_time": [INSTANT], "to_time": [INSTANT]}
    assert not request.HasField("from_time")


def test_other_messages_and_repeated_scalars_stay_out_of_the_query() -> None:
    cancel = orders_service_pb2.CancelOrderRequest.DESCRIPTOR.fields_by_name
    assert "update" not in CANCEL_FIELDS and cancel["update"].message_type is not None
    track = orders_service_pb2.TrackOrdersRequest.DESCRIPTOR.fields_by_name
    assert not takes_query(track["orders"])  # a repeated message
    assert takes_query(orders_service_pb2.ListOrderWebhooksRequest.DESCRIPTOR.fields_by_name["from_time"])
    assert not takes_query(order_pb2.Order.DESCRIPTOR.fields_by_name["destination"])  # a message
    assert not takes_query(order_pb2.Order.DESCRIPTOR.fields_by_name["timeline"])


# Fuzz: whatever a caller sends, the query is typed or its problems are named; nothing else escapes.

STATUS_NAMES = enum_names(order_pb2.OrderStatus.DESCRIPTOR).choices(with_zero=False)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
    | st.binary(max_size=200).map(quote_from_bytes)
)
def test_any_query_string_is_typed_or_refused_by_name(raw: str) -> None:
    params, problems = parse_query_string(raw)
    request = orders_service_pb2.ListOrderWebhooksRequest(order_handle="o")
    problems.update(apply_query(request, params, WEBHOOK_FIELDS))
    assert all(isinstance(name, str) and messages for name, messages in problems.items())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(STATUS_NAMES), min_size=1, max_size=8),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
)
def test_lists_and_instants_round_trip(names: list[str], instant: datetime) -> None:
    text = instant.isoformat().replace("+00:00", "Z")
    request, problems = webhooks_with(f"value={','.join(names)}&from_time={quote(text)}")
    assert problems == {}
    by_name = enum_names(order_pb2.OrderStatus.DESCRIPTOR).by_name
    assert list(request.value) == [by_name[n] for n in names]
    expected = instant - datetime(1970, 1, 1, tzinfo=UTC)
    assert request.from_time.seconds == expected.days * 86400 + expected.seconds
    assert request.from_time.nanos == expected.microseconds * 1000
