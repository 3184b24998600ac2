"""Where the REST front end sends its calls: the servicer in this process, or gRPC servers.

Both backends take the request message, the call metadata and a timeout, and either return
the response message or raise the one error type, an OrderError: the in-process backend as
the servicer raised it, the remote one rebuilt from the failed call's google.rpc.Status at
this edge (a CallFailed with the gRPC code when the transport failed). So the REST side has
one error path for both.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2

from gateway.calls.admission import FORWARDED_FOR
from gateway.domain.errors import OrderError
from gateway.protos import SERVICE_NAME
from gateway.rest.rules import RestCall
from gateway.rpc.client.channel import Channel
from gateway.rpc.client.failures import RpcFailed
from gateway.rpc.servicer import OrdersServicer
from gateway.rpc.status import call_failed, code_of, details_from_metadata, error_of

if TYPE_CHECKING:  # OpenTelemetry is loaded only when tracing is on
    from gateway.observability.tracing import Tracing

Metadata = tuple[tuple[str, str], ...]

RETRY_ATTEMPTS = 3
FIRST_RETRY_BACKOFF_S = 0.05
MAX_RETRY_BACKOFF_S = 0.5
MAX_RECONNECT_BACKOFF_S = 1.0
"""Longest wait between attempts to reconnect to a gRPC server that is down. grpc's default grows
to 120 s, so a front end would answer 503 for up to two minutes after its backend came back."""
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Backend(Protocol):
    async def call(
        self, call: RestCall, request: Message, metadata: Metadata, timeout_s: float, client: str
    ) -> Message:
        """The response message; raises an OrderError when the call fails. `client` is the address
        the front end determined for its caller, on which per-address limits key."""
        ...

    async def ready(self) -> bool:
        """Whether the gRPC service reports SERVING."""
        ...

    async def close(self) -> None: ...


class InProcessBackend:
    """Calls the servicer's core directly: same authentication and errors, no socket. With
    `tracing`, each call has a span of its own, the REST request's child: no client span, as
    nothing crosses a process."""

    def __init__(self, servicer: OrdersServicer, serving: Any, *, tracing: Tracing | None = None) -> None:
        """`serving` is an object with a `serving: bool` attribute (the database health)."""
        self._servicer = servicer
        self._serving = serving
        self._tracing = tracing

    def call(
        self, call: RestCall, request: Message, metadata: Metadata, timeout_s: float, client: str
    ) -> Coroutine[Any, Any, Message]:
        answered = self._call(call, request, metadata, timeout_s, client)
        if self._tracing is None:
            return answered
        span = self._tracing.in_process_call(SERVICE_NAME, call.rpc.name)
        return span.run(answered, _code_of)

    async def _call(
        self, call: RestCall, request: Message, metadata: Metadata, timeout_s: float, client: str
    ) -> Message:
        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await self._servicer.answer(
                    call.rpc.name, request, metadata, client=client, deadline=deadline
                )
        except TimeoutError:
            raise call_failed(grpc.StatusCode.DEADLINE_EXCEEDED) from None

    async def ready(self) -> bool:
        return bool(self._serving.serving)

    async def close(self) -> None:
        return None


def retried_methods(service: ServiceDescriptor) -> frozenset[str]:
    """The calls the protos mark IDEMPOTENT or NO_SIDE_EFFECTS (cancel, complete, disable, get;
    never track): those a front end may send again."""
    return frozenset(
        m.full_name
        for m in service.methods
        if m.GetOptions().idempotency_level in (MethodOptions.IDEMPOTENT, MethodOptions.NO_SIDE_EFFECTS)
    )


@dataclass(frozen=True, slots=True)
class ClientTls:
    """PEM roots to trust, and optionally a client certificate chain and key (mutual TLS)."""

    root_certificates: bytes
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that checks the server's certificate against the roots and its name,
        speaks HTTP/2 (ALPN h2), and shows the client certificate when there is one."""
        context = ssl.create_default_context(cadata=self.root_certificates.decode("ascii"))
        context.set_alpn_protocols(["h2"])
        if self.certificate_chain is not None:
            # The ssl module loads a key pair from files only: a private directory, gone at once.
            with tempfile.TemporaryDirectory(prefix="backend-tls-") as directory:
                chain, key = Path(directory, "chain.pem"), Path(directory, "key.pem")
                chain.write_bytes(self.certificate_chain)
                key.touch(mode=0o600)
                key.write_bytes(self.private_key or b"")
                context.load_cert_chain(chain, key if self.private_key is not None else None)
        return context


class RemoteBackend:
    """Calls gRPC servers at `target` (`host:port`, or `dns:///name:port` to balance over all
    addresses) through a channel of gateway/rpc/client: the calls run on the event loop, not on
    grpc core's threads."""

    def __init__(
        self,
        target: str,
        service: ServiceDescriptor,
        calls: Sequence[RestCall],
        tls: ClientTls | None = None,
        *,
        tracing: Tracing | None = None,
    ):
        self._target = target
        self._tracing = tracing
        self._channel = Channel(
            target, tls=None if tls is None else tls.context(), max_backoff_s=MAX_RECONNECT_BACKOFF_S
        )
        self._paths = {c.rpc.full_name: _path(c.rpc) for c in calls}
        self._retried = retried_methods(service)

    def call(
        self, call: RestCall, request: Message, metadata: Metadata, timeout_s: float, client: str
    ) -> Coroutine[Any, Any, Message]:
        """With tracing, the call's client span, whose `traceparent` goes with it (every attempt)."""
        if self._tracing is None:
            return self._call(call, request, metadata, timeout_s, client)
        span = self._tracing.client_call(SERVICE_NAME, call.rpc.name, self._target)
        return span.run(self._call(call, request, (*metadata, *span.metadata()), timeout_s, client), _code_of)

    async def _call(
        self, call: RestCall, request: Message, metadata: Metadata, timeout_s: float, client: str
    ) -> Message:
        """The call, sent again (to the next server) after a transport failure if it is idempotent.
        The client's address goes in `x-forwarded-for`, which the gRPC servers read when they
        trust this front end.

        Only an UNAVAILABLE without the service's own google.rpc.Status is retried: no server
        answered it. An UNAVAILABLE the service answered (STORE_BUSY: it retried until the
        deadline already) is final; sending it again would only turn its 503 into a 504.
        """
        if client:
            metadata = (*metadata, (FORWARDED_FOR, client))
        rpc = call.rpc
        path = self._paths[rpc.full_name]
        payload = request.SerializeToString()
        deadline = time.monotonic() + timeout_s
        attempts_left = RETRY_ATTEMPTS if rpc.full_name in self._retried else 1
        backoff = FIRST_RETRY_BACKOFF_S
        while True:
            attempts_left -= 1
            try:
                answer = await self._channel.unary(path, payload, metadata, deadline - time.monotonic())
                break
            except RpcFailed as failure:
                status = details_from_metadata(failure.trailing_metadata())
                pause = random.uniform(0, backoff)
                no_answer = failure.code == grpc.StatusCode.UNAVAILABLE and status is None
                if not (no_answer and attempts_left and time.monotonic() + pause < deadline):
                    raise error_of(failure.code, status) from None
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, MAX_RETRY_BACKOFF_S)
        try:
            response: Message = call.response_class.FromString(answer)
        except DecodeError:
            raise call_failed(grpc.StatusCode.INTERNAL) from None
        return response

    async def ready(self) -> bool:
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME).SerializeToString()
        try:
            reply = health_pb2.HealthCheckResponse.FromString(
                await self._channel.unary(HEALTH_CHECK, request, (), 1.0)
            )
        except (RpcFailed, DecodeError):
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self._channel.close()


def _code_of(error: BaseException) -> grpc.StatusCode:
    """The status code of a call that raised `error`, for its span."""
    if isinstance(error, OrderError):
        return code_of(error)
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _path(rpc: MethodDescriptor) -> str:
    return f"/{rpc.containing_service.full_name}/{rpc.name}"
