"""The gRPC surface end to end: a grpc.aio client over a real socket against the whole gateway.

Every RPC in its success paths with the effects checked on the stored order, and every error of
the contract with its status code and its `grpc-status-details-bin` details.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.calls.orders import insertion_of
from gateway.demo import reference_order
from gateway.domain.errors import FieldViolation
from gateway.domain.tracking import build_orders
from gateway.protos import SERVICE_NAME, json_pb2, order_pb2, orders_service_pb2
from gateway.rpc.status import ERROR_DOMAIN, details_from_metadata, error_info, field_violations
from gateway.store.base import HandleRow, Insertion
from gateway.testing import GatewayStack, basic

pb = orders_service_pb2
Status = order_pb2.OrderStatus
Code = grpc.StatusCode
PICK = order_pb2.ORDER_TYPE_PICK
DROP = order_pb2.ORDER_TYPE_DROP
SAN_JOSE = order_pb2.Point(longitude=-121.8610066, latitude=37.3263062)
METRES_PER_DEGREE_LAT = 111_195.0
REFERENCE_ROUTE = "812a1ea5-8c1e-407a-ba24-6cc46d783fef"
Auth = tuple[tuple[str, str], ...]


# --- helpers -------------------------------------------------------------------------------


def to_json(value: Any) -> json_pb2.JsonValue:
    """A Python value as JsonValue: ints stay integers, floats stay numbers, dicts keep their order."""
    if value is None:
        return json_pb2.JsonValue(null_value="NULL_VALUE")
    if isinstance(value, bool):
        return json_pb2.JsonValue(bool_value=value)
    if isinstance(value, int):
        return json_pb2.JsonValue(integer_value=value)
    if isinstance(value, float):
        return json_pb2.JsonValue(number_value=value)
    if isinstance(value, str):
        return json_pb2.JsonValue(string_value=value)
    if isinstance(value, Mapping):
        return json_pb2.JsonValue(object_value=jobj(value))
    return json_pb2.JsonValue(array_value=json_pb2.JsonArray(values=[to_json(v) for v in value]))


def jobj(members: Mapping[str, Any]) -> json_pb2.JsonObject:
    return json_pb2.JsonObject(
        members=[json_pb2.JsonMember(key=k, value=to_json(v)) for k, v in members.items()]
    )


def update(members: Mapping[str, Any]) -> pb.OrderUpdate:
    return pb.OrderUpdate(metadata=jobj(members))


def copy(order: order_pb2.Order) -> order_pb2.Order:
    result = order_pb2.Order()
    result.CopyFrom(order)
    return result


def events(order: order_pb2.Order, kind: str) -> list[order_pb2.TimelineEvent]:
    return [e for e in order.timeline if e.WhichOneof("event") == kind]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def near_destination(metres: float) -> tuple[float, float]:
    """A point `metres` north of the demo destination."""
    return SAN_JOSE.longitude, SAN_JOSE.latitude + metres / METRES_PER_DEGREE_LAT


def new_order(handle: str, **fields: Any) -> pb.NewOrder:
    fields.setdefault("destination", order_pb2.Destination(geometry=SAN_JOSE))
    return pb.NewOrder(order_handle=handle, **fields)


def track_request(*orders: pb.NewOrder, **fields: Any) -> pb.TrackOrdersRequest:
    fields.setdefault("worker_handle", "worker-1")
    fields.setdefault("track_mode", order_pb2.TRACK_MODE_ON_TIME)
    return pb.TrackOrdersRequest(orders=list(orders), **fields)


async def insert_orders(stack: GatewayStack, *orders: order_pb2.Order, account_id: str = "demo") -> None:
    """Put hand-built records straight into the store (for states the API cannot produce)."""
    handles = list(dict.fromkeys(o.order_handle for o in orders))

    def decide(rows: Sequence[HandleRow]) -> Insertion[list[order_pb2.Order]]:
        assert not rows, f"handles exist already: {sorted({row.order_handle for row in rows})}"
        return insertion_of(list(orders))

    await stack.store.track_orders(account_id, handles, decide, deadline=time.monotonic() + 10)


def hand_built(
    handle: str,
    *,
    track: Sequence[tuple[float, float]] = (),
    status: order_pb2.OrderStatus = Status.ORDER_STATUS_ONGOING,
    radius: int | None = None,
) -> order_pb2.Order:
    """An order built by the Track Orders rules, then given a polyline and a status."""
    destination = order_pb2.Destination(geometry=SAN_JOSE)
    if radius is not None:
        destination.radius = radius
    (order,) = build_orders(
        track_request(new_order(handle, destination=destination)),
        {},
        now_ms=now_ms(),
        route_handle=f"route-{handle}",
        new_share_url=lambda: "https://trck.at/test",
    )
    for i, (lon, lat) in enumerate(track):
        point = order.polyline.points.add(longitude=lon, latitude=lat, altitude=12.5)
        point.recorded_at.FromMilliseconds(now_ms() - 60_000 + i)
    order.status = status
    return order


@dataclass
class Failure:
    """A failed call as the client sees it: code, message and the rich status details."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    violations: list[FieldViolation]

    @property
    def fields(self) -> list[str]:
        return [v.field for v in self.violations]


async def failure(call: Awaitable[object]) -> Failure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    status = details_from_metadata(tuple(error.trailing_metadata() or ()))
    assert status is not None, f"{error.code()} without grpc-status-details-bin"
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    info = error_info(status)
    assert info is not None, "no ErrorInfo in the status details"
    assert info.domain == ERROR_DOMAIN
    violations = field_violations(status)
    if error.code() == Code.INVALID_ARGUMENT:
        assert violations, "INVALID_ARGUMENT without BadRequest field violations"
    else:
        assert not violations
    return Failure(error.code(), error.details() or "", info.reason, dict(info.metadata), violations)


@pytest.fixture
def stub(grpc_stack: GatewayStack) -> Any:
    return grpc_stack.stub()


@pytest.fixture
def auth(grpc_stack: GatewayStack) -> Auth:
    return grpc_stack.grpc_auth()


async def get(stub: Any, auth: Auth, handle: str, **fields: Any) -> order_pb2.Order:
    response = await stub.GetOrder(pb.GetOrderRequest(order_handle=handle, **fields), metadata=auth)
    order: order_pb2.Order = response.order
    return order


async def cancel(stub: Any, auth: Auth, handle: str, **fields: Any) -> order_pb2.Order:
    response = await stub.CancelOrder(pb.CancelOrderRequest(order_handle=handle, **fields), metadata=auth)
    order: order_pb2.Order = response.order
    return order


async def complete(stub: Any, auth: Auth, handle: str, **fields: Any) -> order_pb2.Order:
    response = await stub.CompleteOrder(pb.CompleteOrderRequest(order_handle=handle, **fields), metadata=auth)
    order: order_pb2.Order = response.order
    return order


async def disable(stub: Any, auth: Auth, handle: str, **fields: Any) -> order_pb2.Order:
    response = await stub.DisableOrder(pb.DisableOrderRequest(order_handle=handle, **fields), metadata=auth)
    order: order_pb2.Order = response.order
    return order


# --- health --------------------------------------------------------------------------------


async def test_health_serving_for_the_server_and_the_service(grpc_stack: GatewayStack) -> None:
    async with grpc.aio.insecure_channel(grpc_stack.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == Code.NOT_FOUND


# --- GetOrder ------------------------------------------------------------------------------


async def test_get_reference_order(stub: Any, auth: Auth) -> None:
    order = await get(stub, auth, "order-1")
    assert order == reference_order()
    assert order.status == Status.ORDER_STATUS_DISABLED
    assert not order.HasField("cancelled_at")


async def test_get_names_the_record_by_leg_and_attempt(stub: Any, auth: Auth) -> None:
    assert (
        await get(stub, auth, "order-3", type=DROP, type_index=0, fulfillment_attempt=0)
    ).order_handle == ("order-3")
    for fields in ({"type": PICK}, {"type_index": 1}, {"fulfillment_attempt": 1}):
        found = await failure(get(stub, auth, "order-3", **fields))
        assert (found.code, found.reason, found.metadata) == (
            Code.NOT_FOUND,
            "ORDER_NOT_FOUND",
            {"order_handle": "order-3"},
        )
        assert found.message == "order 'order-3' not found"


# --- TrackOrders ---------------------------------------------------------------------------


async def test_track_orders_creates_ongoing_orders(stub: Any, auth: Auth) -> None:
    before = now_ms()
    response = await stub.TrackOrders(
        track_request(
            new_order(
                "trk-1",
                metadata=jobj({"customerID": "12654", "n": 7}),
                expected_service_time=120,
                destination=order_pb2.Destination(geometry=SAN_JOSE, address="748 Story Rd"),
            ),
            new_order("trk-2", type=PICK, destination=order_pb2.Destination(geometry=SAN_JOSE, radius=250)),
            new_order("trk-2"),
            new_order("trk-2"),
            device_id="dev-42",
            ops_group_handle="store-sf",
        ),
        metadata=auth,
    )
    after = now_ms()
    assert response.status == pb.ROUTE_STATUS_TRACKING
    assert response.route_handle
    keys = [(o.order_handle, o.type, o.type_index, o.fulfillment_attempt) for o in response.orders]
    assert keys == [
        ("trk-1", DROP, 0, 0),
        ("trk-2", PICK, 0, 0),
        ("trk-2", DROP, 0, 0),
        ("trk-2", DROP, 1, 0),
    ]
    share_urls = set()
    for order in response.orders:
        assert order.status == Status.ORDER_STATUS_ONGOING
        assert order.route_handle == response.route_handle
        assert order.worker_handle == "worker-1"
        assert order.device_id == "dev-42"
        assert order.ops_group_handle == "store-sf"
        assert order.track_mode == order_pb2.TRACK_MODE_ON_TIME
        assert order.share_url.startswith("https://")
        share_urls.add(order.share_url)
        for stamp in (order.created_at, order.assigned_at, order.started_at):
            assert before <= stamp.ToMilliseconds() <= after
        assert [e.WhichOneof("event") for e in order.timeline] == [
            "order_created",
            "order_assigned",
            "order_started",
        ]
        assert order.timeline[1].order_assigned.driver_handle == "worker-1"
        assert order.timeline[2].order_started.route_handle == response.route_handle
        assert order.timeline[2].order_started.order_type == order.type
        for absent in (
            "cancelled_at",
            "completed_at",
            "disabled_at",
            "end_location",
            "cancelled_at_destination",
        ):
            assert not order.HasField(absent)
    assert len(share_urls) == 4
    first, pick = response.orders[0], response.orders[1]
    assert first.destination.radius == 100
    assert first.destination.address == "748 Story Rd"
    assert pick.destination.radius == 250
    assert first.metadata == jobj({"customerID": "12654", "n": 7})
    assert first.timeline[0].order_created.metadata == first.metadata
    assert first.expected_service_time == 120
    # What was returned is what is stored.
    assert await get(stub, auth, "trk-1") == first
    assert await get(stub, auth, "trk-2", type=DROP, type_index=1) == response.orders[3]


async def test_track_any_unicode_handle_up_to_255_characters(stub: Any, auth: Auth) -> None:
    handles = ["ünï/cødé 😀 ?#%", "😀" * 255, "a" * 255, " "]
    response = await stub.TrackOrders(track_request(*[new_order(h) for h in handles]), metadata=auth)
    assert [o.order_handle for o in response.orders] == handles
    for handle in handles:
        assert (await get(stub, auth, handle)).order_handle == handle
    assert (await cancel(stub, auth, handles[1])).status == Status.ORDER_STATUS_CANCELLED


async def test_track_validation_errors_name_their_fields(stub: Any, auth: Auth) -> None:
    request = track_request(
        pb.NewOrder(order_handle="val-0"),
        new_order(
            "val-1", destination=order_pb2.Destination(geometry=order_pb2.Point(longitude=200, latitude=10))
        ),
        new_order("val-2", type_index=-1),
        new_order("val-3", destination=order_pb2.Destination(geometry=SAN_JOSE, radius=-5)),
        new_order("val\n4"),
        new_order("val-5", metadata=jobj({"x": float("nan")})),
        new_order("val-6", type=9),
        worker_handle="",
        track_mode=order_pb2.TRACK_MODE_UNSPECIFIED,
    )
    found = await failure(stub.TrackOrders(request, metadata=auth))
    assert found.code == Code.INVALID_ARGUMENT
    assert found.reason == "INVALID_ARGUMENT"
    assert found.fields == [
        "worker_handle",
        "track_mode",
        "orders[0].destination.geometry",
        "orders[1].destination.geometry.longitude",
        "orders[2].type_index",
        "orders[3].destination.radius",
        "orders[4].order_handle",
        "orders[5].metadata.x",
        "orders[6].type",
    ]
    assert "orders[0].destination.geometry: is required" in found.message
    for handle in ("val-1", "val-2", "val-3", "val-5", "val-6"):
        assert (await failure(get(stub, auth, handle))).code == Code.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (track_request(), "orders"),
        (track_request(*[new_order(f"many-{i}") for i in range(101)]), "orders"),
        (
            track_request(new_order("dup", type_index=0), new_order("dup", type_index=0)),
            "orders[1].type_index",
        ),
        (track_request(new_order("big", metadata=jobj({"k": "x" * 70_000}))), "orders[0].metadata"),
        (track_request(new_order("ok"), track_mode=7), "track_mode"),
        (track_request(new_order("ok"), device_id="d\x00"), "device_id"),
    ],
)
async def test_track_request_shape_errors(
    stub: Any, auth: Auth, request_: pb.TrackOrdersRequest, field: str
) -> None:
    found = await failure(stub.TrackOrders(request_, metadata=auth))
    assert found.code == Code.INVALID_ARGUMENT
    assert found.fields == [field]


async def test_track_an_open_handle_already_exists_and_creates_nothing(stub: Any, auth: Auth) -> None:
    found = await failure(
        stub.TrackOrders(track_request(new_order("fresh-1"), new_order("order-3")), metadata=auth)
    )
    assert found.code == Code.ALREADY_EXISTS
    assert found.reason == "ORDER_ALREADY_TRACKED"
    assert found.metadata == {"order_handle": "order-3", "status": "ongoing"}
    assert "order-3" in found.message
    # One transaction: the valid order of the refused request was not created either.
    assert (await failure(get(stub, auth, "fresh-1"))).code == Code.NOT_FOUND
    order_1 = await failure(stub.TrackOrders(track_request(new_order("order-1")), metadata=auth))
    assert (order_1.code, order_1.metadata["status"]) == (Code.ALREADY_EXISTS, "disabled")


# --- CancelOrder ---------------------------------------------------------------------------


async def test_cancel_reference_order(stub: Any, auth: Auth) -> None:
    before = await get(stub, auth, "order-1")
    started = now_ms()
    order = await cancel(stub, auth, "order-1")
    ended = now_ms()

    assert order.status == Status.ORDER_STATUS_CANCELLED
    assert order.HasField("cancelled_at")
    cancelled_ms = order.cancelled_at.ToMilliseconds()
    assert started <= cancelled_ms <= ended
    assert order.end_location == order_pb2.Point(longitude=-121.877246, latitude=37.371916)
    last = before.polyline.points[-1]
    assert (order.end_location.longitude, order.end_location.latitude) == (last.longitude, last.latitude)
    assert order.HasField("cancelled_at_destination")
    assert order.cancelled_at_destination is False  # ~5 km from its destination
    (event,) = events(order, "order_cancelled")
    assert order.timeline[-1] == event
    assert event.recorded_at.ToMilliseconds() == cancelled_ms
    assert event.order_cancelled == order_pb2.OrderCancelledEvent(
        order_handle="order-1", route_handle=REFERENCE_ROUTE, fulfillment_attempt=0
    )

    # Nothing else changed.
    expected = copy(before)
    expected.status = Status.ORDER_STATUS_CANCELLED
    expected.cancelled_at.CopyFrom(order.cancelled_at)
    expected.end_location.CopyFrom(order.end_location)
    expected.cancelled_at_destination = False
    expected.timeline.add().CopyFrom(event)
    assert order == expected
    # And it is stored as returned.
    assert await get(stub, auth, "order-1") == order


async def test_cancel_within_the_radius_is_at_destination(
    grpc_stack: GatewayStack, stub: Any, auth: Auth
) -> None:
    await insert_orders(
        grpc_stack,
        hand_built("near", track=[near_destination(3000), near_destination(40)]),
        hand_built("left", track=[near_destination(40), near_destination(160)]),
        hand_built("wide", track=[near_destination(160)], radius=200),
        hand_built("untracked"),
    )
    near = await cancel(stub, auth, "near")
    lon, lat = near_destination(40)
    assert near.end_location == order_pb2.Point(longitude=lon, latitude=lat)
    assert near.cancelled_at_destination is True
    left = await cancel(stub, auth, "left")  # only the last tracked point counts
    assert left.cancelled_at_destination is False
    assert left.end_location.latitude == near_destination(160)[1]
    assert (await cancel(stub, auth, "wide")).cancelled_at_destination is True
    untracked = await cancel(stub, auth, "untracked")
    assert not untracked.HasField("end_location")
    assert untracked.cancelled_at_destination is False
    assert (await get(stub, auth, "near")).cancelled_at_destination is True


async def test_cancel_merges_metadata(stub: Any, auth: Auth) -> None:
    original = {"customerID": "12654", "count": 1, "nested": {"a": None, "b": [1, 2.5]}, "flag": True}
    await stub.TrackOrders(track_request(new_order("meta-1", metadata=jobj(original))), metadata=auth)
    order = await cancel(
        stub,
        auth,
        "meta-1",
        update=update({"count": 2, "new_key": 9_007_199_254_740_993, "customerID": "99", "ratio": 1.0}),
    )
    assert [m.key for m in order.metadata.members] == [
        "customerID",
        "count",
        "nested",
        "flag",
        "new_key",
        "ratio",
    ]
    assert order.metadata == jobj(
        {
            "customerID": "99",
            "count": 2,
            "nested": {"a": None, "b": [1, 2.5]},
            "flag": True,
            "new_key": 9_007_199_254_740_993,
            "ratio": 1.0,
        }
    )
    kinds = {m.key: m.value.WhichOneof("kind") for m in order.metadata.members}
    assert kinds["count"] == "integer_value"
    assert kinds["new_key"] == "integer_value"
    assert kinds["ratio"] == "number_value"
    # The created event keeps the metadata the order was created with.
    assert order.timeline[0].order_created.metadata == jobj(original)
    assert (await get(stub, auth, "meta-1")).metadata == order.metadata


async def test_cancel_metadata_is_validated_and_nothing_changes(stub: Any, auth: Auth) -> None:
    bad = json_pb2.JsonObject(
        members=[
            json_pb2.JsonMember(key="k", value=to_json(1)),
            json_pb2.JsonMember(key="k", value=to_json(2)),
        ]
    )
    found = await failure(cancel(stub, auth, "order-3", update=pb.OrderUpdate(metadata=bad)))
    assert found.code == Code.INVALID_ARGUMENT
    assert found.fields == ["update.metadata"]
    assert (await get(stub, auth, "order-3")).status == Status.ORDER_STATUS_ONGOING


async def test_cancel_again_is_unchanged(stub: Any, auth: Auth) -> None:
    first = await cancel(stub, auth, "order-3", update=update({"reason": "first"}))
    again = await cancel(stub, auth, "order-3", update=update({"reason": "second"}))
    assert again == first
    assert len(events(again, "order_cancelled")) == 1
    assert again.cancelled_at == first.cancelled_at
    assert again.metadata == jobj({"reason": "first"})
    # With the leg and attempt spelled out it is the same record, still unchanged.
    assert await cancel(stub, auth, "order-3", type=DROP, type_index=0, fulfillment_attempt=0) == first
    assert await get(stub, auth, "order-3") == first


async def test_cancel_completed_order_fails_precondition(stub: Any, auth: Auth) -> None:
    completed = await complete(stub, auth, "order-3")
    found = await failure(cancel(stub, auth, "order-3", update=update({"x": 1})))
    assert found.code == Code.FAILED_PRECONDITION
    assert found.reason == "ORDER_COMPLETED"
    assert found.metadata == {"order_handle": "order-3", "status": "completed"}
    assert "completed" in found.message
    assert await get(stub, auth, "order-3") == completed


async def test_fifty_concurrent_cancels_make_one_change(grpc_stack: GatewayStack, auth: Auth) -> None:
    stubs = [grpc_stack.stub() for _ in range(5)]
    results = await asyncio.gather(*(cancel(stubs[i % 5], auth, "order-1") for i in range(50)))
    stored = await get(stubs[0], auth, "order-1")
    assert stored.status == Status.ORDER_STATUS_CANCELLED
    assert len(events(stored, "order_cancelled")) == 1
    assert all(result == stored for result in results)
    assert len({result.cancelled_at.ToMilliseconds() for result in results}) == 1


async def test_concurrent_cancel_and_complete_one_wins(grpc_stack: GatewayStack, auth: Auth) -> None:
    stub = grpc_stack.stub()
    calls = [cancel(stub, auth, "order-4") if i % 2 else complete(stub, auth, "order-4") for i in range(40)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    stored = await get(stub, auth, "order-4")
    winner, loser = (
        (cancel, complete) if stored.status == Status.ORDER_STATUS_CANCELLED else (complete, cancel)
    )
    assert stored.status in (Status.ORDER_STATUS_CANCELLED, Status.ORDER_STATUS_COMPLETED)
    assert len(events(stored, "order_cancelled")) + len(events(stored, "order_completed")) == 1
    for i, outcome in enumerate(outcomes):
        called = cancel if i % 2 else complete
        if called is winner:
            assert outcome == stored
        else:
            assert called is loser
            assert isinstance(outcome, grpc.aio.AioRpcError)
            assert outcome.code() == Code.FAILED_PRECONDITION


# --- CompleteOrder -------------------------------------------------------------------------


async def test_complete_open_order_and_again(stub: Any, auth: Auth) -> None:
    started = now_ms()
    order = await complete(stub, auth, "order-5", update=update({"signed_by": "Ann"}))
    assert order.status == Status.ORDER_STATUS_COMPLETED
    assert started <= order.completed_at.ToMilliseconds() <= now_ms()
    assert not order.HasField("cancelled_at")
    (event,) = events(order, "order_completed")
    assert order.timeline[-1] == event
    assert event.recorded_at == order.completed_at
    assert event.order_completed.order_handle == "order-5"
    assert event.order_completed.fulfillment_attempt == 0
    assert event.order_completed.route_handle == order.route_handle
    assert order.metadata == jobj({"signed_by": "Ann"})
    assert await complete(stub, auth, "order-5") == order
    assert await get(stub, auth, "order-5") == order


async def test_complete_disabled_reference_order(stub: Any, auth: Auth) -> None:
    order = await complete(stub, auth, "order-1")
    assert order.status == Status.ORDER_STATUS_COMPLETED
    assert len(events(order, "order_completed")) == 1


async def test_complete_cancelled_order_fails_precondition(stub: Any, auth: Auth) -> None:
    cancelled = await cancel(stub, auth, "order-5")
    found = await failure(complete(stub, auth, "order-5"))
    assert found.code == Code.FAILED_PRECONDITION
    assert found.reason == "ORDER_CANCELLED"
    assert found.metadata == {"order_handle": "order-5", "status": "cancelled"}
    assert await get(stub, auth, "order-5") == cancelled


# --- DisableOrder --------------------------------------------------------------------------


async def test_disable_ongoing_order_and_again(stub: Any, auth: Auth) -> None:
    before = await get(stub, auth, "order-4")
    order = await disable(stub, auth, "order-4")
    assert order.status == Status.ORDER_STATUS_DISABLED
    assert order.disabled_at.ToMilliseconds() >= before.created_at.ToMilliseconds()
    (event,) = events(order, "order_disabled")
    assert order.timeline[-1] == event
    assert event.order_disabled == order_pb2.OrderDisabledEvent(
        order_handle="order-4", route_handle=before.route_handle, fulfillment_attempt=0
    )
    assert len(order.timeline) == len(before.timeline) + 1
    assert await disable(stub, auth, "order-4") == order
    assert await get(stub, auth, "order-4") == order
    # A disabled order may still be cancelled.
    assert (await cancel(stub, auth, "order-4")).status == Status.ORDER_STATUS_CANCELLED


@pytest.mark.parametrize(
    ("finish", "reason", "status"),
    [("cancel", "ORDER_CANCELLED", "cancelled"), ("complete", "ORDER_COMPLETED", "completed")],
)
async def test_disable_terminal_order_fails_precondition(
    stub: Any, auth: Auth, finish: str, reason: str, status: str
) -> None:
    finished = await (cancel if finish == "cancel" else complete)(stub, auth, "order-4")
    found = await failure(disable(stub, auth, "order-4"))
    assert (found.code, found.reason) == (Code.FAILED_PRECONDITION, reason)
    assert found.metadata == {"order_handle": "order-4", "status": status}
    assert await get(stub, auth, "order-4") == finished


async def test_disable_open_but_not_ongoing_fails_precondition(
    grpc_stack: GatewayStack, stub: Any, auth: Auth
) -> None:
    await insert_orders(grpc_stack, hand_built("assigned-1", status=Status.ORDER_STATUS_ASSIGNED))
    found = await failure(disable(stub, auth, "assigned-1"))
    assert (found.code, found.reason) == (Code.FAILED_PRECONDITION, "ORDER_NOT_ONGOING")
    assert found.metadata == {"order_handle": "assigned-1", "status": "assigned"}
    assert (await get(stub, auth, "assigned-1")).status == Status.ORDER_STATUS_ASSIGNED
    assert (await cancel(stub, auth, "assigned-1")).status == Status.ORDER_STATUS_CANCELLED


# --- targeting: legs and attempts ----------------------------------------------------------


TARGETED = ("GetOrder", "CancelOrder", "CompleteOrder", "DisableOrder")


def targeted_call(stub: Any, auth: Auth, method: str, handle: str, **fields: Any) -> Awaitable[Any]:
    request_type = getattr(pb, f"{method}Request")
    return getattr(stub, method)(request_type(order_handle=handle, **fields), metadata=auth)  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", TARGETED)
async def test_pick_and_drop_legs_are_ambiguous(stub: Any, auth: Auth, method: str) -> None:
    for fields in ({}, {"type_index": 0}):
        found = await failure(targeted_call(stub, auth, method, "order-2", **fields))
        assert found.code == Code.INVALID_ARGUMENT
        assert found.reason == "AMBIGUOUS_ORDER"
        assert found.fields == ["type"]
        description = found.violations[0].description
        assert "pick 0 (attempt 0)" in description
        assert "drop 0 (attempt 0)" in description
    for leg in (await get(stub, auth, "order-2", type=PICK), await get(stub, auth, "order-2", type=DROP)):
        assert leg.status == Status.ORDER_STATUS_ONGOING


async def test_choose_a_leg_with_type_and_index(stub: Any, auth: Auth) -> None:
    pick = await cancel(stub, auth, "order-2", type=PICK)
    assert (pick.type, pick.status) == (PICK, Status.ORDER_STATUS_CANCELLED)
    drop = await get(stub, auth, "order-2", type=DROP, type_index=0)
    assert (drop.type, drop.status) == (DROP, Status.ORDER_STATUS_ONGOING)
    assert not events(drop, "order_cancelled")
    done = await complete(stub, auth, "order-2", type=DROP, type_index=0)
    assert done.status == Status.ORDER_STATUS_COMPLETED
    assert (await get(stub, auth, "order-2", type=PICK)) == pick
    # Still two legs: still ambiguous without a type.
    assert (await failure(get(stub, auth, "order-2"))).reason == "AMBIGUOUS_ORDER"
    assert (await failure(get(stub, auth, "order-2", type=PICK, type_index=1))).code == Code.NOT_FOUND


async def test_fulfillment_attempts(stub: Any, auth: Auth) -> None:
    await stub.TrackOrders(track_request(new_order("fa-1", metadata=jobj({"try": 0}))), metadata=auth)
    first = await cancel(stub, auth, "fa-1")
    response = await stub.TrackOrders(
        track_request(new_order("fa-1", metadata=jobj({"try": 1}))), metadata=auth
    )
    (second,) = response.orders
    assert second.fulfillment_attempt == 1
    assert second.status == Status.ORDER_STATUS_ONGOING
    assert second.timeline[1].order_assigned.fulfillment_attempt == 1
    assert second.timeline[2].order_started.fulfillment_attempt == 1

    assert await get(stub, auth, "fa-1") == second  # the latest attempt
    assert await get(stub, auth, "fa-1", fulfillment_attempt=1) == second
    assert await get(stub, auth, "fa-1", fulfillment_attempt=0) == first
    assert (await failure(get(stub, auth, "fa-1", fulfillment_attempt=2))).code == Code.NOT_FOUND

    found = await failure(stub.TrackOrders(track_request(new_order("fa-1")), metadata=auth))
    assert (found.code, found.reason) == (Code.ALREADY_EXISTS, "ORDER_ALREADY_TRACKED")
    assert found.metadata == {"order_handle": "fa-1", "status": "ongoing"}

    # A cancel without an attempt names the latest; the old attempt is left as it was.
    cancelled = await cancel(stub, auth, "fa-1")
    assert cancelled.fulfillment_attempt == 1
    (event,) = events(cancelled, "order_cancelled")
    assert event.order_cancelled.fulfillment_attempt == 1
    assert await get(stub, auth, "fa-1", fulfillment_attempt=0) == first
    assert await cancel(stub, auth, "fa-1", fulfillment_attempt=0) == first
    third = (await stub.TrackOrders(track_request(new_order("fa-1")), metadata=auth)).orders[0]
    assert third.fulfillment_attempt == 2


# --- request errors ------------------------------------------------------------------------


BAD_HANDLES = [
    ("", "must be 1 to 255 characters"),
    ("x" * 256, "must be 1 to 255 characters"),
    ("😀" * 256, "must be 1 to 255 characters"),
    ("a\x00b", "must not contain control characters"),
    ("line\nbreak", "must not contain control characters"),
    ("tab\there", "must not contain control characters"),
    ("del\x7f", "must not contain control characters"),
    ("c1\x85", "must not contain control characters"),
]


@pytest.mark.parametrize("method", TARGETED)
async def test_bad_handles_are_invalid(stub: Any, auth: Auth, method: str) -> None:
    for handle, description in BAD_HANDLES:
        found = await failure(targeted_call(stub, auth, method, handle))
        assert found.code == Code.INVALID_ARGUMENT, repr(handle)
        assert found.reason == "INVALID_ARGUMENT"
        assert found.violations == [FieldViolation("order_handle", description)]
        assert found.message == f"order_handle: {description}"


@pytest.mark.parametrize("method", TARGETED)
async def test_negative_index_and_attempt_are_invalid(stub: Any, auth: Auth, method: str) -> None:
    found = await failure(targeted_call(stub, auth, method, "order-3", type_index=-1, fulfillment_attempt=-2))
    assert found.code == Code.INVALID_ARGUMENT
    assert found.violations == [
        FieldViolation("type_index", "must be an integer >= 0"),
        FieldViolation("fulfillment_attempt", "must be an integer >= 0"),
    ]
    only_attempt = await failure(targeted_call(stub, auth, method, "order-3", fulfillment_attempt=-1))
    assert only_attempt.fields == ["fulfillment_attempt"]
    unknown_type = await failure(targeted_call(stub, auth, method, "order-3", type=5))
    assert unknown_type.fields == ["type"]
    assert (await get(stub, auth, "order-3")).status == Status.ORDER_STATUS_ONGOING


@pytest.mark.parametrize("method", TARGETED)
async def test_missing_order_is_not_found(stub: Any, auth: Auth, method: str) -> None:
    for handle in ("no-such-order", "n" * 255):
        found = await failure(targeted_call(stub, auth, method, handle))
        assert found.code == Code.NOT_FOUND
        assert found.reason == "ORDER_NOT_FOUND"
        assert found.metadata == {"order_handle": handle}
        assert found.message == f"order {handle!r} not found"


# --- authentication and accounts -----------------------------------------------------------


def bad_credentials() -> list[Auth]:
    return [
        (),
        (("authorization", ""),),
        (("authorization", "Bearer abc"),),
        (("authorization", "Basic"),),
        (("authorization", "Basic !!!not-base64!!!"),),
        (("authorization", "Basic " + base64.b64encode(b"demo-without-colon").decode()),),
        (("authorization", basic("demo", "wrong-secret")),),
        (("authorization", basic("demo", "")),),
        (("authorization", basic("nobody", "demo-secret")),),
        (("x-authorization", basic("demo", "demo-secret")),),
    ]


async def test_bad_credentials_are_unauthenticated_on_every_rpc(stub: Any) -> None:
    calls: dict[str, Callable[[Auth], Awaitable[Any]]] = {
        "GetOrder": lambda creds: get(stub, creds, "order-3"),
        "CancelOrder": lambda creds: cancel(stub, creds, "order-3"),
        "CompleteOrder": lambda creds: complete(stub, creds, "order-3"),
        "DisableOrder": lambda creds: disable(stub, creds, "order-3"),
        "TrackOrders": lambda creds: stub.TrackOrders(track_request(new_order("auth-x")), metadata=creds),
    }
    seen = set()
    for name, call in calls.items():
        for creds in bad_credentials():
            found = await failure(call(creds))
            assert found.code == Code.UNAUTHENTICATED, (name, creds)
            assert found.reason == "UNAUTHENTICATED"
            assert found.metadata == {"realm": "hypertrack-gateway"}
            seen.add(found.message)
    assert len(seen) == 1  # every failure says the same thing
    assert "Basic" in seen.pop()


async def test_rejected_credentials_change_nothing(grpc_stack: GatewayStack, stub: Any) -> None:
    auth = grpc_stack.grpc_auth()
    before = await get(stub, auth, "order-3")
    for creds in bad_credentials():
        await failure(cancel(stub, creds, "order-3"))
    await failure(stub.TrackOrders(track_request(new_order("auth-x")), metadata=bad_credentials()[0]))
    assert await get(stub, auth, "order-3") == before
    assert (await failure(get(stub, auth, "auth-x"))).code == Code.NOT_FOUND


async def test_another_accounts_order_is_not_found_like_a_missing_one(
    grpc_stack: GatewayStack, stub: Any
) -> None:
    demo = grpc_stack.grpc_auth()
    other = grpc_stack.grpc_auth(*await grpc_stack.create_account("other"))
    before = await get(stub, demo, "order-3")

    def without_handle(found: Failure, handle: str) -> tuple[object, ...]:
        return (
            found.code,
            found.message.replace(repr(handle), "<handle>"),
            found.reason,
            {k: v.replace(handle, "<handle>") for k, v in found.metadata.items()},
            found.violations,
        )

    for method in TARGETED:
        foreign = await failure(targeted_call(stub, other, method, "order-3"))
        missing = await failure(targeted_call(stub, demo, method, "never-existed"))
        assert foreign.code == Code.NOT_FOUND
        assert without_handle(foreign, "order-3") == without_handle(missing, "never-existed")
        assert foreign.metadata == {"order_handle": "order-3"}
    assert await get(stub, demo, "order-3") == before

    # The other account may use the same handle for an order of its own; the two never meet.
    response = await stub.TrackOrders(track_request(new_order("order-3")), metadata=other)
    assert response.orders[0].fulfillment_attempt == 0
    assert (await cancel(stub, other, "order-3")).status == Status.ORDER_STATUS_CANCELLED
    assert await get(stub, demo, "order-3") == before


# --- restart -------------------------------------------------------------------------------


async def test_restart_keeps_every_order(tmp_path: Path) -> None:
    legs: dict[str, dict[str, int]] = {
        "order-1": {},
        "order-2/pick": {"type": PICK},
        "order-2/drop": {"type": DROP},
        "order-3": {},
        "order-4": {},
        "order-5": {},
        "kept/0": {"fulfillment_attempt": 0},
        "kept/1": {"fulfillment_attempt": 1},
    }

    async def read_all(stack: GatewayStack) -> dict[str, order_pb2.Order]:
        stub, auth = stack.stub(), stack.grpc_auth()
        return {name: await get(stub, auth, name.split("/")[0], **fields) for name, fields in legs.items()}

    async with GatewayStack.start(tmp_path) as first:
        stub, auth = first.stub(), first.grpc_auth()
        await cancel(stub, auth, "order-1", update=update({"why": "restart test", "n": 3}))
        await complete(stub, auth, "order-3")
        await disable(stub, auth, "order-4")
        await cancel(stub, auth, "order-2", type=PICK)
        await stub.TrackOrders(track_request(new_order("kept", metadata=jobj({"big": 2**62}))), metadata=auth)
        await cancel(stub, auth, "kept")
        await stub.TrackOrders(track_request(new_order("kept")), metadata=auth)
        other = await first.create_account("other-account")
        await stub.TrackOrders(track_request(new_order("theirs")), metadata=first.grpc_auth(*other))
        before = await read_all(first)
    assert before["order-1"].status == Status.ORDER_STATUS_CANCELLED

    async with GatewayStack.start(tmp_path) as second:
        assert second.database_path == tmp_path / "gateway.db"
        after = await read_all(second)
        assert after == before
        stub = second.stub()
        theirs = await get(stub, second.grpc_auth(*other), "theirs")
        assert theirs.status == Status.ORDER_STATUS_ONGOING
        # Still cancelled exactly once, and a retry changes nothing.
        again = await cancel(stub, second.grpc_auth(), "order-1")
        assert again == before["order-1"]
        assert len(events(again, "order_cancelled")) == 1
