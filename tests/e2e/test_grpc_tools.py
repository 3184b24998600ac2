"""The gRPC port as outside tools see it: grpcurl and ghz, through reflection and through --protoset.

The Go binaries are required (a missing one fails with how to install it). They run as
subprocesses through asyncio, so the server in this test's event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.calls.orders import OrderCalls
from gateway.protos import SERVICE_NAME, order_pb2, orders_service_pb2, protoset_path
from gateway.seed import seed_orders
from gateway.testing import GatewayStack, basic
from tests import gotools
from tests.gotools import find_go_tool

CANCEL = f"{SERVICE_NAME}.CancelOrder"
TOOL_TIMEOUT_S = 60.0
LOAD_ORDERS = 500


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


async def run(*args: str | Path) -> Run:
    process = await asyncio.create_subprocess_exec(
        *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TOOL_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{args[0]} did not finish within {TOOL_TIMEOUT_S} s: {args[1:]}")
    return Run(process.returncode or 0, stdout.decode(), stderr.decode())


@pytest.fixture(scope="module")
def grpcurl() -> Path:
    return find_go_tool("grpcurl")


@pytest.fixture(scope="module")
def ghz() -> Path:
    return find_go_tool("ghz")


def field(message: dict[str, Any], name: str) -> Any:
    """A field of grpcurl's JSON output: proto names through reflection, lowerCamel with --protoset."""
    first, *rest = name.split("_")
    camel = first + "".join(part.title() for part in rest)
    return message[name] if name in message else message[camel]


def test_a_missing_tool_fails_with_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no go, no ghz
    monkeypatch.setenv("GOBIN", str(tmp_path / "gobin"))
    gotools._go_env.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception) as caught:
            find_go_tool("ghz")
    finally:
        gotools._go_env.cache_clear()
    assert "go install github.com/bojand/ghz/cmd/ghz@" in str(caught.value)


# --- grpcurl -------------------------------------------------------------------------------


async def test_grpcurl_lists_services(grpc_stack: GatewayStack, grpcurl: Path) -> None:
    result = await run(grpcurl, "-plaintext", grpc_stack.grpc_target, "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert SERVICE_NAME in services
    assert "grpc.health.v1.Health" in services
    assert any(s.startswith("grpc.reflection.") for s in services)

    methods = await run(grpcurl, "-plaintext", grpc_stack.grpc_target, "list", SERVICE_NAME)
    assert methods.returncode == 0, methods.stderr
    assert set(methods.stdout.split()) == {
        f"{SERVICE_NAME}.{m}"
        for m in (
            "TrackOrders",
            "GetOrder",
            "CancelOrder",
            "CompleteOrder",
            "DisableOrder",
            "ListOrderWebhooks",
            "WatchOrderEvents",
        )
    }


async def test_grpcurl_describes_service_and_method(grpc_stack: GatewayStack, grpcurl: Path) -> None:
    service = await run(grpcurl, "-plaintext", grpc_stack.grpc_target, "describe", SERVICE_NAME)
    assert service.returncode == 0, service.stderr
    assert f"{SERVICE_NAME} is a service" in service.stdout
    assert "rpc CancelOrder ( .hypertrack.orders.v1.CancelOrderRequest )" in service.stdout
    assert 'post: "/orders/{order_handle}/cancel"' in service.stdout

    method = await run(grpcurl, "-plaintext", grpc_stack.grpc_target, "describe", CANCEL)
    assert method.returncode == 0, method.stderr
    assert f"{CANCEL} is a method" in method.stdout
    assert "returns ( .hypertrack.orders.v1.CancelOrderResponse )" in method.stdout
    assert "idempotency_level = IDEMPOTENT" in method.stdout

    message = await run(
        grpcurl, "-plaintext", grpc_stack.grpc_target, "describe", "hypertrack.orders.v1.CancelOrderRequest"
    )
    assert message.returncode == 0, message.stderr
    assert "optional int32 fulfillment_attempt = 4;" in message.stdout


def cancel_args(stack: GatewayStack, handle: str) -> list[str]:
    return [
        "-plaintext",
        "-H",
        f"authorization: {basic(stack.account_id, stack.secret)}",
        "-d",
        json.dumps({"order_handle": handle}),
        stack.grpc_target,
        f"{SERVICE_NAME}/CancelOrder",
    ]


async def stored_order(stack: GatewayStack, account_id: str, handle: str) -> order_pb2.Order:
    """The order as the store holds it, read in-process past both servers."""
    request = orders_service_pb2.GetOrderRequest(order_handle=handle)
    return await OrderCalls(stack.store).get_order(account_id, request, time.monotonic() + 5)


async def assert_cancelled_by(stack: GatewayStack, result: Run, handle: str) -> None:
    assert result.returncode == 0, result.stderr
    order = json.loads(result.stdout)["order"]
    assert field(order, "order_handle") == handle
    assert order["status"] == "ORDER_STATUS_CANCELLED"
    assert field(order, "cancelled_at").endswith("Z")
    assert [e for e in order["timeline"] if "order_cancelled" in e or "orderCancelled" in e]
    stored = await stored_order(stack, stack.account_id, handle)
    assert stored.status == order_pb2.ORDER_STATUS_CANCELLED


async def test_grpcurl_cancels_through_reflection(grpc_stack: GatewayStack, grpcurl: Path) -> None:
    result = await run(grpcurl, *cancel_args(grpc_stack, "order-3"))
    await assert_cancelled_by(grpc_stack, result, "order-3")


async def test_grpcurl_cancels_with_protoset(grpc_stack: GatewayStack, grpcurl: Path) -> None:
    result = await run(grpcurl, "-protoset", protoset_path(), *cancel_args(grpc_stack, "order-1"))
    await assert_cancelled_by(grpc_stack, result, "order-1")
    order = json.loads(result.stdout)["order"]
    assert field(order, "end_location") == {"longitude": -121.877246, "latitude": 37.371916}
    assert field(order, "cancelled_at_destination") is False


async def test_grpcurl_shows_error_details(grpc_stack: GatewayStack, grpcurl: Path) -> None:
    result = await run(grpcurl, "-format-error", *cancel_args(grpc_stack, "no-such-order"))
    assert result.returncode != 0
    error = json.loads(result.stderr)  # -format-error writes the status to stderr
    assert error["code"] == 5  # NOT_FOUND
    assert error["message"] == "order 'no-such-order' not found"
    (info,) = error["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "ORDER_NOT_FOUND"
    assert info["domain"] == "hypertrack-gateway"


async def test_grpcurl_without_credentials_is_unauthenticated(
    grpc_stack: GatewayStack, grpcurl: Path
) -> None:
    args = cancel_args(grpc_stack, "order-3")
    result = await run(grpcurl, "-format-error", *args[:1], *args[3:])
    assert result.returncode != 0
    error = json.loads(result.stderr)  # -format-error writes the status to stderr
    assert error["code"] == 16  # UNAUTHENTICATED
    assert error["details"][0]["reason"] == "UNAUTHENTICATED"
    stored = await stored_order(grpc_stack, "demo", "order-3")
    assert stored.status == order_pb2.ORDER_STATUS_ONGOING


# --- ghz -----------------------------------------------------------------------------------


async def ghz_cancel(ghz: Path, stack: GatewayStack, prefix: str, *extra: str | Path) -> dict[str, Any]:
    result = await run(
        ghz,
        "--insecure",
        "--call",
        CANCEL,
        "-d",
        json.dumps({"order_handle": prefix + "{{.RequestNumber}}"}),
        "-n",
        str(LOAD_ORDERS),
        "-c",
        "10",
        "--metadata",
        json.dumps({"authorization": basic(stack.account_id, stack.secret)}),
        "--format",
        "json",
        *extra,
        stack.grpc_target,
    )
    assert result.returncode == 0, result.stderr or result.stdout
    report: dict[str, Any] = json.loads(result.stdout)
    latencies = {d["percentage"]: d["latency"] for d in report.get("latencyDistribution") or []}
    print(  # the figures, for `pytest -s`
        f"\nghz {' '.join(map(str, extra)) or '(reflection)'}: {report['count']} calls, "
        f"{report['rps']:.0f} req/s, average {report['average'] / 1e6:.2f} ms, "
        f"p99 {latencies.get(99, 0) / 1e6:.2f} ms"
    )
    return report


def assert_all_ok(report: dict[str, Any]) -> None:
    assert report["count"] == LOAD_ORDERS
    assert report["statusCodeDistribution"] == {"OK": LOAD_ORDERS}
    assert not report.get("errorDistribution")
    assert report["rps"] > 0


async def assert_all_cancelled(stack: GatewayStack, prefix: str, attempt: int) -> None:
    for i in range(LOAD_ORDERS):
        order = await stored_order(stack, "demo", f"{prefix}{i}")
        assert order.status == order_pb2.ORDER_STATUS_CANCELLED, order.order_handle
        assert order.fulfillment_attempt == attempt
        cancelled = [e for e in order.timeline if e.WhichOneof("event") == "order_cancelled"]
        assert len(cancelled) == 1, order.order_handle
        assert cancelled[0].order_cancelled.fulfillment_attempt == attempt


async def test_ghz_cancels_through_reflection_then_with_protoset(grpc_stack: GatewayStack, ghz: Path) -> None:
    assert await seed_orders(grpc_stack.store, "demo", LOAD_ORDERS, "load-") == LOAD_ORDERS
    assert_all_ok(await ghz_cancel(ghz, grpc_stack, "load-"))
    await assert_all_cancelled(grpc_stack, "load-", attempt=0)

    # Seeding again gives every cancelled handle its next attempt, cancellable again.
    assert await seed_orders(grpc_stack.store, "demo", LOAD_ORDERS, "load-") == LOAD_ORDERS
    assert_all_ok(await ghz_cancel(ghz, grpc_stack, "load-", "--protoset", protoset_path()))
    await assert_all_cancelled(grpc_stack, "load-", attempt=1)
