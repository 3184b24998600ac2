"""The ceilings: a bare aiohttp handler and a bare grpc.aio servicer that answer as the product does.

    python -m bench.ceilings rest --port P     POST anything -> the JSON bytes of a cancelled order
    python -m bench.ceilings grpc --port P     OrdersService/CancelOrder -> CancelOrderResponse{order}
    python -m bench.ceilings naive --backend H:P --port P
                                               the issue's naive gateway, a reference, not a ceiling

    rest and grpc also take, for bench/bounds.py, one of:
      --durable DIR   every answer waits for a durable commit without a database: a group commit
                      whose one thread appends a small batch's pages to a file in DIR and waits
                      for its fdatasync, as the product's commit thread does (DurableCommits)
      --essential DB  every request is a real cancel on the SQLite database DB, with only what a
                      cancel cannot do without, by the product's own parts (EssentialCancel)

Without `--essential`, the order is the product's own answer to a cancel of a seeded order
(bench/answer.py), so a ceiling writes the same bytes per request as the product does. They do no
routing, no authentication, no store and no JSON mapping per request: the answer is built once at
start-up. Each runs the way the product runs (one process, uvloop, aiohttp's low-level server with
the same keep-alive, grpc.aio with the same options), so what the product adds on top of them is
what its own code costs. The gRPC one serves the same service and method, with reflection, so the
same ghz call (reflection or --protoset) works against both. Like the product, each prints a banner
with its bound port on stdout and stops on SIGTERM or SIGINT.

The naive gateway is the one issue 5 calibrates its targets with ("aiohttp -> grpc.aio over
loopback -> json_format", 0.14 of its aiohttp ceiling): a `web.Application` route on the default
event loop that calls CancelOrder of `--backend` through a grpc.aio stub and answers
`json_format.MessageToJson` of the order. Measured in the same run as the ceilings, its share of the
REST ceiling here says how this machine's ceiling compares with the one the issue's figures came from.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvloop
from aiohttp import web
from google.protobuf import json_format

from bench.answer import cancelled_seed_order
from bench.disk import APPEND_BYTES, FILE_LIMIT_BYTES
from gateway.calls.auth import Authenticator, authorization_of
from gateway.calls.orders import OrderCalls
from gateway.jsonmap import encode_json
from gateway.protos import SERVICE_NAME, order_pb2, orders_service_pb2
from gateway.rpc.reflection import add_reflection
from gateway.rpc.stubs import orders_service_grpc
from gateway.store.sqlite import SqliteStore

# The product's settings, so that only the work per request differs (gateway/rest/server.py and
# gateway/rpc/server.py).
KEEPALIVE_TIMEOUT_S = 75.0
GRPC_OPTIONS = [("grpc.so_reuseport", 0)]
LAST_BANNER_LINE = "Stop with Ctrl-C or SIGTERM."
JSON_HEADERS = {"Content-Type": "application/json"}
DEADLINE_S = 10.0  # every call has a deadline; this one never passes here
CANCEL_PATH = ("/orders/", "/cancel")  # what bench/wrk/cancel.lua and h2load ask for


class DurableCommits:
    """Group commit with nothing to write but the sync: a waiter is released once a commit that
    began after it came has appended APPEND_BYTES to the log file and synced it (`fdatasync`), on
    one thread, one commit at a time; the waiters that come meanwhile share the next. The log starts
    over past FILE_LIMIT_BYTES, as the product's checkpointer starts SQLite's over; its name is gone
    from DIR at once, so nothing is left behind."""

    def __init__(self, directory: Path) -> None:
        path = directory / f"commits-{os.getpid()}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.unlink(path)
        self._size = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self._waiting: list[asyncio.Future[None]] = []
        self._committing = False

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        if not self._committing:
            self._committing = True
            loop.call_soon(self._commit, loop)
        await waiter

    def _commit(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, []
        synced = loop.run_in_executor(self._thread, self._append_and_sync)
        synced.add_done_callback(lambda _: self._committed(loop, batch, synced.exception()))

    def _append_and_sync(self) -> None:
        if self._size >= FILE_LIMIT_BYTES:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._size = 0
        self._size += os.write(self._fd, b"\0" * APPEND_BYTES)
        os.fdatasync(self._fd)

    def _committed(
        self, loop: asyncio.AbstractEventLoop, batch: list[asyncio.Future[None]], error: BaseException | None
    ) -> None:
        for waiter in batch:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        if self._waiting:
            self._commit(loop)
        else:
            self._committing = False


class EssentialCancel:
    """The least a cancel must do, by the product's own parts and with none of its transport: check
    the credentials (the product's Authenticator, with its cache), then cancel (OrderCalls on the
    product's SqliteStore with `synchronous=full`: the cancel rule, the write and its event, a
    durable group commit on the commit thread). No routing, deadline, request id, metrics, access
    log or error mapping: a refused call fails the request."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._calls = OrderCalls(store)
        self._authenticator = Authenticator(store)

    async def cancel(self, authorization: str | None, handle: str) -> order_pb2.Order:
        account = await self._authenticator.authenticate(authorization)
        request = orders_service_pb2.CancelOrderRequest(order_handle=handle)
        return await self._calls.cancel_order(account, request, time.monotonic() + DEADLINE_S)


@dataclass(frozen=True)
class Extra:
    """What a ceiling does per request beyond answering: wait for a durable commit, or cancel for real."""

    durable: Path | None = None
    essential: Path | None = None

    def label(self) -> str:
        if self.essential is not None:
            return "the essential cancel"
        return "durable commit" if self.durable is not None else ""

    def per_request(self) -> Callable[[], Awaitable[None]] | None:
        """What each request awaits before its answer, or None for nothing."""
        return DurableCommits(self.durable).wait if self.durable is not None else None

    async def essential_cancel(self) -> EssentialCancel | None:
        if self.essential is None:
            return None
        return EssentialCancel(await SqliteStore.open(self.essential, synchronous="full"))


def rest_handler(body: bytes, extra: Callable[[], Awaitable[None]] | None = None) -> web.Server:
    """A low-level aiohttp server whose one handler answers every request with `body`."""

    async def handle(request: web.BaseRequest) -> web.Response:
        # Reading the body is part of any real handler; the request carries `{}` as the product's does.
        await request.read()
        if extra is not None:
            await extra()
        return web.Response(body=body, headers=JSON_HEADERS)

    return web.Server(handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)


def essential_rest_handler(essential: EssentialCancel) -> web.Server:
    """A low-level aiohttp server that answers POST /orders/{handle}/cancel with the essential cancel
    and the JSON of the cancelled order (the product's encoder)."""
    start, end = CANCEL_PATH

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        path = request.path
        if not (path.startswith(start) and path.endswith(end)):
            raise web.HTTPNotFound()
        order = await essential.cancel(request.headers.get("Authorization"), path[len(start) : -len(end)])
        return web.Response(body=encode_json(order), headers=JSON_HEADERS)

    return web.Server(handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)


class BareOrdersServicer(orders_service_grpc.OrdersServiceServicer):
    """CancelOrder answered with one prepared response; every other method is left unimplemented."""

    def __init__(
        self,
        response: orders_service_pb2.CancelOrderResponse,
        extra: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._response = response
        self._extra = extra

    # Named after the RPC, as the generated base class requires.
    async def CancelOrder(
        self, request: orders_service_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_service_pb2.CancelOrderResponse:
        if self._extra is not None:
            await self._extra()
        return self._response


class EssentialOrdersServicer(orders_service_grpc.OrdersServiceServicer):
    """CancelOrder as the essential cancel; every other method is left unimplemented."""

    def __init__(self, essential: EssentialCancel) -> None:
        self._essential = essential

    async def CancelOrder(
        self, request: orders_service_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_service_pb2.CancelOrderResponse:
        authorization = authorization_of(context.invocation_metadata())
        order = await self._essential.cancel(authorization, request.order_handle)
        return orders_service_pb2.CancelOrderResponse(order=order)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _banner(title: str, extra: Extra) -> str:
    return f"{title} + {extra.label()}" if extra.label() else title


async def serve_rest(host: str, port: int, extra: Extra = Extra()) -> None:
    essential = await extra.essential_cancel()
    if essential is not None:
        handler = essential_rest_handler(essential)
    else:
        handler = rest_handler(encode_json(await cancelled_seed_order()), extra.per_request())
    runner = web.ServerRunner(handler, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    title = _banner("bench ceiling: bare aiohttp", extra)
    print(f"{title}\n  REST  http://{host}:{bound}\n{LAST_BANNER_LINE}", flush=True)
    try:
        await _until_signalled()
    finally:
        await runner.cleanup()
        if essential is not None:
            await essential.store.close()


def naive_gateway(backend: str) -> tuple[web.Application, grpc.aio.Channel]:
    """The simplest REST front end for CancelOrder: no validation, no error mapping."""
    channel = grpc.aio.insecure_channel(backend)
    stub = orders_service_grpc.OrdersServiceStub(channel)  # type: ignore[no-untyped-call]

    async def cancel(request: web.Request) -> web.Response:
        await request.read()
        metadata = (("authorization", request.headers.get("Authorization", "")),)
        call = orders_service_pb2.CancelOrderRequest(order_handle=request.match_info["handle"])
        reply = await stub.CancelOrder(call, metadata=metadata)
        return web.Response(text=json_format.MessageToJson(reply.order), content_type="application/json")

    app = web.Application()
    app.router.add_post("/orders/{handle}/cancel", cancel)
    return app, channel


async def serve_naive(host: str, port: int, backend: str) -> None:
    app, channel = naive_gateway(backend)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(
        f"bench reference: naive gateway to {backend}\n  REST  http://{host}:{bound}\n{LAST_BANNER_LINE}",
        flush=True,
    )
    try:
        await _until_signalled()
    finally:
        await runner.cleanup()
        await channel.close()


async def serve_grpc(host: str, port: int, extra: Extra = Extra()) -> None:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    essential = await extra.essential_cancel()
    servicer: orders_service_grpc.OrdersServiceServicer
    if essential is not None:
        servicer = EssentialOrdersServicer(essential)
    else:
        response = orders_service_pb2.CancelOrderResponse(order=await cancelled_seed_order())
        servicer = BareOrdersServicer(response, extra.per_request())
    orders_service_grpc.add_OrdersServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    add_reflection(server, [SERVICE_NAME])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    title = _banner("bench ceiling: bare grpc.aio", extra)
    print(f"{title}\n  gRPC  {host}:{bound}\n{LAST_BANNER_LINE}", flush=True)
    try:
        await _until_signalled()
    finally:
        await server.stop(0)
        if essential is not None:
            await essential.store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["rest", "grpc", "naive"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (shown in the banner)")
    parser.add_argument("--backend", help="naive: the gRPC server (host:port) it calls")
    extras = parser.add_mutually_exclusive_group()
    extras.add_argument("--durable", type=Path, help="rest, grpc: wait for a durable commit in DIR")
    extras.add_argument("--essential", type=Path, help="rest, grpc: cancel for real on this SQLite database")
    args = parser.parse_args(argv)
    if args.kind == "naive":
        if not args.backend:
            parser.error("naive needs --backend HOST:PORT")
        # Naive: the default event loop, as a first aiohttp app would run.
        asyncio.run(serve_naive(args.host, args.port, args.backend))
    else:
        extra = Extra(args.durable, args.essential)
        uvloop.run((serve_rest if args.kind == "rest" else serve_grpc)(args.host, args.port, extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
