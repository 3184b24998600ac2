"""Tracing with OpenTelemetry: a span for each REST request, for the gRPC call a REST front end
sends, for the call the servicer answers and for each store transaction, joined into one trace
across processes by W3C `traceparent`.

The assembly imports this module and builds a `Tracing` only when tracing is configured (an OTLP
endpoint); otherwise the parts that would trace hold `None`, checked once per request, and
OpenTelemetry is not even loaded. Spans leave the process in batches, from the SDK's exporter
thread, over OTLP.

The spans follow OpenTelemetry's semantic conventions: HTTP server (`http.request.method`,
`http.route`, `http.response.status_code`, `url.path`, `server.address`, `client.address`), gRPC
(`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and database (`db.system`,
`db.operation.name`). This module keeps its own OpenTelemetry objects (tracer provider,
propagator) and never installs them as the process's globals, so two gateways in one process (a
test's stack) keep their traces apart.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import grpc
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.domain.errors import OrderError, Unavailable

T = TypeVar("T")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

TRACER_NAME = "hypertrack-gateway"
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The codes that mark a server's span as failed (the semantic conventions): the others are the
caller's mistake, not the server's."""


class TracingConfig(Protocol):
    """What tracing is told (gateway/settings.py `TracingSettings` has these fields)."""

    @property
    def endpoint(self) -> str | None: ...
    @property
    def protocol(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def service_name(self) -> str: ...
    @property
    def resource_attributes(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def sampler(self) -> str: ...
    @property
    def sampler_arg(self) -> float: ...
    @property
    def export_delay_s(self) -> float: ...


SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
"""The samplers OTEL_TRACES_SAMPLER may name."""


def sampler_of(name: str, ratio: float) -> sampling.Sampler:
    """The sampler OTEL_TRACES_SAMPLER names (one of SAMPLERS), with OTEL_TRACES_SAMPLER_ARG's ratio."""
    root: sampling.Sampler
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        root = sampling.ALWAYS_ON
    elif base == "always_off":
        root = sampling.ALWAYS_OFF
    elif base == "traceidratio":
        root = sampling.TraceIdRatioBased(ratio)
    else:
        raise ValueError(f"unknown sampler {name!r}")
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def otlp_exporter(config: TracingConfig) -> SpanExporter:
    assert config.endpoint is not None
    headers = dict(config.headers)
    if config.protocol == "grpc":
        # Optional: only when the operator installed opentelemetry-exporter-otlp-proto-grpc
        # (gateway/config.py checks that it is there before anything starts).
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter as GrpcSpanExporter,
        )

        exporter: SpanExporter = GrpcSpanExporter(endpoint=config.endpoint, headers=headers)
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.endpoint, headers=headers)


def _version() -> str:
    try:
        return importlib.metadata.version("hypertrack-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Tracing:
    """The spans of one gateway process: a tracer over `processor` (a BatchSpanProcessor over the
    OTLP exporter in production, a test's own otherwise), and the W3C trace context propagator."""

    def __init__(
        self,
        processor: SpanProcessor,
        *,
        service_name: str = TRACER_NAME,
        resource_attributes: Iterable[tuple[str, str]] = (),
        sampler: sampling.Sampler | None = None,
    ) -> None:
        attributes: dict[str, Any] = dict(resource_attributes)
        attributes.update(
            {
                "service.name": service_name,
                "service.version": _version(),
                "process.pid": os.getpid(),
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
            }
        )
        # Resource(...) rather than Resource.create(...): the latter reads OTEL_* variables itself,
        # and the configuration is read once, by gateway/config.py.
        self._provider = TracerProvider(
            sampler=sampler or sampling.ParentBased(sampling.ALWAYS_ON),
            resource=Resource(attributes),
            shutdown_on_exit=False,
        )
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer(TRACER_NAME, _version())
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def start(cls, config: TracingConfig) -> Tracing:
        """Tracing to the OTLP endpoint `config` names, spans sent in batches."""
        processor = BatchSpanProcessor(
            otlp_exporter(config), schedule_delay_millis=config.export_delay_s * 1000
        )
        return cls(
            processor,
            service_name=config.service_name,
            resource_attributes=config.resource_attributes,
            sampler=sampler_of(config.sampler, config.sampler_arg),
        )

    async def shutdown(self) -> None:
        """Send the spans still waiting, then stop the exporter (off the event loop: it blocks)."""
        await asyncio.to_thread(self._provider.shutdown)

    # The REST face.

    def rest_handler(self, handle: Handler) -> Handler:
        """`handle` with a server span around each request, the current span while it runs (so
        the call it makes is its child), continuing the caller's `traceparent`."""

        async def traced(request: web.BaseRequest) -> web.StreamResponse:
            span = self._request_span(request)
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                response = await handle(request)
            except BaseException as error:  # the handler answers every failure: only a cancellation
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", type(error).__qualname__)
                raise
            else:
                status = response.status
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", str(status))
                return response
            finally:
                otel_context.detach(token)
                span.end()

        return traced

    def _request_span(self, request: web.BaseRequest) -> Span:
        method = request.method
        attributes: dict[str, Any] = {
            "http.request.method": method if method in _HTTP_METHODS else "_OTHER",
            "url.path": request.raw_path.partition("?")[0],
            "url.scheme": request.scheme,
            "network.protocol.version": f"{request.version.major}.{request.version.minor}",
        }
        if method not in _HTTP_METHODS:
            attributes["http.request.method_original"] = method
        host = request.headers.get("Host")
        if host:
            name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if name and port.isdigit():
                attributes["server.address"], attributes["server.port"] = name.strip("[]"), int(port)
            else:
                attributes["server.address"] = host.strip("[]")
        if request.remote:
            attributes["client.address"] = request.remote
        agent = request.headers.get("User-Agent")
        if agent:
            attributes["user_agent.original"] = agent
        parent = self._propagator.extract(request.headers)
        name = method if method in _HTTP_METHODS else "HTTP"
        return self._tracer.start_span(name, parent, SpanKind.SERVER, attributes)

    def name_request(self, method: str, route: str) -> None:
        """Name the current request's span after its route template, once a route matched."""
        span = trace.get_current_span()
        span.set_attribute("http.route", route)
        span.update_name(f"{method if method in _HTTP_METHODS else 'HTTP'} {route}")

    def current_trace_id(self) -> str | None:
        """The trace id of the current span, as 32 hex digits; None outside a span."""
        context = trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    # The calls.

    def client_call(self, service: str, method: str, server: str) -> CallSpan:
        """The span of a gRPC call this process sends to `server` (`host:port`), a child of the
        current span; its `metadata()` carries it to the server."""
        attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        host, _, port = server.removeprefix("dns:///").rpartition(":")
        if host and port.isdigit():
            attributes["server.address"], attributes["server.port"] = host.strip("[]"), int(port)
        span = self._tracer.start_span(f"{service}/{method}", None, SpanKind.CLIENT, attributes)
        return CallSpan(self, span, None, server=False)

    def in_process_call(self, service: str, method: str) -> CallSpan:
        """The span of a call answered by the servicer in this process, a child of the current
        span (the REST request's) and current itself until it ends (the store's spans are its
        children). Internal: it crosses no process, so there is no client span before it."""
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        span = self._tracer.start_span(f"{service}/{method}", None, SpanKind.INTERNAL, attributes)
        return CallSpan(self, span, otel_context.attach(trace.set_span_in_context(span)), server=True)

    def server_call(
        self, service: str, method: str, metadata: Iterable[tuple[str, str | bytes]], peer: str
    ) -> CallSpan:
        """The span of a call that arrived through the gRPC server, continuing the caller's
        `traceparent` metadata, and current until it ends."""
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        parent = self._propagator.extract(carrier)
        attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        address, port = peer_address(peer)
        if address:
            attributes["client.address"] = address
            if port is not None:
                attributes["client.port"] = port
        span = self._tracer.start_span(f"{service}/{method}", parent, SpanKind.SERVER, attributes)
        return CallSpan(self, span, otel_context.attach(trace.set_span_in_context(span)), server=True)

    def metadata_of(self, span: Span) -> tuple[tuple[str, str], ...]:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, trace.set_span_in_context(span))
        return tuple(carrier.items())

    # The store.

    def store_spans(self, db_system: str) -> Callable[[str], StoreSpan | None]:
        """What starts the span of a store operation (InstrumentedStore's `span`): a child of the
        current call, and none outside a sampled call (the health check's pings, say)."""
        tracer = self._tracer

        def start(operation: str) -> StoreSpan | None:
            parent = trace.get_current_span()
            if not parent.is_recording():
                return None
            attributes = {"db.system": db_system, "db.system.name": db_system, "db.operation.name": operation}
            return StoreSpan(tracer.start_span(operation, None, SpanKind.CLIENT, attributes))

        return start


class CallSpan:
    """The span of one gRPC call, ended with the call's status code."""

    __slots__ = ("_server", "_span", "_token", "_tracing")

    def __init__(self, tracing: Tracing, span: Span, token: object | None, *, server: bool) -> None:
        self._tracing = tracing
        self._span = span
        self._token = token
        self._server = server

    @property
    def trace_id(self) -> str:
        return format(self._span.get_span_context().trace_id, "032x")

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """`traceparent` (and `tracestate`) naming this span as the parent, for the call's metadata."""
        return self._tracing.metadata_of(self._span)

    def end(self, code: grpc.StatusCode) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK and (not self._server or code in _SERVER_ERRORS):
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", code.name)
        span.end()

    async def run(self, call: Awaitable[T], code_of: Callable[[BaseException], grpc.StatusCode]) -> T:
        """Await `call`, then end the span with OK, or with `code_of` the exception it raised."""
        code = grpc.StatusCode.OK
        try:
            return await call
        except BaseException as error:
            code = code_of(error)
            raise
        finally:
            self.end(code)


class StoreSpan:
    """The span of one store operation."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def end(self, error: BaseException | None) -> None:
        if error is not None:
            self._span.set_attribute("error.type", type(error).__qualname__)
            # A decision that refused the change (no such order, say) is an answer, not a failure
            # of the store; a busy or unreachable database, or anything unexpected, is.
            if not isinstance(error, OrderError) or isinstance(error, Unavailable):
                self._span.set_status(Status(StatusCode.ERROR))
        self._span.end()


def peer_address(peer: str) -> tuple[str, int | None]:
    """(address, port) of a gRPC peer in grpc's form (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`, `unix:...`)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return "", None
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None
