"""Nothing is trusted unless named: who a client is, duplicate credentials, the deadline cap, and
credentials refused before the body is read.

The per-address lock-out keys on the client's address. A REST server reads `X-Forwarded-For` only
from a TCP peer named in its trusted proxies, and then takes the right-most address that is not
itself trusted; a gRPC server reads `x-forwarded-for` only from a trusted peer (a REST front end),
and only as an IP address. Loopback has no privilege: a process on the same host is as untrusted as
any other until named. Every test here runs on loopback; distinct clients are distinct loopback
source addresses (127.0.0.0/8 is all loopback on Linux).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from gateway.assembly import assemble, open_store
from gateway.demo import DEMO_ACCOUNT, DEMO_SECRET
from gateway.protos import orders_service_pb2
from gateway.rpc.status import details_from_metadata, error_info
from gateway.rpc.stubs import orders_service_grpc
from gateway.settings import AdmissionSettings, GrpcSettings
from gateway.testing import BackendKind, GatewayStack, basic, stack_settings
from tests.faults.harness import FaultyStore
from tests.reliability.rawhttp import RawConnection, contract_error, exchange, request

LIMIT = 3
GOOD = basic(DEMO_ACCOUNT, DEMO_SECRET)
WRONG = basic(DEMO_ACCOUNT, "guess")
PROXY = ipaddress.ip_network("127.0.0.1/32")
GET = orders_service_pb2.GetOrderRequest(order_handle="order-3")
BACKENDS = ["in-process", "remote"]
PROMPT_S = 2.0
"""An answer that does not wait for the body comes well within this; one that waits for it
comes after the body timeout (10 s)."""


def lockout(*trusted: ipaddress.IPv4Network) -> AdmissionSettings:
    """The lock-out after LIMIT failures; `trusted` named, else the default trust (none)."""
    limits = AdmissionSettings(auth_failure_limit=LIMIT, auth_failure_window_s=60.0)
    return dataclasses.replace(limits, trusted_proxies=trusted) if trusted else limits


async def rest_status(stack: GatewayStack, authorization: str, *forwarded: str) -> int:
    """The status of a GET from 127.0.0.1 (a proxy, if the stack trusts it) naming `forwarded`."""
    headers = [("Authorization", authorization)] + [("X-Forwarded-For", value) for value in forwarded]
    response, connection = await exchange(
        stack.rest_server.port, request("GET", "/orders/order-3", headers=headers)
    )
    await connection.close()
    return response.status


async def rest_status_from(stack: GatewayStack, source: str, authorization: str) -> int:
    """The status of a GET sent from the loopback address `source`, through no proxy."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"{stack.rest_url}/orders/order-3", headers={"Authorization": authorization}) as response,
    ):
        return response.status


async def grpc_code(
    stub: orders_service_grpc.OrdersServiceStub, metadata: tuple[tuple[str, str], ...]
) -> str:
    try:
        await stub.GetOrder(GET, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as failure:
        return str(failure.code().name)
    return "OK"


# --- gRPC: x-forwarded-for from a peer nobody named ----------------------------------------------


async def test_a_direct_grpc_client_cannot_name_other_clients(tmp_path: Path) -> None:
    """A gRPC client on loopback naming another address in each failed call is still one client:
    it is locked out, and naming yet another address with good credentials does not get it in."""
    async with GatewayStack.start(tmp_path, admission=lockout()) as stack:
        stub = stack.stub()
        codes = [
            await grpc_code(stub, (("authorization", WRONG), ("x-forwarded-for", f"203.0.113.{i}")))
            for i in range(LIMIT)
        ]
        assert codes == ["UNAUTHENTICATED"] * LIMIT
        spoofed = (("authorization", GOOD), ("x-forwarded-for", "203.0.113.7"))
        assert await grpc_code(stub, spoofed) == "RESOURCE_EXHAUSTED"
        assert await grpc_code(stub, (("authorization", GOOD), ("x-forwarded-for", "not an address"))) == (
            "RESOURCE_EXHAUSTED"
        )


async def test_a_direct_grpc_client_cannot_lock_out_a_rest_client(tmp_path: Path) -> None:
    async with GatewayStack.start(tmp_path, admission=lockout()) as stack:
        stub = stack.stub()
        for _ in range(LIMIT + 2):
            await grpc_code(stub, (("authorization", WRONG), ("x-forwarded-for", "127.0.0.9")))
        assert await rest_status_from(stack, "127.0.0.9", GOOD) == 200
        assert await rest_status_from(stack, "127.0.0.1", GOOD) == 429  # the guesser itself


# --- REST: X-Forwarded-For from a peer nobody named, and from a trusted proxy --------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_rest_ignores_x_forwarded_for_from_a_peer_not_named(
    tmp_path: Path, backend: BackendKind
) -> None:
    async with GatewayStack.start(tmp_path, backend=backend, admission=lockout()) as stack:
        statuses = [await rest_status(stack, WRONG, f"198.51.100.{i}") for i in range(LIMIT)]
        assert statuses == [401] * LIMIT
        assert await rest_status(stack, GOOD, "198.51.100.99") == 429
        assert await rest_status_from(stack, "127.0.0.9", GOOD) == 200


@pytest.mark.parametrize("backend", BACKENDS)
async def test_behind_a_trusted_proxy_each_client_is_locked_out_alone(
    tmp_path: Path, backend: BackendKind
) -> None:
    """Behind a reverse proxy, one partner's bad guesses lock out that partner, not every partner
    (nor the proxy itself); a client naming its own address left of the proxy's entry gains nothing."""
    async with GatewayStack.start(tmp_path, backend=backend, admission=lockout(PROXY)) as stack:
        guesses = [await rest_status(stack, WRONG, f"203.0.113.{i}, 198.51.100.1") for i in range(LIMIT)]
        assert guesses == [401] * LIMIT
        assert await rest_status(stack, GOOD, "198.51.100.1") == 429
        assert await rest_status(stack, GOOD, "203.0.113.50", "198.51.100.1") == 429  # two headers, one list
        assert await rest_status(stack, GOOD, "198.51.100.2") == 200
        assert await rest_status(stack, GOOD) == 200  # the proxy's own calls
        # A forwarded address that is itself a trusted proxy passes the walk on to the one it names.
        assert await rest_status(stack, GOOD, "198.51.100.1, 127.0.0.1") == 429


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_malformed_forwarded_address_is_never_a_client(tmp_path: Path, backend: BackendKind) -> None:
    """Entries that are not IP addresses end the walk: the call is the proxy's own, so a flood of
    made-up names is one client, locked out as one."""
    async with GatewayStack.start(tmp_path, backend=backend, admission=lockout(PROXY)) as stack:
        made_up = ["unknown", "198.51.100.1:80", "198.51.100.1, x"]
        assert [await rest_status(stack, WRONG, value) for value in made_up] == [401] * LIMIT
        assert await rest_status(stack, GOOD) == 429
        assert await rest_status(stack, GOOD, "not-an-address") == 429
        assert await rest_status(stack, GOOD, "198.51.100.5") == 200


# --- duplicate credentials ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_two_authorization_headers_are_400(tmp_path: Path, backend: BackendKind) -> None:
    async with GatewayStack.start(tmp_path, backend=backend) as stack:
        for pair in ([GOOD, WRONG], [WRONG, GOOD], [GOOD, GOOD]):
            headers = [("Authorization", value) for value in pair]
            response, connection = await exchange(
                stack.rest_server.port, request("GET", "/orders/order-3", headers=headers)
            )
            await connection.close()
            assert contract_error(response, 400)["reason"] == "DUPLICATE_AUTHORIZATION"


async def test_two_authorization_entries_are_unauthenticated_over_grpc(tmp_path: Path) -> None:
    async with GatewayStack.start(tmp_path) as stack:
        stub = stack.stub()
        for pair in ([GOOD, WRONG], [WRONG, GOOD], [GOOD, GOOD]):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetOrder(GET, metadata=[("authorization", value) for value in pair], timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            info = error_info(details_from_metadata(refused.value.trailing_metadata()))
            assert info is not None and info.reason == "UNAUTHENTICATED"


# --- the deadline cap over gRPC -------------------------------------------------------------------


# No deadline, and the longest a grpc client sends (its grpc-timeout tops out at some 27,000 hours).
@pytest.mark.parametrize("asked_s", [None, 1e8])
async def test_max_timeout_caps_grpc_deadlines(tmp_path: Path, asked_s: float | None) -> None:
    settings = dataclasses.replace(
        stack_settings(tmp_path), mode="grpc", grpc=GrpcSettings(max_timeout_s=0.5)
    )
    store = FaultyStore(await open_store(settings.store.database), stall_s=5.0)
    server = await assemble(settings, store=store)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = orders_service_grpc.OrdersServiceStub(channel)  # type: ignore[no-untyped-call]
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.CancelOrder(
                    orders_service_pb2.CancelOrderRequest(order_handle="order-3"),
                    metadata=(("authorization", GOOD),),
                    timeout=asked_s,
                )
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 3.0
            assert await asyncio.wait_for(store.stalls[0], 1.0) == "cancelled"
    finally:
        await server.stop(0)


# --- no or malformed credentials: 401 before the body --------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer token", "Basic !!!!", "Basic ZGVtbw==", [GOOD, GOOD]], ids=str
)
async def test_bad_credentials_are_refused_before_the_body(
    tmp_path: Path, backend: BackendKind, authorization: str | list[str] | None
) -> None:
    """Headers that promise a body that never comes: the refusal arrives at once, and the
    connection is closed rather than held for the body."""
    values = (
        [] if authorization is None else [authorization] if isinstance(authorization, str) else authorization
    )
    headers = [("Content-Type", "application/json"), ("Content-Length", "1000")]
    headers += [("Authorization", value) for value in values]
    async with GatewayStack.start(tmp_path, backend=backend) as stack:
        async with await RawConnection.open(stack.rest_server.port) as connection:
            await connection.send(request("POST", "/orders/order-3/cancel", headers=headers))
            response = await connection.response(wait_s=PROMPT_S)
            assert await connection.closed_by_server(PROMPT_S)
        if len(values) > 1:
            contract_error(response, 400)
        else:
            assert contract_error(response, 401)["reason"] == "UNAUTHENTICATED"
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="')


@pytest.mark.parametrize("backend", BACKENDS)
async def test_well_formed_wrong_credentials_with_a_body_are_401_on_a_kept_connection(
    tmp_path: Path, backend: BackendKind
) -> None:
    async with (
        GatewayStack.start(tmp_path, backend=backend) as stack,
        await RawConnection.open(stack.rest_server.port) as connection,
    ):
        for authorization in (WRONG, "Bearer token"):
            headers = {"Authorization": authorization, "Content-Type": "application/json"}
            await connection.send(request("POST", "/orders/order-3/cancel", headers=headers, body=b"{}"))
            response = await connection.response(wait_s=PROMPT_S)
            contract_error(response, 401)
        await connection.send(request("GET", "/orders/order-3", headers={"Authorization": GOOD}))
        assert (await connection.response(wait_s=PROMPT_S)).status == 200
