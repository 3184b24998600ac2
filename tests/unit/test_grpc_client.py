"""The gRPC client of the REST front end (gateway/rpc/client), against real grpc.aio servers over
real sockets, and against a scripted HTTP/2 server for what grpc does not do on request (refused
streams, GOAWAY mid-call, CONTINUATION, padding, pings, answers that are not gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import hpack as reference
import pytest

from gateway.rpc.client import frames
from gateway.rpc.client.channel import Channel
from gateway.rpc.client.failures import RpcFailed
from gateway.rpc.client.resolver import ResolutionError, Target, parse_target, resolve
from tests.scaleout.dns import dns_server

METHOD = "/test.Echo/Call"
Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


# -- real grpc.aio servers ----------------------------------------------------------------------


@dataclass
class Server:
    port: int
    calls: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    peers: set[str] = field(default_factory=set)
    in_flight: int = 0
    most_in_flight: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def grpc_server(
    handler: Handler | None = None, *, port: int = 0, options: tuple[tuple[str, Any], ...] = ()
) -> AsyncIterator[Server]:
    """A grpc.aio server of one method that hands the raw request bytes to `handler` (default: echo)."""
    server = grpc.aio.server(options=options)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    state = Server(bound)

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = {
            key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
        }
        state.calls.append((request, metadata))
        state.peers.add(context.peer())
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            return request if handler is None else await handler(request, context)
        except asyncio.CancelledError:
            state.cancelled.set()
            raise
        finally:
            state.in_flight -= 1

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
            ),
        )
    )
    await server.start()
    try:
        yield state
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def channel_to(target: str, **options: Any) -> AsyncIterator[Channel]:
    channel = Channel(target, **options)
    try:
        yield channel
    finally:
        await channel.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_call_returns_the_message_and_carries_its_metadata() -> None:
    async with grpc_server() as server, channel_to(f"127.0.0.1:{server.port}") as channel:
        metadata = (
            ("authorization", "Basic ZGVtbzpz"),
            ("x-request-id", "r-1"),
            ("x-forwarded-for", "10.0.0.1"),
        )
        assert await channel.unary(METHOD, b"hello", metadata, 5.0) == b"hello"
        assert await channel.unary(METHOD, b"", (), 5.0) == b""
    (request, seen), _ = server.calls
    assert request == b"hello"
    assert {k: seen[k] for k in ("authorization", "x-request-id", "x-forwarded-for")} == dict(metadata)


async def test_an_error_carries_its_code_and_the_servers_details() -> None:
    details = b"\x08\x05\x12\x09not found"  # any bytes: the client hands them on as they came

    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(
            grpc.StatusCode.NOT_FOUND, "no such order", (("grpc-status-details-bin", details),)
        )
        raise AssertionError("abort returns no more")

    async with grpc_server(fail) as server, channel_to(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(RpcFailed) as failed:
            await channel.unary(METHOD, b"x", (), 5.0)
    assert failed.value.code == grpc.StatusCode.NOT_FOUND
    assert failed.value.details == details
    assert failed.value.trailing_metadata() == (("grpc-status-details-bin", details),)
    assert not failed.value.unprocessed


async def test_a_deadline_fails_the_call_and_cancels_it_on_the_server() -> None:
    async def stall(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.Event().wait()
        return b""

    async with grpc_server(stall) as server, channel_to(f"127.0.0.1:{server.port}") as channel:
        started = time.monotonic()
        with pytest.raises(RpcFailed) as failed:
            await channel.unary(METHOD, b"x", (), 0.2)
        assert failed.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.0
        await asyncio.wait_for(server.cancelled.wait(), 5)
        with pytest.raises(RpcFailed) as at_once:
            await channel.unary(METHOD, b"x", (), 0)
        assert at_once.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_caller_that_gives_up_cancels_the_call_on_the_server() -> None:
    entered = asyncio.Event()

    async def stall(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"x":
            entered.set()
            await asyncio.Event().wait()
        return request

    async with grpc_server(stall) as server, channel_to(f"127.0.0.1:{server.port}") as channel:
        call = asyncio.ensure_future(channel.unary(METHOD, b"x", (), 30.0))
        await asyncio.wait_for(entered.wait(), 5)
        call.cancel()
        await asyncio.wait_for(server.cancelled.wait(), 5)
        assert await channel.unary(METHOD, b"after", (), 5.0) == b"after"  # the connection goes on


async def test_messages_larger_than_the_windows_go_both_ways() -> None:
    async def double(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request * 8

    big = bytes(range(256)) * 1200  # 300 KiB: past the 64 KiB windows the server starts with
    async with grpc_server(double) as server, channel_to(f"127.0.0.1:{server.port}") as channel:
        results = await asyncio.gather(*(channel.unary(METHOD, big, (), 10.0) for _ in range(3)))
    assert results == [big * 8] * 3


async def test_a_response_over_the_limit_is_resource_exhausted_and_the_channel_goes_on() -> None:
    async def huge(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"x" * (5 * 1024 * 1024) if request == b"huge" else request

    async with (
        grpc_server(huge, options=(("grpc.max_send_message_length", 8 * 1024 * 1024),)) as server,
        channel_to(f"127.0.0.1:{server.port}") as channel,
    ):
        with pytest.raises(RpcFailed) as failed:
            await channel.unary(METHOD, b"huge", (), 10.0)
        assert failed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await channel.unary(METHOD, b"small", (), 5.0) == b"small"


async def test_calls_past_the_servers_concurrent_streams_wait_their_turn() -> None:
    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0.02)
        return request

    async with (
        grpc_server(slow, options=(("grpc.max_concurrent_streams", 2),)) as server,
        channel_to(f"127.0.0.1:{server.port}") as channel,
    ):
        replies = await asyncio.gather(*(channel.unary(METHOD, b"%d" % n, (), 10.0) for n in range(20)))
    assert replies == [b"%d" % n for n in range(20)]
    assert server.most_in_flight == 2


async def test_calls_go_round_robin_over_every_address() -> None:
    async with (
        grpc_server() as first,
        grpc_server() as second,
        channel_to(f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}") as channel,
    ):
        for _ in range(3):  # until both connections are ready, calls may all go to one
            await asyncio.gather(*(channel.unary(METHOD, b"x", (), 5.0) for _ in range(10)))
        first.calls.clear()
        second.calls.clear()
        for _ in range(20):
            await channel.unary(METHOD, b"x", (), 5.0)
    assert len(first.calls) == len(second.calls) == 10


async def test_a_server_down_fails_calls_at_once_and_the_channel_reconnects_by_itself() -> None:
    port = free_port()
    async with channel_to(f"127.0.0.1:{port}", max_backoff_s=0.2) as channel:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(RpcFailed) as failed:
                await channel.unary(METHOD, b"x", (), 10.0)
            assert failed.value.code == grpc.StatusCode.UNAVAILABLE
            assert failed.value.details is None
            assert time.monotonic() - started < 1.0
        async with grpc_server(port=port):
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert await channel.unary(METHOD, b"back", (), 5.0) == b"back"
                    break
                except RpcFailed:
                    assert time.monotonic() < deadline, "the channel did not reconnect"
                    await asyncio.sleep(0.05)
        with pytest.raises(RpcFailed) as after:  # stopped again: its connection ended
            await channel.unary(METHOD, b"x", (), 10.0)
        assert after.value.code == grpc.StatusCode.UNAVAILABLE


async def test_connections_past_their_maximum_age_are_replaced_without_failing_a_call() -> None:
    options = (("grpc.max_connection_age_ms", 150), ("grpc.max_connection_age_grace_ms", 5000))
    async with grpc_server(options=options) as server, channel_to(f"127.0.0.1:{server.port}") as channel:
        until = time.monotonic() + 1.2
        while time.monotonic() < until:
            assert (
                await asyncio.gather(*(channel.unary(METHOD, b"x", (), 5.0) for _ in range(4))) == [b"x"] * 4
            )
    assert len(server.peers) >= 3  # GOAWAY after GOAWAY, each time a new connection


async def test_metadata_gRPC_does_not_allow_fails_before_anything_is_sent() -> None:
    async with grpc_server() as server, channel_to(f"127.0.0.1:{server.port}") as channel:
        for metadata in ((("x-id", "a\nb"),), (("X-Upper", "a"),), ((":path", "/x"),), (("x-id", "é"),)):
            with pytest.raises(RpcFailed) as failed:
                await channel.unary(METHOD, b"x", metadata, 5.0)
            assert failed.value.code == grpc.StatusCode.INTERNAL
    assert server.calls == []


# -- a scripted HTTP/2 server -------------------------------------------------------------------


Script = Callable[["Peer", int, dict[str, str], bytes], Awaitable[None]]


class Peer:
    """One connection of the scripted server: it reads frames, answers SETTINGS and PING, and hands
    each complete request (headers decoded with the reference decoder, body) to the script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, script: Script) -> None:
        self.reader, self.writer, self.script = reader, writer, script
        self.decoder = reference.Decoder()
        self.encoder = reference.Encoder()
        self.pings_answered: list[bytes] = []
        self.ping_answered = asyncio.Event()
        self.streams: list[int] = []

    def send(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        self.writer.write(frames.frame(kind, flags, stream_id, payload))

    def headers(self, stream_id: int, headers: list[tuple[str, str]], *, end: bool = False) -> None:
        flags = frames.END_HEADERS | (frames.END_STREAM if end else 0)
        self.send(frames.HEADERS, flags, stream_id, self.encoder.encode(headers))

    def ok(self, stream_id: int, message: bytes) -> None:
        self.headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
        self.send(frames.DATA, 0, stream_id, b"\x00" + len(message).to_bytes(4, "big") + message)
        self.headers(stream_id, [("grpc-status", "0")], end=True)

    async def run(self) -> None:
        assert await self.reader.readexactly(len(frames.PREFACE)) == frames.PREFACE
        self.send(frames.SETTINGS, 0, 0)
        requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        while True:
            head = await self.reader.readexactly(frames.HEADER_BYTES)
            length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
            stream_id = int.from_bytes(head[5:], "big")
            payload = await self.reader.readexactly(length)
            if kind == frames.SETTINGS and not flags & frames.ACK:
                self.send(frames.SETTINGS, frames.ACK, 0)
            elif kind == frames.PING and flags & frames.ACK:
                self.pings_answered.append(payload)
                self.ping_answered.set()
            elif kind == frames.HEADERS:
                fields = self.decoder.decode(payload)
                requests[stream_id] = ({str(k): str(v) for k, v in fields}, bytearray())
                self.streams.append(stream_id)
            elif kind == frames.DATA:
                requests[stream_id][1].extend(payload)
                if flags & frames.END_STREAM:
                    headers, body = requests.pop(stream_id)
                    await self.script(self, stream_id, headers, bytes(body[5:]))
            await self.writer.drain()


@contextlib.asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[tuple[int, list[Peer]]]:
    peers: list[Peer] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer, script)
        peers.append(peer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await peer.run()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()


async def test_pings_are_answered_and_split_padded_frames_are_read() -> None:
    async def answer(peer: Peer, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        peer.send(frames.PING, 0, 0, b"12345678")
        block = peer.encoder.encode(
            [(":status", "200"), ("content-type", "application/grpc"), ("x-long", "y" * 300)]
        )
        peer.send(frames.HEADERS, frames.PADDED, stream_id, b"\x03" + block[:10] + b"\x00" * 3)
        peer.send(frames.CONTINUATION, 0, stream_id, block[10:20])
        peer.send(frames.CONTINUATION, frames.END_HEADERS, stream_id, block[20:])
        message = b"\x00" + len(body).to_bytes(4, "big") + body
        peer.send(frames.DATA, frames.PADDED, stream_id, b"\x02" + message[:3] + b"\x00\x00")
        peer.send(frames.DATA, 0, stream_id, message[3:])
        peer.headers(stream_id, [("grpc-status", "0")], end=True)

    async with scripted_server(answer) as (port, peers), channel_to(f"127.0.0.1:{port}") as channel:
        assert await channel.unary(METHOD, b"padded", (), 5.0) == b"padded"
        assert await channel.unary(METHOD, b"again", (), 5.0) == b"again"
        async with asyncio.timeout(5):  # the second answer may still be on its way
            while len(peers[0].pings_answered) < 2:
                peers[0].ping_answered.clear()
                await peers[0].ping_answered.wait()
    assert peers[0].pings_answered == [b"12345678", b"12345678"]


async def test_a_refused_stream_is_sent_again() -> None:
    async def refuse_first(peer: Peer, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        if len(peer.streams) == 1:
            peer.send(frames.RST_STREAM, 0, stream_id, frames.REFUSED_STREAM.to_bytes(4, "big"))
        else:
            peer.ok(stream_id, body)

    async with scripted_server(refuse_first) as (port, peers), channel_to(f"127.0.0.1:{port}") as channel:
        assert await channel.unary(METHOD, b"x", (), 5.0) == b"x"
    assert peers[0].streams == [1, 3]


async def test_streams_past_a_goaway_go_to_a_new_connection() -> None:
    async def goaway_first(peer: Peer, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        if len(peers) == 1:
            peer.send(frames.GOAWAY, 0, 0, (0).to_bytes(4, "big") + frames.NO_ERROR.to_bytes(4, "big"))
        else:
            peer.ok(stream_id, body)

    async with scripted_server(goaway_first) as (port, peers), channel_to(f"127.0.0.1:{port}") as channel:
        assert await channel.unary(METHOD, b"x", (), 5.0) == b"x"
    assert len(peers) == 2


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (
            [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "7")],
            "PERMISSION_DENIED",
        ),
        ([(":status", "503"), ("content-type", "text/plain")], "UNAVAILABLE"),
        ([(":status", "404")], "UNIMPLEMENTED"),
        ([(":status", "200"), ("content-type", "application/grpc")], "UNKNOWN"),
        ([(":status", "200"), ("grpc-status", "99")], "UNKNOWN"),
    ],
)
async def test_answers_without_a_message_fail_with_the_code_they_mean(
    answer: list[tuple[str, str]], code: str
) -> None:
    async def trailers_only(peer: Peer, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        peer.headers(stream_id, answer, end=True)

    async with scripted_server(trailers_only) as (port, _), channel_to(f"127.0.0.1:{port}") as channel:
        with pytest.raises(RpcFailed) as failed:
            await channel.unary(METHOD, b"x", (), 5.0)
    assert failed.value.code.name == code


async def test_a_peer_that_speaks_no_http2_fails_calls_at_once_and_is_tried_again() -> None:
    attempts: list[float] = []

    def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.transport.abort()

    listener = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with channel_to(f"127.0.0.1:{port}", max_backoff_s=0.1) as channel:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                with pytest.raises(RpcFailed) as failed:
                    await channel.unary(METHOD, b"x", (), 10.0)
                assert failed.value.code == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.05)
    finally:
        listener.close()
    assert len(attempts) >= 4


# -- targets and names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("127.0.0.1:50051", Target("127.0.0.1:50051", "127.0.0.1", 50051, fixed=(("127.0.0.1", 50051),))),
        ("localhost:50051", Target("localhost:50051", "localhost", 50051)),
        ("[::1]:50051", Target("[::1]:50051", "::1", 50051, fixed=(("::1", 50051),))),
        ("dns:///orders:50051", Target("orders:50051", "orders", 50051)),
        ("dns:orders:50051", Target("orders:50051", "orders", 50051)),
        (
            "dns://10.0.0.2:5353/orders.internal:50051",
            Target("orders.internal:50051", "orders.internal", 50051, ("10.0.0.2", 5353)),
        ),
        ("dns://10.0.0.2/orders:1", Target("orders:1", "orders", 1, ("10.0.0.2", 53))),
        (
            "ipv4:127.0.0.1:1,127.0.0.2:2",
            Target("127.0.0.1:1", "127.0.0.1", 1, fixed=(("127.0.0.1", 1), ("127.0.0.2", 2))),
        ),
        ("ipv6:[::1]:7", Target("[::1]:7", "::1", 7, fixed=(("::1", 7),))),
    ],
)
def test_targets_parse_as_grpc_names_them(text: str, target: Target) -> None:
    assert parse_target(text) == target


async def test_a_dns_server_named_in_the_target_is_asked_for_the_addresses() -> None:
    with dns_server({"orders.test": ["127.0.0.2", "127.0.0.3"]}) as dns:
        found = await resolve(parse_target(f"dns://{dns.authority}/orders.test:50051"))
        assert found == [("127.0.0.2", 50051), ("127.0.0.3", 50051)]
        with pytest.raises(ResolutionError):
            await resolve(parse_target(f"dns://{dns.authority}/nobody.test:50051"))
    assert dns.queries[("orders.test", "A")] == 1


async def test_the_systems_resolver_gives_every_address() -> None:
    assert ("127.0.0.1", 50051) in await resolve(parse_target("localhost:50051"))


async def test_closing_the_channel_ends_the_calls_waiting_for_a_connection() -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()  # takes the connection, never says a word: the channel stays connecting
        await reader.read()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        channel = Channel(f"127.0.0.1:{listener.sockets[0].getsockname()[1]}")
        waiting = asyncio.ensure_future(channel.unary(METHOD, b"x", (), 30.0))
        await asyncio.wait_for(accepted.wait(), 5)
        await channel.close()
        with pytest.raises(RpcFailed) as failed:
            await asyncio.wait_for(waiting, 5)
        assert failed.value.code == grpc.StatusCode.CANCELLED
    finally:
        listener.close()
