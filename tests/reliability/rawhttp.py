"""HTTP/1.x as exact bytes over a real socket, for requests a client library would normalise or refuse
to send: invalid UTF-8 or control characters in the request line, `..` segments, oversized headers,
other HTTP versions, several requests in one write, a body dribbled byte by byte.

`request()` builds the bytes; `RawConnection` sends them and reads the answers back one by one, and
says whether the server closed the connection. `contract_error()` checks an answer against the
contract's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

READ_TIMEOUT_S = 10.0
ERROR_KEYS = ["detail", "message"]

Headers = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def request(
    method: str | bytes,
    target: str | bytes,
    *,
    headers: Headers = (),
    body: bytes | None = None,
    version: str | bytes = "HTTP/1.1",
    host: bool = True,
    content_length: bool = True,
) -> bytes:
    """The bytes of one request, exactly as given: a `Host` header first (unless `host=False`), the
    headers, and `Content-Length` for a body (unless `content_length=False`, say for a chunked body)."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    lines = [_bytes(method) + b" " + _bytes(target) + b" " + _bytes(version)]
    if host:
        lines.append(b"Host: 127.0.0.1")
    lines += [_bytes(name) + b": " + _bytes(value) for name, value in pairs]
    if body is not None and content_length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def chunked(*chunks: bytes) -> bytes:
    """A chunked body of `chunks`, with its last, empty chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks if chunk) + b"0\r\n\r\n"


@dataclass(frozen=True)
class RawResponse:
    version: str
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"{self.version} {self.status} {self.reason} {dict(self.headers)} {self.body[:500]!r}"


class ConnectionClosed(AssertionError):
    """The server closed the connection where an answer was expected."""


class RawConnection:
    """One connection. Send bytes; read answers (`head=True` for the answer to a HEAD)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(
        cls, port: int, host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None
    ) -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context, limit=2**20)
        return cls(reader, writer)

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def response(self, *, head: bool = False, wait_s: float = READ_TIMEOUT_S) -> RawResponse:
        async with asyncio.timeout(wait_s):
            return await self._response(head)

    async def _line(self) -> bytes:
        try:
            line = await self._reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as partial:
            raise ConnectionClosed(f"the server closed the connection; it sent {partial.partial!r}") from None
        return line[:-2]

    async def _response(self, head: bool) -> RawResponse:
        version, status, reason = (await self._line()).decode("latin-1").split(" ", 2)
        headers: CIMultiDict[str] = CIMultiDict()
        while line := await self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.add(name.strip(), value.strip())
        code = int(status)
        if head or code in (204, 304) or code < 200:
            body = b""
        elif "Content-Length" in headers:
            body = await self._reader.readexactly(int(headers["Content-Length"]))
        elif headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = await self._chunked_body()
        else:  # delimited by the end of the connection
            body = await self._reader.read()
        return RawResponse(version, code, reason, headers, body)

    async def _chunked_body(self) -> bytes:
        parts = []
        while size := int((await self._line()).split(b";")[0], 16):
            parts.append(await self._reader.readexactly(size))
            await self._line()
        while await self._line():  # trailers
            pass
        return b"".join(parts)

    async def closed_by_server(self, wait_s: float) -> bool:
        """Whether the server closes the connection within `wait_s` seconds without sending more."""
        try:
            async with asyncio.timeout(wait_s):
                extra = await self._reader.read(1)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        assert extra == b"", f"unexpected bytes after the answer: {extra!r}"
        return True

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self._writer.wait_closed()

    def half_close(self) -> None:
        """Send the end of the stream, keeping the connection open for reading."""
        self._writer.write_eof()


async def exchange(port: int, data: bytes, *, head: bool = False) -> tuple[RawResponse, RawConnection]:
    """Send `data` on a new connection; the first answer and the connection (for more)."""
    connection = await RawConnection.open(port)
    await connection.send(data)
    try:
        return await connection.response(head=head), connection
    except BaseException:
        await connection.close()
        raise


def contract_error(response: RawResponse, status: int, *, head: bool = False) -> dict[str, Any]:
    """Assert `response` is an error of `status` as the contract shapes it; its `detail`.

    `Content-Type: application/json`, an X-Request-ID, and a body of exactly
    `{"detail": {...}, "message": "..."}` (none for HEAD).
    """
    assert response.status == status, str(response)
    assert response.headers.get("Content-Type") == "application/json", str(response)
    assert response.headers.get("X-Request-ID"), str(response)
    if head:
        assert response.body == b"", str(response)
        return {}
    document = response.json()
    assert isinstance(document, dict), str(response)
    assert list(document) == ERROR_KEYS, str(response)
    assert isinstance(document["detail"], dict), str(response)
    assert isinstance(document["message"], str), str(response)
    assert document["message"], str(response)
    return document["detail"]
