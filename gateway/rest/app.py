"""The REST front end: one aiohttp handler over routes compiled from the protos' http rules.

A call flows: match the route -> path, query and body into the request message ->
the backend (in-process servicer or remote gRPC) -> the response field as JSON. Any
failure on the way becomes one HTTP status and one `{"detail", "message"}` body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

import grpc
from aiohttp import web
from google.protobuf.message import Message

from gateway.calls.admission import Network
from gateway.domain.errors import InvalidArgument
from gateway.jsonmap import decode, encode_json
from gateway.protos import SERVICE_DESCRIPTOR
from gateway.rest.backend import Backend
from gateway.rest.body import parse_json, read_body, require_json_content_type
from gateway.rest.context import (
    DeadlinePolicy,
    RequestIds,
    call_metadata,
    check_authorization,
    client_address,
    request_id,
)
from gateway.rest.errors import (
    EXPECTED_FAILURES,
    JSON_HEADERS,
    RestError,
    failure_response,
    locate,
    validation_error,
)
from gateway.rest.pattern import PathDecodeError, PathTemplate, split_path
from gateway.rest.query import apply_query, parse_query_string
from gateway.rest.router import Route, Router
from gateway.rest.rules import RestCall, rest_calls
from gateway.rpc.status import call_failed

if TYPE_CHECKING:  # OpenTelemetry is loaded only when tracing is on
    from gateway.observability.tracing import Tracing

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# What is wrong with a request: {location: {field: [messages]}}, the detail of its 422.
Problems = dict[str, dict[str, list[str]]]


@dataclass(frozen=True, slots=True)
class RestSettings:
    """Limits of the REST front end, with their defaults."""

    max_body_bytes: int = 64 * 1024
    body_timeout_s: float = 10.0
    deadlines: DeadlinePolicy = field(default_factory=DeadlinePolicy)


class RequestObserver(Protocol):
    """Told of every request when it is answered (metrics, access log)."""

    def __call__(
        self, *, route: str, method: str, status: int, seconds: float, request_id: str, remote: str | None
    ) -> None: ...


class RestGateway:
    """Serves the REST calls of OrdersService, plus operational routes (`extra_routes`).
    `trusted_proxies` are the reverse proxies whose `X-Forwarded-For` names the client; none by
    default, so the client is the TCP peer. With `tracing`, each request has a server span, the
    parent of the call it makes; without it, `handle` is the plain handler, with nothing to skip."""

    def __init__(
        self,
        backend: Backend,
        settings: RestSettings | None = None,
        *,
        extra_routes: Sequence[tuple[str, str, Handler]] = (),
        observer: RequestObserver | None = None,
        trusted_proxies: tuple[Network, ...] = (),
        tracing: Tracing | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings or RestSettings()
        self.trusted_proxies = trusted_proxies
        self.calls = rest_calls(SERVICE_DESCRIPTOR)
        routes: list[Route[RestCall | Handler]] = [
            Route(method, PathTemplate.compile(path), handler) for method, path, handler in extra_routes
        ]
        routes += [Route(c.http_method, c.path, c) for c in self.calls]
        self._router: Router[RestCall | Handler] = Router(routes)
        self._observer = observer
        self._request_ids = RequestIds()
        self._tracing = tracing
        self.handle: Handler = self._handle if tracing is None else tracing.rest_handler(self._handle)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id(request.headers, self._request_ids)
        route_name = "unmatched"
        call: RestCall | None = None
        closing = False
        try:
            segments = split_path(request.raw_path)
            route = self._router.match(request.method, segments)
            route_name = route.path.template
            if self._tracing is not None:
                self._tracing.name_request(request.method, route_name)
            if isinstance(route.target, RestCall):
                call = route.target
                response: web.StreamResponse = await self._forward(call, segments, request, rid)
            else:
                response = await route.target(request)
        except EXPECTED_FAILURES as error:
            response = failure_response(error, method=request.method, call=call)
            closing = isinstance(error, RestError) and error.close_connection
        except Exception as error:
            # A bug on the way (say, in the JSON mapping): logged with its traceback, and answered
            # like every other failure, not with aiohttp's text/plain page without X-Request-ID.
            log.exception("unexpected failure answering %s %s (request %s)", request.method, route_name, rid)
            response = failure_response(error)
        response.headers["X-Request-ID"] = rid
        if self._observer is not None:
            self._observer(
                route=route_name,
                method=request.method,
                status=response.status,
                seconds=time.perf_counter() - started,
                request_id=rid,
                remote=request.remote,
            )
        if closing:
            await _send_and_close(request, response)
        return response

    async def _forward(
        self, call: RestCall, segments: list[str], request: web.BaseRequest, rid: str
    ) -> web.StreamResponse:
        # As in grpc-gateway, the deadline starts before the request is read and translated, and a
        # deadline already past is answered here, the same for both backends (a grpc client rounds
        # tiny timeouts up; the in-process servicer may finish without yielding to the timer).
        headers = request.headers
        deadline = time.monotonic() + self.settings.deadlines.timeout(headers)
        # Credentials that cannot be right are refused before the body is read: reading it first
        # would let anyone without credentials hold a connection for the body's whole timeout.
        try:
            check_authorization(headers)
        except RestError as refusal:
            # With its body unread, the connection is closed after the answer, not kept to drain it.
            refusal.close_connection = request.body_exists and not request.content.is_eof()
            raise
        message = await self._request_message(call, segments, request)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise call_failed(grpc.StatusCode.DEADLINE_EXCEEDED)
        client = client_address(request.remote, headers, self.trusted_proxies)
        metadata = call_metadata(headers, rid, trace_headers=self._tracing is None)
        reply = await self.backend.call(call, message, metadata, remaining, client)
        out = getattr(reply, call.response_body) if call.response_body else reply
        return web.Response(status=call.success_status, body=encode_json(out), headers=JSON_HEADERS)

    async def _request_message(
        self, call: RestCall, segments: list[str], request: web.BaseRequest
    ) -> Message:
        """The request message from the path, the query string and the body."""
        try:
            bound = call.path.bind(segments)
        except PathDecodeError as error:
            raise validation_error({"path": {error.field: ["must be valid percent-encoded UTF-8"]}}) from None
        problems: Problems = {}
        params, query_problems = parse_query_string(request.raw_path.partition("?")[2])
        message = call.request_class(**bound)
        query_problems.update(apply_query(message, params, call.query_fields))
        if query_problems:
            problems["query"] = query_problems
        if call.body:
            await self._apply_body(call, message, request, bound, problems)
        elif request.body_exists and request.content_length != 0:
            problems.setdefault("body", {})["body"] = ["this call takes no body"]
        if problems:
            raise validation_error(problems)
        return message

    async def _apply_body(
        self,
        call: RestCall,
        message: Message,
        request: web.BaseRequest,
        bound: dict[str, str],
        problems: Problems,
    ) -> None:
        raw = await read_body(
            request, max_bytes=self.settings.max_body_bytes, timeout_s=self.settings.body_timeout_s
        )
        if not raw:
            return
        require_json_content_type(request)
        try:
            value = parse_json(raw)
        except RestError as error:  # a 422 whose detail is problems: reported with those found so far
            _add_problems(problems, cast(Problems, error.detail))
            return
        if call.body == "*" and not isinstance(value, dict):
            _add_problems(problems, {"body": {"body": ["must be a JSON object"]}})
            return
        if call.body == "*" and not value:
            return  # `{}`, the usual body of a cancel: nothing to decode or merge
        try:
            if call.body == "*":
                decoded = decode(call.request_class, value)
                for name, path_value in bound.items():
                    if name in value and getattr(decoded, name) != path_value:
                        problems.setdefault("body", {})[name] = ["contradicts the path"]
                decoded.MergeFrom(message)
                message.CopyFrom(decoded)
            else:
                body_type = call.request_class.DESCRIPTOR.fields_by_name[call.body].message_type
                assert body_type is not None  # rules.py only accepts message fields as bodies
                getattr(message, call.body).CopyFrom(decode(body_type, value, path=call.body))
        except InvalidArgument as error:
            _add_problems(problems, locate(call, error.violations))


async def _send_and_close(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Send `response`, then close the connection at once: left to itself, aiohttp would first go
    on reading the rest of an unfinished body for its lingering time (10 s), so the caller too slow
    to send its body (408) would hold the connection that much longer."""
    response.force_close()  # says `Connection: close`
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


def _add_problems(problems: Problems, found: Mapping[str, Mapping[str, list[str]]]) -> None:
    for location, fields in found.items():
        for name, messages in fields.items():
            problems.setdefault(location, {}).setdefault(name, []).extend(messages)
