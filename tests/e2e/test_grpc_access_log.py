"""The gRPC access log: one JSON line per call that arrives through the gRPC server, beside the
REST request line; a REST request answered in-process writes its REST line only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gateway.observability.logs import ACCESS_LOGGER
from gateway.protos import orders_service_pb2
from gateway.testing import GatewayStack

CANCEL = "/hypertrack.orders.v1.OrdersService/CancelOrder"
GET = "/hypertrack.orders.v1.OrdersService/GetOrder"


def _lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


async def test_a_grpc_call_writes_one_line_with_method_code_duration_peer_and_request_id(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with GatewayStack.start(tmp_path, access_log=True) as stack:
        stub = stack.stub()
        metadata = (*stack.grpc_auth(), ("x-request-id", "grpc-log-1"))
        await stub.CancelOrder(
            orders_service_pb2.CancelOrderRequest(order_handle="order-3"), metadata=metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.GetOrder(
                orders_service_pb2.GetOrderRequest(order_handle="no-such-order"),
                metadata=(*stack.grpc_auth(), ("x-request-id", "grpc-log-2")),
            )
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    calls = [line for line in _lines(capfd.readouterr().err) if line.get("message") == "call"]
    assert [(c["request_id"], c["method"], c["code"]) for c in calls] == [
        ("grpc-log-1", CANCEL, "OK"),
        ("grpc-log-2", GET, "NOT_FOUND"),
    ]
    for call in calls:
        assert call["logger"] == ACCESS_LOGGER and call["level"] == "info"
        assert call["peer"].startswith("ipv4:127.0.0.1:")
        assert isinstance(call["duration_ms"], float) and call["duration_ms"] > 0
        assert "trace_id" not in call  # tracing is off
        assert "authorization" not in json.dumps(call).lower()


async def test_a_grpc_call_without_a_request_id_is_logged_with_none(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with GatewayStack.start(tmp_path, access_log=True) as stack:
        await stack.stub().GetOrder(
            orders_service_pb2.GetOrderRequest(order_handle="order-3"), metadata=stack.grpc_auth()
        )
    [call] = [line for line in _lines(capfd.readouterr().err) if line.get("message") == "call"]
    assert call["request_id"] is None and call["code"] == "OK"


async def test_an_in_process_rest_call_writes_only_its_rest_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with (
        GatewayStack.start(tmp_path, access_log=True) as stack,
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
        http.post(
            f"{stack.rest_url}/orders/order-3/cancel", headers={"X-Request-ID": "rest-log-1"}
        ) as answered,
    ):
        assert answered.status == 200
    lines = [line for line in _lines(capfd.readouterr().err) if line.get("request_id") == "rest-log-1"]
    assert [(line["message"], line["route"], line["status"]) for line in lines] == [
        ("request", "/orders/{order_handle}/cancel", 200)
    ]


async def test_a_rest_call_to_a_remote_backend_writes_a_rest_line_and_a_grpc_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with (
        GatewayStack.start(tmp_path, backend="remote", access_log=True) as stack,
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
        http.post(
            f"{stack.rest_url}/orders/order-3/cancel", headers={"X-Request-ID": "rest-log-2"}
        ) as answered,
    ):
        assert answered.status == 200
    lines = [line for line in _lines(capfd.readouterr().err) if line.get("request_id") == "rest-log-2"]
    assert sorted((line["message"], line.get("code") or line.get("status")) for line in lines) == [
        ("call", "OK"),
        ("request", 200),
    ]


async def test_without_the_access_log_setting_a_grpc_call_writes_no_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with GatewayStack.start(tmp_path) as stack:
        await stack.stub().GetOrder(
            orders_service_pb2.GetOrderRequest(order_handle="order-3"),
            metadata=(*stack.grpc_auth(), ("x-request-id", "grpc-log-3")),
        )
    assert "grpc-log-3" not in capfd.readouterr().err
