"""Tracing: one trace per REST request, from the REST span through the gRPC call to the store's
transaction, across the `http` and `grpc` processes, sent over OTLP to a receiver in the test
that decodes the real `ExportTraceServiceRequest`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from gateway.assembly import assemble
from gateway.observability.logs import ACCESS_LOGGER
from gateway.settings import TracingSettings
from gateway.testing import basic, stack_settings
from tests.processes import GatewayProcess

DEMO_AUTH = {"Authorization": basic("demo", "demo-secret")}
SERVICE = "hypertrack.orders.v1.OrdersService"
WAIT_S = 20.0
BEHIND_HTTP = ("--trusted-proxies", "127.0.0.1/32")
"""A `grpc` behind an `http` on the same host trusts it to name the client."""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on loopback that keeps every span it is sent."""

    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            span.name,
                            span.kind,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in span.attributes},
                            resource,
                        )
                    )
        self._changed.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def wait_for(self, done: Callable[[list[ReceivedSpan]], bool]) -> list[ReceivedSpan]:
        """The spans received, once `done` says they are all there."""
        async with asyncio.timeout(WAIT_S):
            while not done(self.spans):
                self._changed.clear()
                await self._changed.wait()
        return self.spans

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def _caller_context() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


def _named(spans: list[ReceivedSpan], name: str, kind: int) -> ReceivedSpan:
    [found] = [s for s in spans if s.name == name and s.kind == kind]
    return found


async def test_one_trace_joins_the_rest_request_the_grpc_call_and_the_store_across_processes(
    tmp_path: Path,
) -> None:
    trace_id, caller_span, traceparent = _caller_context()
    async with otlp_receiver() as receiver:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        database = f"sqlite:///{tmp_path / 'orders.db'}"
        grpc_server = await asyncio.to_thread(
            GatewayProcess.start,
            ["grpc", "--grpc-port", "0", "--database", database, "--demo", *BEHIND_HTTP],
            cwd=tmp_path,
            env={**otel, "OTEL_SERVICE_NAME": "orders-grpc"},
        )
        try:
            front = await asyncio.to_thread(
                GatewayProcess.start,
                ["http", "--http-port", "0", "--backend", f"127.0.0.1:{grpc_server.grpc_port}"],
                cwd=tmp_path,
                env={**otel, "OTEL_SERVICE_NAME": "orders-http"},
            )
            try:
                async with (
                    aiohttp.ClientSession(headers=DEMO_AUTH) as http,
                    http.post(
                        f"{front.rest_url}/orders/order-3/cancel", headers={"traceparent": traceparent}
                    ) as answered,
                ):
                    assert answered.status == 200, await answered.text()

                def complete(spans: list[ReceivedSpan]) -> bool:
                    names = {s.name for s in spans if s.trace_id == trace_id}
                    return {"POST /orders/{order_handle}/cancel", "change_order"} <= names and (
                        sum(s.name == f"{SERVICE}/CancelOrder" for s in spans) >= 2
                    )

                await receiver.wait_for(complete)
            finally:
                assert await asyncio.to_thread(front.stop) == 0
        finally:
            assert await asyncio.to_thread(grpc_server.stop) == 0

    spans = receiver.trace(trace_id)
    rest = _named(spans, "POST /orders/{order_handle}/cancel", SpanProto.SPAN_KIND_SERVER)
    client = _named(spans, f"{SERVICE}/CancelOrder", SpanProto.SPAN_KIND_CLIENT)
    server = _named(spans, f"{SERVICE}/CancelOrder", SpanProto.SPAN_KIND_SERVER)
    store = _named(spans, "change_order", SpanProto.SPAN_KIND_CLIENT)
    # The caller's trace continues, and each span is the child of the one before it.
    assert rest.parent_id == caller_span
    assert client.parent_id == rest.span_id
    assert server.parent_id == client.span_id
    assert store.parent_id == server.span_id
    # From the two processes.
    assert {rest.resource["service.name"], client.resource["service.name"]} == {"orders-http"}
    assert {server.resource["service.name"], store.resource["service.name"]} == {"orders-grpc"}
    assert rest.resource["process.pid"] == front.process.pid
    assert server.resource["process.pid"] == grpc_server.process.pid
    # The semantic conventions' attributes.
    assert rest.attributes["http.request.method"] == "POST"
    assert rest.attributes["http.route"] == "/orders/{order_handle}/cancel"
    assert rest.attributes["http.response.status_code"] == 200
    assert rest.attributes["url.path"] == "/orders/order-3/cancel"
    assert rest.attributes["server.address"] == "127.0.0.1"
    assert rest.attributes["server.port"] == front.http_port
    assert rest.attributes["client.address"] == "127.0.0.1"
    for call in (client, server):
        assert call.attributes["rpc.system"] == "grpc"
        assert call.attributes["rpc.service"] == SERVICE
        assert call.attributes["rpc.method"] == "CancelOrder"
        assert call.attributes["rpc.grpc.status_code"] == 0
    assert client.attributes["server.port"] == grpc_server.grpc_port
    assert store.attributes["db.system"] == "sqlite"
    assert store.attributes["db.operation.name"] == "change_order"
    # The access log lines of both processes name the trace.
    logged = [
        json.loads(line)
        for process in (front, grpc_server)
        for line in process.stderr_lines
        if line.startswith("{") and trace_id in line
    ]
    assert sorted(line["message"] for line in logged) == ["call", "request"]


async def test_serve_makes_the_rest_span_the_parent_of_the_call_in_process(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    trace_id, caller_span, traceparent = _caller_context()
    async with otlp_receiver() as receiver:
        tracing = TracingSettings(endpoint=f"{receiver.url}/v1/traces", export_delay_s=0.05)
        settings = dataclasses.replace(stack_settings(tmp_path, access_log=True), tracing=tracing)
        gateway = await assemble(settings)
        try:
            async with (
                aiohttp.ClientSession(headers=DEMO_AUTH) as http,
                http.post(
                    f"http://127.0.0.1:{gateway.rest_port}/orders/order-3/cancel",
                    headers={"traceparent": traceparent, "tracestate": "caller=1"},
                ) as answered,
            ):
                assert answered.status == 200
            await receiver.wait_for(lambda spans: "change_order" in {s.name for s in spans})
        finally:
            await gateway.stop()
    spans = receiver.trace(trace_id)
    rest = _named(spans, "POST /orders/{order_handle}/cancel", SpanProto.SPAN_KIND_SERVER)
    call = _named(spans, f"{SERVICE}/CancelOrder", SpanProto.SPAN_KIND_INTERNAL)
    store = _named(spans, "change_order", SpanProto.SPAN_KIND_CLIENT)
    assert rest.parent_id == caller_span
    assert call.parent_id == rest.span_id
    assert store.parent_id == call.span_id
    assert not [s for s in spans if s.kind == SpanProto.SPAN_KIND_CLIENT and s.name.startswith(SERVICE)]
    [line] = [json.loads(line) for line in capfd.readouterr().err.splitlines() if trace_id in line]
    assert line["message"] == "request" and line["trace_id"] == trace_id


async def test_a_failed_call_marks_its_spans(tmp_path: Path) -> None:
    trace_id, _, traceparent = _caller_context()
    async with otlp_receiver() as receiver:
        tracing = TracingSettings(endpoint=f"{receiver.url}/v1/traces", export_delay_s=0.05)
        gateway = await assemble(dataclasses.replace(stack_settings(tmp_path), tracing=tracing))
        try:
            async with (
                aiohttp.ClientSession(headers=DEMO_AUTH) as http,
                http.post(
                    f"http://127.0.0.1:{gateway.rest_port}/orders/no-such-order/cancel",
                    headers={"traceparent": traceparent},
                ) as answered,
            ):
                assert answered.status == 404
        finally:
            await gateway.stop()  # sends what is left
    spans = receiver.trace(trace_id)
    rest = _named(spans, "POST /orders/{order_handle}/cancel", SpanProto.SPAN_KIND_SERVER)
    call = _named(spans, f"{SERVICE}/CancelOrder", SpanProto.SPAN_KIND_INTERNAL)
    assert rest.attributes["http.response.status_code"] == 404
    assert call.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    # A 404 is the caller's mistake: not a failure of the server's span (no error.type).
    assert "error.type" not in rest.attributes


async def test_without_otel_configuration_nothing_traces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_exporter(config: object) -> None:
        raise AssertionError("an exporter was made with tracing off")

    monkeypatch.setattr("gateway.observability.tracing.otlp_exporter", no_exporter)
    gateway = await assemble(stack_settings(tmp_path))
    try:
        assert gateway.tracing is None
        async with (
            aiohttp.ClientSession(headers=DEMO_AUTH) as http,
            http.post(
                f"http://127.0.0.1:{gateway.rest_port}/orders/order-3/cancel",
                headers={"traceparent": _caller_context()[2]},
            ) as answered,
        ):
            assert answered.status == 200
    finally:
        await gateway.stop()


NOT_LOADED = """
import asyncio, sys, tempfile
from pathlib import Path
import aiohttp
from gateway.protos import orders_service_pb2
from gateway.testing import GatewayStack

async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        for backend in ("in-process", "remote"):
            async with GatewayStack.start(Path(directory) / backend, backend=backend, access_log=True) as stack:
                async with aiohttp.ClientSession(headers=stack.rest_auth()) as http:
                    async with http.post(f"{stack.rest_url}/orders/order-3/cancel") as answered:
                        assert answered.status == 200
                request = orders_service_pb2.GetOrderRequest(order_handle="order-3")
                await stack.stub().GetOrder(request, metadata=stack.grpc_auth())
    loaded = [m for m in sys.modules if m.startswith(("opentelemetry", "gateway.observability.tracing"))]
    print(loaded)

asyncio.run(main())
"""


def test_with_tracing_off_opentelemetry_is_not_even_loaded(tmp_path: Path) -> None:
    """Nothing on the hot paths can call into OpenTelemetry when it is not there at all."""
    done = subprocess.run(
        [sys.executable, "-c", NOT_LOADED],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
