"""A channel: unary calls to the gRPC servers a target names, balanced round-robin.

As grpc's `round_robin` policy does: every address the target resolves to has a connection of its
own (a subchannel), each call goes to the next ready one, and each subchannel reconnects by itself
when its connection ends, after a back-off when the attempt fails (INITIAL_BACKOFF_S growing by
BACKOFF_MULTIPLIER up to the channel's maximum, with BACKOFF_JITTER either way).

A call waits for a connection only while the channel has not failed yet (the first attempts are in
progress); once every subchannel has failed since one was last ready, a call fails at once,
UNAVAILABLE, until one is ready again (grpc's "sticky" TRANSIENT_FAILURE). A call no server
processed (a refused stream, a stream past a GOAWAY, a connection lost before the call was
written) is sent again at once, whatever its method: that is grpc's transparent retry.

The channel starts connecting when it is made (at its first call, if made outside an event loop),
so that the first call finds a connection ready. A name is resolved again when a connection ends
or an attempt fails, at most every MIN_RESOLUTION_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import random
import re
import ssl
from collections.abc import Sequence

import grpc

from gateway.rpc.client import hpack
from gateway.rpc.client.connection import Http2Connection
from gateway.rpc.client.failures import RpcFailed, unavailable
from gateway.rpc.client.resolver import Address, ResolutionError, Target, parse_target, resolve

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 1.0
BACKOFF_MULTIPLIER = 1.6
BACKOFF_JITTER = 0.2
CONNECT_TIMEOUT_S = 20.0
"""Longest wait for a connection (TCP, TLS, the server's SETTINGS) before the attempt counts as failed."""
MIN_RESOLUTION_INTERVAL_S = 30.0
TRANSPARENT_RETRIES = 5
"""Times a call no server processed is sent again before it fails UNAVAILABLE."""

Metadata = Sequence[tuple[str, str]]
_KEY = re.compile(r"[0-9a-z_.\-]+\Z")


class Channel:
    """Unary calls to `target` (see gateway/rpc/client/resolver.py), over TLS with `tls`."""

    def __init__(
        self, target: str, *, tls: ssl.SSLContext | None = None, max_backoff_s: float = 120.0
    ) -> None:
        self._target: Target = parse_target(target)
        self._tls = tls
        self._max_backoff_s = max_backoff_s
        self._scheme = "https" if tls is not None else "http"
        self._subchannels: dict[Address, _Subchannel] = {}
        self._ready: list[Http2Connection] = []
        self._turn = 0
        self._changed: asyncio.Event | None = None
        self._started = False
        self._closed = False
        self._resolving: asyncio.Task[None] | None = None
        self._resolved_at = -math.inf
        self._resolution_failed = False
        self._prefixes: dict[str, bytes] = {}
        self._names: dict[str, bytes] = {}
        with contextlib.suppress(RuntimeError):  # made outside a loop: connects at its first call
            asyncio.get_running_loop()
            self._start()

    async def unary(self, method: str, request: bytes, metadata: Metadata, timeout_s: float) -> bytes:
        """The response message of a call of `method` (`/package.Service/Method`); raises
        RpcFailed. `timeout_s` is in seconds from now."""
        loop = asyncio.get_running_loop()
        if timeout_s <= 0:
            raise RpcFailed(grpc.StatusCode.DEADLINE_EXCEEDED)
        deadline = loop.time() + timeout_s
        headers = self._prefix(method) + _metadata_block(metadata, self._names)
        message = b"\x00" + len(request).to_bytes(4, "big") + request
        retries = TRANSPARENT_RETRIES
        while True:
            connection = self._pick() or await self._wait_for_connection(deadline)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RpcFailed(grpc.StatusCode.DEADLINE_EXCEEDED)
            try:
                return await connection.unary(headers + _timeout_field(remaining), message, deadline)
            except RpcFailed as failed:
                if not (failed.unprocessed and retries) or self._closed:
                    raise
                retries -= 1

    async def close(self) -> None:
        """Stop reconnecting and close every connection: calls in flight fail CANCELLED."""
        self._closed = True
        if self._resolving is not None:
            self._resolving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resolving
        for subchannel in list(self._subchannels.values()):
            await subchannel.close()
        self._subchannels.clear()
        self._notify()  # calls waiting for a connection hear that none will come

    # -- picking --------------------------------------------------------------------------------

    def _pick(self) -> Http2Connection | None:
        ready = self._ready
        while ready:
            self._turn += 1
            connection = ready[self._turn % len(ready)]
            if connection.accepting:
                return connection
            ready.remove(connection)  # it stopped taking calls since the list was made
        if not self._started:
            self._start()
        return None

    async def _wait_for_connection(self, deadline: float) -> Http2Connection:
        """A ready connection, waiting for one while the channel has not failed; raises RpcFailed."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise RpcFailed(grpc.StatusCode.CANCELLED)  # as grpc's calls on a closed channel
            if self._failing():
                raise unavailable()
            changed = self._changed
            assert changed is not None  # made by _start, which _pick has run
            try:
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
            except TimeoutError:
                raise RpcFailed(grpc.StatusCode.DEADLINE_EXCEEDED) from None
            connection = self._pick()
            if connection is not None:
                return connection
            if loop.time() >= deadline:
                raise RpcFailed(grpc.StatusCode.DEADLINE_EXCEEDED)

    def _failing(self) -> bool:
        """Whether every subchannel has failed since one was last ready (or the name gave nothing)."""
        if self._ready:
            return False
        if not self._subchannels:
            return self._resolution_failed
        return all(s.failed for s in self._subchannels.values())

    # -- subchannels ----------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        self._changed = asyncio.Event()
        self._resolving = asyncio.get_running_loop().create_task(self._resolve())

    async def _resolve(self) -> None:
        """Resolve the name, and keep one subchannel per address."""
        backoff = min(INITIAL_BACKOFF_S, self._max_backoff_s)
        while not self._closed:
            self._resolved_at = asyncio.get_running_loop().time()
            try:
                addresses = await resolve(self._target)
            except ResolutionError as error:
                log.warning("gRPC backend %s: %s", self._target.authority, error)
                self._resolution_failed = True
                self._notify()
                await asyncio.sleep(_jittered(backoff))
                backoff = min(backoff * BACKOFF_MULTIPLIER, self._max_backoff_s)
                continue
            self._resolution_failed = False
            self._update(addresses)
            return

    def _update(self, addresses: list[Address]) -> None:
        for address in addresses:
            if address not in self._subchannels:
                subchannel = _Subchannel(self, address)
                self._subchannels[address] = subchannel
                subchannel.start()
        for address in [a for a in self._subchannels if a not in addresses]:
            gone = self._subchannels.pop(address)
            asyncio.get_running_loop().create_task(gone.close(drain=True))
        self._notify()

    def _resolve_again(self) -> None:
        """A connection ended or an attempt failed: the name may say something new."""
        if not self._target.resolves or self._closed:
            return
        if self._resolving is not None and not self._resolving.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._resolved_at < MIN_RESOLUTION_INTERVAL_S:
            return
        self._resolving = loop.create_task(self._resolve())

    def _notify(self) -> None:
        """Something changed: the ready list is made again, and waiting calls look again."""
        self._ready = [
            s.connection
            for s in self._subchannels.values()
            if s.connection is not None and s.connection.accepting
        ]
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _prefix(self, method: str) -> bytes:
        """The fields every call of `method` begins with."""
        prefix = self._prefixes.get(method)
        if prefix is None:
            prefix = self._prefixes[method] = (
                hpack.indexed(":method", "POST")
                + hpack.indexed(":scheme", self._scheme)
                + hpack.literal(":path", method)
                + hpack.literal(":authority", self._target.authority)
                + hpack.literal("te", "trailers")
                + hpack.literal("content-type", "application/grpc")
            )
        return prefix

    # -- connecting -----------------------------------------------------------------------------

    async def connect(self, address: Address) -> Http2Connection:
        """A new connection to `address`, once the server's SETTINGS has come; raises OSError,
        ssl.SSLError, ConnectionError or TimeoutError."""
        loop = asyncio.get_running_loop()
        host, port = address
        connection: Http2Connection | None = None

        def made() -> Http2Connection:
            nonlocal connection
            connection = Http2Connection()
            return connection

        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await loop.create_connection(
                    made,
                    host,
                    port,
                    ssl=self._tls,
                    server_hostname=self._target.server_name if self._tls is not None else None,
                )
                assert connection is not None
                await connection.ready
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        return connection

    @property
    def max_backoff_s(self) -> float:
        return self._max_backoff_s


class _Subchannel:
    """The connection to one address, made again whenever it ends."""

    def __init__(self, channel: Channel, address: Address) -> None:
        self._channel = channel
        self.address = address
        self.connection: Http2Connection | None = None
        self.failed = False  # the last attempt failed, and none has succeeded since
        self._task: asyncio.Task[None] | None = None
        self._draining: list[Http2Connection] = []

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        channel = self._channel
        backoff = first_backoff = min(INITIAL_BACKOFF_S, channel.max_backoff_s)
        while True:
            try:
                connection = await channel.connect(self.address)
            except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as error:
                log.debug("gRPC backend %s: connection failed: %s", self.address, error)
                self.failed = True
                channel._notify()
                channel._resolve_again()
                await asyncio.sleep(_jittered(backoff))
                backoff = min(backoff * BACKOFF_MULTIPLIER, channel.max_backoff_s)
                continue
            backoff = first_backoff
            self.failed = False
            self.connection = connection
            channel._notify()
            await connection.ended
            # It takes no more calls (GOAWAY, or lost): those in flight finish on it, a new one
            # takes the next calls at once.
            self.connection = None
            self._draining = [c for c in (*self._draining, connection) if c.active]
            channel._notify()
            channel._resolve_again()

    async def close(self, *, drain: bool = False) -> None:
        """Stop; close the connection at once, or (`drain`) once its calls are done."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for connection in (*self._draining, *((self.connection,) if self.connection else ())):
            if drain:
                connection.drain()
            else:
                connection.close()
        self.connection = None


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)


def _metadata_block(metadata: Metadata, names: dict[str, bytes]) -> bytes:
    """The call's metadata as header fields; raises RpcFailed(INTERNAL) on a key or value gRPC
    does not allow (as grpc does), so nothing malformed reaches the server. `names` keeps the
    encoded names of the keys seen (a few: a front end sends the same ones with every call)."""
    out = []
    for key, value in metadata:
        name = names.get(key)
        if name is None:
            if not _KEY.match(key):
                raise RpcFailed(grpc.StatusCode.INTERNAL)
            name = hpack.name_of(key)
            if len(names) < _MAX_NAMES:
                names[key] = name
        if key.endswith("-bin"):
            value = base64.b64encode(value.encode()).decode().rstrip("=")  # noqa: PLW2901
        elif not (value.isascii() and value.isprintable()):
            raise RpcFailed(grpc.StatusCode.INTERNAL)
        data = value.encode("ascii")
        out.append(name + hpack.integer(len(data), 7) + data)
    return b"".join(out)


_MAX_NAMES = 64
_TIMEOUT_NAME = hpack.name_of("grpc-timeout")


def _timeout_field(seconds: float) -> bytes:
    """`grpc-timeout` in milliseconds (rounded up; at most 8 digits: past that, in seconds)."""
    milliseconds = math.ceil(seconds * 1000)
    value = f"{milliseconds}m" if milliseconds < 10**8 else f"{min(math.ceil(seconds), 10**8 - 1)}S"
    return _TIMEOUT_NAME + bytes((len(value),)) + value.encode()
