"""One HTTP/2 connection to a gRPC server, carrying unary calls as streams (RFC 9113, gRPC's
PROTOCOL-HTTP2.md), as an asyncio protocol on the event loop's own socket.

Why not grpc.aio: its calls pass through grpc core's own threads (its poller hands each completion
to the event loop over a socket pair), and a REST front end spent two thirds of its CPU in them.
Here a call is a stream on the loop's thread: its frames are queued and the queue is written once
per turn of the loop, so the calls that start in one turn share one write.

What a unary client needs of HTTP/2, and no more: the preface and SETTINGS (server push off; a
receive window as large as the largest message, so no stream needs a WINDOW_UPDATE), the server's
settings honoured (concurrent streams: calls past them wait their turn; initial window and frame
size for what is sent), flow control both ways, PING answered, GOAWAY (no new streams; those past
its last stream id were never processed and may go elsewhere), RST_STREAM, CONTINUATION. A
connection is ready once the server's first SETTINGS has come, so a peer that accepts and drops
connections (or speaks no HTTP/2) is never taken for a server.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import grpc

from gateway.rpc.client import frames
from gateway.rpc.client.failures import (
    RpcFailed,
    code_of,
    code_of_http_status,
    details_of,
    reset,
    unavailable,
)
from gateway.rpc.client.hpack import HeaderDecoder, Headers, HpackError
from gateway.rpc.status import DETAILS_KEY

MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024
"""A response larger than this fails RESOURCE_EXHAUSTED, grpc's default limit."""
MAX_HEADER_LIST_BYTES = 16 * 1024
"""Metadata a response may carry (names, values, 32 bytes an entry), grpc's hard limit."""
MAX_HEADER_BLOCK_BYTES = 64 * 1024
"""A header block still growing past this (CONTINUATION after CONTINUATION) ends the connection."""
# Each stream may receive a whole message; the connection's window is topped up once half is used.
STREAM_WINDOW = MAX_RECEIVE_MESSAGE_BYTES + 64 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
_MESSAGE_PREFIX = 5  # compressed flag, then the length as 4 bytes


class _Stream:
    """A call on this connection: the request it still has to send, what it has received."""

    __slots__ = (
        "block",
        "data",
        "future",
        "headers",
        "id",
        "pending",
        "received",
        "send_window",
        "sent",
        "timer",
    )

    def __init__(self, block: bytes, data: bytes, future: asyncio.Future[bytes]) -> None:
        self.id = 0
        self.block = block
        self.pending = data  # request bytes not yet sent (flow control)
        self.future = future
        self.headers: Headers | None = None
        self.received = bytearray()
        self.send_window = 0
        self.sent = False  # its HEADERS reached the socket: the server may have processed it
        self.timer: asyncio.TimerHandle | None = None


class Http2Connection(asyncio.Protocol):
    """Unary calls over one connection. `ready` resolves when the server's first SETTINGS arrives
    (fails if the connection ends first); `ended` when the connection takes no more new calls
    (GOAWAY, or lost)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.ended: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._decoder = HeaderDecoder()
        self._buffer = b""
        self._continuing: tuple[int, int, bytearray] | None = None  # stream, flags, block so far
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._unsent: list[_Stream] = []  # streams whose HEADERS wait in _out
        self._streams: dict[int, _Stream] = {}
        self._waiting: deque[_Stream] = deque()  # past the server's MAX_CONCURRENT_STREAMS
        self._blocked: deque[_Stream] = deque()  # with request bytes the send windows do not allow yet
        self._next_id = 1
        self._max_streams = 2**31  # until the server says otherwise
        self._peer_window = frames.DEFAULT_WINDOW  # the server's initial window for each stream
        self._max_frame = frames.DEFAULT_MAX_FRAME_SIZE
        self._send_window = frames.DEFAULT_WINDOW  # the connection's
        self._unacknowledged = 0  # bytes received on the connection since its window was topped up
        self._draining = False
        self._closed = False

    # -- what the channel asks ------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether a new call may be started here."""
        return self.ready.done() and not self._draining and not self._closed

    @property
    def active(self) -> int:
        return len(self._streams) + len(self._waiting)

    def unary(self, block: bytes, message: bytes, deadline: float) -> asyncio.Future[bytes]:
        """Send a call (its header block, its length-prefixed message); the future resolves to the
        response message or fails with RpcFailed. `deadline` is on the loop's clock. Cancelling
        the future resets the stream."""
        future: asyncio.Future[bytes] = self._loop.create_future()
        stream = _Stream(block, message, future)
        if not self.accepting:
            future.set_exception(unavailable(unprocessed=True))
            return future
        stream.timer = self._loop.call_at(deadline, self._expire, stream)
        future.add_done_callback(lambda _: self._abandoned(stream) if future.cancelled() else None)
        if not self._waiting and len(self._streams) < self._max_streams:
            self._start(stream)
        else:
            self._waiting.append(stream)
        return future

    def drain(self) -> None:
        """Take no new calls; close once the calls in flight are done."""
        if not self._draining:
            self._draining = True
            self._refuse_waiting()
            self._changed()
            self._close_when_idle()

    def close(self) -> None:
        """Close at once: calls in flight fail CANCELLED."""
        if self._transport is not None and not self._closed:
            self._queue(frames.goaway(0, frames.NO_ERROR))
            self._flush()
            self._transport.close()
        self._lost(grpc.StatusCode.CANCELLED)

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are no subclass
        self._out.append(
            frames.PREFACE
            + frames.settings(
                {
                    frames.ENABLE_PUSH: 0,
                    frames.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                    frames.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
                }
            )
            + frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW)
        )
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(grpc.StatusCode.UNAVAILABLE)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        position, end = 0, len(buffer)
        while end - position >= frames.HEADER_BYTES and not self._closed:
            length = int.from_bytes(buffer[position : position + 3], "big")
            if length > frames.DEFAULT_MAX_FRAME_SIZE:  # the most this side allows (its default)
                self._fail(frames.FRAME_SIZE_ERROR)
                return
            start = position + frames.HEADER_BYTES
            if end - start < length:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream_id = frames.uint32(buffer, position + 5) & frames.MAX_STREAM_ID
            position = start + length
            self._frame(kind, flags, stream_id, buffer[start:position])
        self._buffer = buffer[position:]
        if self._unacknowledged >= CONNECTION_WINDOW // 2 and not self._closed:
            self._queue(frames.window_update(0, self._unacknowledged))
            self._unacknowledged = 0

    # -- frames received ------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None and kind != frames.CONTINUATION:
            self._fail(frames.PROTOCOL_ERROR)
        elif kind == frames.DATA:
            self._data(flags, stream_id, payload)
        elif kind == frames.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == frames.CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == frames.RST_STREAM:
            self._reset(stream_id, payload)
        elif kind == frames.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == frames.PING:
            if len(payload) != 8 or stream_id:
                self._fail(frames.PROTOCOL_ERROR)
            elif not flags & frames.ACK:
                self._queue(frames.frame(frames.PING, frames.ACK, 0, payload))
        elif kind == frames.GOAWAY:
            self._goaway(payload)
        elif kind == frames.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == frames.PUSH_PROMISE:
            self._fail(frames.PROTOCOL_ERROR)  # push was turned off in this side's SETTINGS
        # PRIORITY and unknown types are ignored (RFC 9113, 5.5).

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._unacknowledged += len(payload)  # padding included: it counts against the window
        data = self._unpadded(flags, payload)
        if data is None:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream this side reset or gave up: its late frames are dropped
        stream.received += data
        if len(stream.received) > MAX_RECEIVE_MESSAGE_BYTES + _MESSAGE_PREFIX:
            self._end(stream, RpcFailed(grpc.StatusCode.RESOURCE_EXHAUSTED), frames.CANCEL)
        elif flags & frames.END_STREAM:
            self._complete(stream, None)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self._unpadded(flags, payload)
        if block is None:
            return
        if flags & frames.PRIORITY_FLAG:
            block = block[5:]
        if flags & frames.END_HEADERS:
            self._header_block(flags, stream_id, block)
        else:
            self._continuing = (stream_id, flags, bytearray(block))

    def _unpadded(self, flags: int, payload: bytes) -> bytes | None:
        """The payload of a DATA or HEADERS frame without its padding, if PADDED; None, with the
        connection failed, when the padding is longer than the frame."""
        if not flags & frames.PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            self._fail(frames.PROTOCOL_ERROR)
            return None
        return payload[1 : len(payload) - payload[0]]

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is None or self._continuing[0] != stream_id:
            self._fail(frames.PROTOCOL_ERROR)
            return
        _, first_flags, block = self._continuing
        block += payload
        if len(block) > MAX_HEADER_BLOCK_BYTES:
            self._fail(frames.ENHANCE_YOUR_CALM)
        elif flags & frames.END_HEADERS:
            self._continuing = None
            self._header_block(first_flags, stream_id, bytes(block))

    def _header_block(self, flags: int, stream_id: int, block: bytes) -> None:
        # Decoded whatever the stream: the table must follow every block the server sends.
        try:
            headers = self._decoder.decode(block)
        except HpackError:
            self._fail(frames.COMPRESSION_ERROR)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if sum(len(name) + len(value) + 32 for name, value in headers) > MAX_HEADER_LIST_BYTES:
            self._end(stream, RpcFailed(grpc.StatusCode.RESOURCE_EXHAUSTED), frames.CANCEL)
        elif stream.headers is None and not flags & frames.END_STREAM:
            stream.headers = headers
        elif flags & frames.END_STREAM:
            self._complete(stream, headers)
        else:  # a second block that does not end the stream: trailers must
            self._end(stream, RpcFailed(grpc.StatusCode.INTERNAL), frames.PROTOCOL_ERROR)

    def _reset(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4 or not stream_id:
            self._fail(frames.PROTOCOL_ERROR)
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._end(stream, reset(frames.uint32(payload)), None)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id or len(payload) % 6:
            self._fail(frames.PROTOCOL_ERROR)
            return
        if flags & frames.ACK:
            return
        for key, value in frames.parse_settings(payload):
            if key == frames.MAX_CONCURRENT_STREAMS:
                self._max_streams = value
            elif key == frames.INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    self._fail(frames.FLOW_CONTROL_ERROR)
                    return
                delta, self._peer_window = value - self._peer_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == frames.MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME_SIZE <= value <= 2**24 - 1:
                    self._fail(frames.PROTOCOL_ERROR)
                    return
                self._max_frame = value
            # HEADER_TABLE_SIZE: this side's encoder uses no dynamic table, so nothing changes.
        self._queue(frames.frame(frames.SETTINGS, frames.ACK, 0))
        if not self.ready.done():
            self.ready.set_result(None)
        self._start_waiting()
        self._send_blocked()

    def _goaway(self, payload: bytes) -> None:
        if len(payload) < 8:
            self._fail(frames.PROTOCOL_ERROR)
            return
        last, _ = frames.parse_goaway(payload)
        self._draining = True
        # Streams past the last one the server says it may process were not processed: they may
        # go elsewhere, as may those still waiting for their turn here.
        for stream in [s for s in self._streams.values() if s.id > last]:
            self._end(stream, unavailable(unprocessed=True), None)
        self._refuse_waiting()
        self._changed()
        self._close_when_idle()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(frames.FRAME_SIZE_ERROR)
            return
        increment = frames.uint32(payload) & frames.MAX_WINDOW
        if stream_id == 0:
            if increment == 0 or self._send_window + increment > frames.MAX_WINDOW:
                self._fail(frames.PROTOCOL_ERROR if increment == 0 else frames.FLOW_CONTROL_ERROR)
                return
            self._send_window += increment
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            if increment == 0 or stream.send_window + increment > frames.MAX_WINDOW:
                self._end(stream, RpcFailed(grpc.StatusCode.INTERNAL), frames.FLOW_CONTROL_ERROR)
                return
            stream.send_window += increment
        self._send_blocked()

    # -- streams --------------------------------------------------------------------------------

    def _start(self, stream: _Stream) -> None:
        stream.id = self._next_id
        self._next_id += 2
        if self._next_id > frames.MAX_STREAM_ID:
            self._draining = True  # out of stream ids: a new connection takes the next calls
            self._changed()
        stream.send_window = self._peer_window
        self._streams[stream.id] = stream
        self._queue(frames.frame(frames.HEADERS, frames.END_HEADERS, stream.id, stream.block))
        self._unsent.append(stream)
        self._send_data(stream)

    def _send_data(self, stream: _Stream) -> None:
        """As much of the request as the windows allow; the rest when a WINDOW_UPDATE comes."""
        pending = stream.pending
        while pending:
            size = min(len(pending), self._send_window, stream.send_window, self._max_frame)
            if size <= 0:
                if stream not in self._blocked:
                    self._blocked.append(stream)
                break
            chunk, pending = pending[:size], pending[size:]
            self._send_window -= size
            stream.send_window -= size
            self._queue(frames.frame(frames.DATA, 0 if pending else frames.END_STREAM, stream.id, chunk))
        stream.pending = pending

    def _send_blocked(self) -> None:
        for _ in range(len(self._blocked)):
            stream = self._blocked.popleft()
            if stream.id in self._streams:
                self._send_data(stream)

    def _start_waiting(self) -> None:
        while self._waiting and len(self._streams) < self._max_streams and not self._draining:
            self._start(self._waiting.popleft())

    def _refuse_waiting(self) -> None:
        while self._waiting:
            stream = self._waiting.popleft()
            self._settle(stream, unavailable(unprocessed=True))

    def _complete(self, stream: _Stream, trailers: Headers | None) -> None:
        """The server ended the stream: the message, or the status it failed with."""
        self._end(
            stream,
            _outcome(stream.headers, trailers, stream.received),
            frames.CANCEL if stream.pending else None,
        )

    def _end(self, stream: _Stream, outcome: bytes | RpcFailed, reset_code: int | None) -> None:
        """The stream is over here: settle its call, reset it on the wire if `reset_code`."""
        del self._streams[stream.id]
        if reset_code is not None and not self._closed:
            self._queue(frames.rst_stream(stream.id, reset_code))
        self._settle(stream, outcome)
        self._start_waiting()
        self._close_when_idle()

    def _settle(self, stream: _Stream, outcome: bytes | RpcFailed) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
        if not stream.future.done():
            if isinstance(outcome, RpcFailed):
                stream.future.set_exception(outcome)
            else:
                stream.future.set_result(outcome)

    def _expire(self, stream: _Stream) -> None:
        stream.timer = None
        self._give_up(stream, grpc.StatusCode.DEADLINE_EXCEEDED)

    def _abandoned(self, stream: _Stream) -> None:
        """The caller gave up (its task was cancelled)."""
        self._give_up(stream, grpc.StatusCode.CANCELLED)

    def _give_up(self, stream: _Stream, code: grpc.StatusCode) -> None:
        """End a call with `code`: the server is told, when it knows of the call."""
        if self._streams.get(stream.id) is stream:
            self._end(stream, RpcFailed(code), frames.CANCEL)
        elif stream in self._waiting:
            self._waiting.remove(stream)
            self._settle(stream, RpcFailed(code))

    # -- the connection -------------------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or self._transport is None or not self._out:
            return
        out, self._out = self._out, []
        self._transport.write(b"".join(out))
        for stream in self._unsent:
            stream.sent = True
        self._unsent.clear()

    def _close_when_idle(self) -> None:
        if self._draining and not self._streams and not self._waiting and not self._closed:
            self._flush()
            if self._transport is not None:
                self._transport.close()

    def _fail(self, code: int) -> None:
        """A connection error (RFC 9113, 5.4.1): GOAWAY with `code`, then close."""
        if self._closed:
            return
        self._queue(frames.goaway(0, code))
        self._flush()
        if self._transport is not None:
            self._transport.close()
        self._lost(grpc.StatusCode.UNAVAILABLE)

    def _lost(self, code: grpc.StatusCode) -> None:
        """The connection is gone: calls that reached the server fail with `code`; those that never
        left this process may go elsewhere."""
        if self._closed:
            return
        self._closed = True
        self._out.clear()
        for stream in list(self._streams.values()):
            self._settle(stream, RpcFailed(code) if stream.sent else unavailable(unprocessed=True))
        self._streams.clear()
        self._refuse_waiting()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the connection ended before the server's SETTINGS"))
            self.ready.exception()  # retrieved: a connection that never got ready is no error to log
        self._changed()

    def _changed(self) -> None:
        """It may have stopped taking new calls: `ended` says so once it has."""
        if (self._draining or self._closed) and not self.ended.done():
            self.ended.set_result(None)


def _header(headers: Headers | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


def _outcome(headers: Headers | None, trailers: Headers | None, received: bytearray) -> bytes | RpcFailed:
    """The response message of a finished stream, or how it failed."""
    status = _header(trailers, "grpc-status")
    if status is None:
        http_status = _header(headers if headers is not None else trailers, ":status")
        code = grpc.StatusCode.UNKNOWN if http_status == "200" else code_of_http_status(http_status)
        return RpcFailed(code)
    code = code_of(status)
    if code != grpc.StatusCode.OK:
        return RpcFailed(code, details_of(_header(trailers, DETAILS_KEY)))
    # One uncompressed message, whole: this side asked for no compression.
    if len(received) < _MESSAGE_PREFIX or received[0] != 0:
        return RpcFailed(grpc.StatusCode.INTERNAL)
    length = int.from_bytes(received[1:_MESSAGE_PREFIX], "big")
    if len(received) != _MESSAGE_PREFIX + length:
        return RpcFailed(grpc.StatusCode.INTERNAL)
    return bytes(received[_MESSAGE_PREFIX:])
