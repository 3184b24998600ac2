"""Floods degrade, never down: the real program (`serve`), started under a descriptor limit and
flooded over loopback with idle connections, slow request heads, HTTP/2 rapid resets and idle or
pinging gRPC connections, while a well-behaved client is still answered.

Each test prints its figures (`pytest -s`): connections held, time to answer, RSS, GOAWAYs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.protos import SERVICE_NAME, orders_service_pb2
from gateway.rpc.stubs import orders_service_grpc
from gateway.testing import basic
from tests.processes import GatewayProcess

EPHEMERAL_PORTS = {"HYPERTRACK_GATEWAY_HTTP_PORT": "0", "HYPERTRACK_GATEWAY_GRPC_PORT": "0"}
DEMO_AUTH = basic("demo", "demo-secret")
COMMON_SOFT_LIMIT = 1024
IDLE_CONNECTIONS = 1100
ANSWER_WITHIN_S = 3.0
CONNECT_TIMEOUT_S = 5.0
GOAWAY = 0x7
PING = 0x6


@pytest.fixture(scope="module", autouse=True)
def _enough_descriptors_here() -> None:
    """This process holds the flood's connections: its own soft limit must allow them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_CONNECTIONS + 1024
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the hard descriptor limit ({hard}) is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextlib.asynccontextmanager
async def serving(
    directory: Path, *flags: str, nofile: tuple[int, int] | None = None
) -> AsyncIterator[GatewayProcess]:
    """`hypertrack-gateway serve` on free ports with the demo data; stopped (SIGTERM) at the end."""
    gateway = await asyncio.to_thread(
        GatewayProcess.start, ["serve", *flags], cwd=directory, env=EPHEMERAL_PORTS, nofile=nofile
    )
    try:
        yield gateway
    finally:
        await asyncio.to_thread(gateway.stop)


def assert_json_logs(gateway: GatewayProcess) -> None:
    """Every line the program wrote on stderr is a JSON log line; none says descriptors ran out."""
    for line in gateway.stderr_lines:
        assert isinstance(json.loads(line), dict), line
        assert "File descriptor limit reached" not in line, line


async def well_behaved_client(gateway: GatewayProcess) -> float:
    """GET /healthz and an authenticated GET /orders/order-3 over a new REST connection, then a
    health check and GetOrder over a new gRPC channel; the seconds all of it took."""
    started = time.monotonic()
    async with asyncio.timeout(ANSWER_WITHIN_S):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.rest_url}/healthz") as response:
                assert response.status == 200
            async with session.get(
                f"{gateway.rest_url}/orders/order-3", headers={"Authorization": DEMO_AUTH}
            ) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["order_handle"] == "order-3"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            order = await orders_service_grpc.OrdersServiceStub(channel).GetOrder(
                orders_service_pb2.GetOrderRequest(order_handle="order-3"),
                metadata=(("authorization", DEMO_AUTH),),
            )
            assert order.order.order_handle == "order-3"
    return time.monotonic() - started


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` TCP connections to `port` that send nothing (those the server never accepts in
    time are given up after CONNECT_TIMEOUT_S)."""

    async def connect() -> asyncio.StreamWriter | None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                return writer
        except (TimeoutError, OSError):
            return None

    opened = await asyncio.gather(*(connect() for _ in range(count)))
    return [writer for writer in opened if writer is not None]


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()


# --- descriptors and the REST connection cap ----------------------------------------------------


@pytest.mark.parametrize("hard", ["hard limit kept", "hard limit 1024"])
async def test_idle_connection_flood_leaves_rest_and_grpc_answering(tmp_path: Path, hard: str) -> None:
    """Under the common soft limit of 1,024 descriptors, 1,100 idle connections to the REST port
    once took REST and gRPC down together. The soft limit is raised to the hard one at start-up;
    where the hard limit is 1,024 too, the REST cap (idle connections closed first) holds."""
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard == "hard limit kept" else 1024
    async with serving(tmp_path, nofile=(COMMON_SOFT_LIMIT, hard_limit)) as gateway:
        idle = await open_idle(gateway.http_port, IDLE_CONNECTIONS)
        try:
            descriptors = gateway.open_descriptors()
            seconds = await well_behaved_client(gateway)
        finally:
            close_all(idle)
        print(
            f"\n{hard}: {len(idle)} of {IDLE_CONNECTIONS} idle connections opened, the server holding"
            f" {descriptors} descriptors; REST and gRPC answered in {seconds * 1000:.0f} ms"
        )
        assert len(idle) == IDLE_CONNECTIONS
        assert descriptors < hard_limit
    assert_json_logs(gateway)
    assert any(json.loads(line).get("message") == "descriptor limit" for line in gateway.stderr_lines)


async def test_at_the_cap_with_no_idle_connection_a_new_one_gets_the_error_body(tmp_path: Path) -> None:
    """Connections busy with a request (here: bodies that are slow to come) are not closed; past
    the cap a new connection is answered 503 with the contract's error body, and closed."""
    async with serving(tmp_path, "--max-connections", "4") as gateway:
        busy = []
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
            writer.write(
                b"POST /orders/order-1/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: " + DEMO_AUTH.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            busy.append(writer)
        await asyncio.sleep(0.2)  # the heads are parsed: the four connections are busy, none idle
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
        async with asyncio.timeout(ANSWER_WITHIN_S):
            answer = await reader.read()  # to the end: the server closes the connection
        close_all([writer, *busy])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert b"Connection: close" in head and b"X-Request-ID: " in head
    error = json.loads(body)
    assert sorted(error) == ["detail", "message"]
    assert error["detail"]["reason"] == "TOO_MANY_CONNECTIONS"


# --- slow request heads and idle keep-alive connections ----------------------------------------


async def closed_after(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from `started` until the server closed the connection (EOF or reset)."""
    async with asyncio.timeout(10):
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
    return time.monotonic() - started


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_slow_heads_and_idle_keepalive_connections_are_closed(tmp_path: Path) -> None:
    header_timeout, keepalive_timeout = 0.5, 1.5
    flags = ("--header-timeout", str(header_timeout), "--keepalive-timeout", str(keepalive_timeout))
    async with serving(tmp_path, *flags) as gateway:
        port = gateway.http_port

        async def silent() -> float:
            reader, _ = await asyncio.open_connection("127.0.0.1", port)
            return await closed_after(reader, time.monotonic())

        async def slowloris() -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")

            async def trickle() -> None:
                with contextlib.suppress(ConnectionError):
                    for _ in range(50):
                        await asyncio.sleep(0.1)  # the attack itself: a header line now and then
                        writer.write(b"X-Slow: 1\r\n")
                        await writer.drain()

            trickling = asyncio.create_task(trickle())
            try:
                return await closed_after(reader, started)
            finally:
                trickling.cancel()

        async def keepalive(then_slow_head: bool) -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
            answered = time.monotonic()
            if then_slow_head:
                await asyncio.sleep(0.2)  # idle a while, then start a head and never finish it
                writer.write(b"GET /healthz HTTP/1.1\r\n")
            return await closed_after(reader, answered)

        times = await asyncio.gather(silent(), slowloris(), keepalive(False), keepalive(True))
        silent_s, slowloris_s, idle_s, slow_after_idle_s = times
        print(
            f"\nclosed after: no bytes {silent_s:.2f} s, trickled head {slowloris_s:.2f} s (header timeout"
            f" {header_timeout} s); idle keep-alive {idle_s:.2f} s (keep-alive timeout {keepalive_timeout} s),"
            f" head started after 0.2 s of keep-alive {slow_after_idle_s:.2f} s"
        )
        assert header_timeout - 0.05 <= silent_s < header_timeout + 1.0
        assert header_timeout - 0.05 <= slowloris_s < header_timeout + 1.0
        assert keepalive_timeout - 0.05 <= idle_s < keepalive_timeout + 1.0
        assert 0.2 + header_timeout - 0.05 <= slow_after_idle_s < keepalive_timeout - 0.3
        assert (await asyncio.wait_for(well_behaved_client(gateway), ANSWER_WITHIN_S)) < ANSWER_WITHIN_S
    assert_json_logs(gateway)


# --- gRPC: rapid reset, connection age and idle, keep-alive enforcement ------------------------


class H2Peer:
    """A raw HTTP/2 client connection (the `h2` state machine over a blocking socket), fed one
    frame at a time so that a GOAWAY is seen even when more frames follow it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self._buffer = b""
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def receive(self, timeout: float | None) -> None:
        """Read what has come (waiting up to `timeout`), and answer it (SETTINGS and PING acks)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            return
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            return
        self._buffer += data
        while len(self._buffer) >= 9 and self.goaway is None:
            length = struct.unpack(">I", b"\0" + self._buffer[:3])[0]
            if len(self._buffer) < 9 + length:
                break
            frame, self._buffer = self._buffer[: 9 + length], self._buffer[9 + length :]
            for event in self.h2.receive_data(frame):
                if isinstance(event, h2.events.ConnectionTerminated):
                    self.goaway = event
        if self.goaway is None:
            self.flush()

    def wait_for_goaway(self, timeout: float) -> float:
        """Seconds until the server sent GOAWAY or closed the connection (at most `timeout`)."""
        started = time.monotonic()
        while self.goaway is None and not self.closed and time.monotonic() - started < timeout:
            self.receive(timeout=0.05)
        return time.monotonic() - started

    def close(self) -> None:
        self.sock.close()


@dataclass
class RapidReset:
    streams: int = 0
    connections: list[tuple[int, float, str]] = field(default_factory=list)
    """Per connection: streams sent on it, seconds it lasted, how it ended."""


def rapid_reset(port: int, seconds: float, stop: threading.Event) -> RapidReset:
    """HEADERS + RST_STREAM(CANCEL) on one connection as fast as the socket takes them, for
    `seconds`; when the server ends the connection, the attacker opens the next one."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", f"/{SERVICE_NAME}/GetOrder"),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    result = RapidReset()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        peer = H2Peer(port)
        opened, sent, ended = time.monotonic(), 0, "attack over"
        try:
            while time.monotonic() < deadline and not stop.is_set():
                for _ in range(100):
                    stream_id = peer.h2.get_next_available_stream_id()
                    peer.h2.send_headers(stream_id, headers)
                    peer.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                sent += 100
                peer.flush()
                peer.receive(timeout=0)
                if peer.goaway is not None:
                    ended = f"GOAWAY {h2.errors.ErrorCodes(peer.goaway.error_code).name}"
                    break
                if peer.closed:
                    ended = "closed"
                    break
        except (ConnectionError, h2.exceptions.ProtocolError) as error:
            ended = type(error).__name__
        finally:
            peer.close()
        result.streams += sent
        result.connections.append((sent, time.monotonic() - opened, ended))
    return result


async def test_rapid_reset_is_bounded_and_a_normal_client_is_answered(tmp_path: Path) -> None:
    max_age_s, attack_s = 2.0, 8.0
    async with serving(tmp_path, "--grpc-max-connection-age", str(max_age_s)) as gateway:
        await well_behaved_client(gateway)
        rss_before = gateway.rss_mb()
        stop = threading.Event()
        attack = asyncio.create_task(asyncio.to_thread(rapid_reset, gateway.grpc_port, attack_s, stop))
        probes: list[float] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                while not attack.done():
                    started = time.monotonic()
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=ANSWER_WITHIN_S)
                    probes.append(time.monotonic() - started)
                    await asyncio.sleep(0.05)  # a probe every 50 ms, beside the attack
        finally:
            stop.set()
            result = await attack
        rss_after = gateway.rss_mb()
        ended = [f"{sent} streams in {lasted:.1f} s, {how}" for sent, lasted, how in result.connections]
        print(
            f"\nrapid reset: {result.streams} HEADERS+RST_STREAM in {attack_s:.0f} s over"
            f" {len(result.connections)} connections ({'; '.join(ended)}); RSS {rss_before:.0f} ->"
            f" {rss_after:.0f} MiB; {len(probes)} health checks meanwhile, slowest"
            f" {max(probes) * 1000:.0f} ms"
        )
        assert result.streams >= 20_000
        # Every connection but the one the attack itself ended was ended by the server at its age.
        for _, lasted, how in result.connections[:-1]:
            assert how.startswith("GOAWAY") or how == "closed", how
            assert lasted < max_age_s * 1.2 + 1.0
        assert rss_after - rss_before < 30
        assert len(probes) >= 20 and max(probes) < 1.0
        assert (await well_behaved_client(gateway)) < ANSWER_WITHIN_S
    assert_json_logs(gateway)


async def test_an_idle_grpc_connection_is_sent_goaway(tmp_path: Path) -> None:
    idle_s = 1.0
    async with serving(tmp_path, "--grpc-max-connection-idle", str(idle_s)) as gateway:
        peer = H2Peer(gateway.grpc_port)
        try:
            waited = await asyncio.to_thread(peer.wait_for_goaway, 10.0)
        finally:
            peer.close()
        print(f"\nidle gRPC connection: GOAWAY after {waited:.2f} s (max idle {idle_s} s)")
        assert peer.goaway is not None
        assert peer.goaway.additional_data == b"connection idle"
        assert idle_s * 0.8 <= waited < idle_s * 1.2 + 1.0
    assert_json_logs(gateway)


async def test_a_client_pinging_without_calls_is_sent_goaway(tmp_path: Path) -> None:
    async with serving(tmp_path) as gateway:
        peer = H2Peer(gateway.grpc_port)
        try:
            for _ in range(5):
                peer.h2.ping(b"12345678")
            peer.flush()
            waited = await asyncio.to_thread(peer.wait_for_goaway, 5.0)
        finally:
            peer.close()
        print(f"\nfive pings without calls: GOAWAY after {waited:.2f} s: {peer.goaway}")
        assert peer.goaway is not None
        assert peer.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert peer.goaway.additional_data == b"too_many_pings"
        assert (await well_behaved_client(gateway)) < ANSWER_WITHIN_S
    assert_json_logs(gateway)
