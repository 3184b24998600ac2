"""Limits on both surfaces: 429 with Retry-After over REST, RESOURCE_EXHAUSTED with RetryInfo over gRPC."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import grpc
import pytest

from gateway.protos import orders_service_pb2
from gateway.rpc.status import details_from_metadata, error_info, retry_delay_s
from gateway.settings import AdmissionSettings
from gateway.testing import BackendKind, GatewayStack


@pytest.mark.parametrize("backend", ["in-process", "remote"])
async def test_an_account_over_its_rate_gets_429_with_retry_after(
    tmp_path: Path, backend: BackendKind
) -> None:
    admission = AdmissionSettings(rate_limit=0.5, rate_burst=2, auth_failure_limit=0)
    async with (
        GatewayStack.start(tmp_path, backend=backend, admission=admission) as stack,
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
    ):
        statuses = []
        for _ in range(3):
            async with http.get(f"{stack.rest_url}/orders/order-3") as response:
                statuses.append(response.status)
                body = await response.json()
        assert statuses == [200, 200, 429]
        assert response.headers["Retry-After"] == "2"
        assert body["detail"]["reason"] == "RATE_LIMITED"
        other, secret = await stack.create_account("rival")
        async with http.get(
            f"{stack.rest_url}/orders/order-3", headers=stack.rest_auth(other, secret)
        ) as response:
            assert response.status == 404  # its own bucket, and not the demo account's order


async def test_grpc_callers_get_resource_exhausted_with_retry_info(tmp_path: Path) -> None:
    admission = AdmissionSettings(rate_limit=1.0, rate_burst=1, auth_failure_limit=0)
    async with GatewayStack.start(tmp_path, admission=admission) as stack:
        stub = stack.stub()
        request = orders_service_pb2.GetOrderRequest(order_handle="order-3")
        await stub.GetOrder(request, metadata=stack.grpc_auth())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetOrder(request, metadata=stack.grpc_auth())
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = details_from_metadata(refused.value.trailing_metadata())
        info = error_info(status)
        assert info is not None and info.reason == "RATE_LIMITED"
        delay = retry_delay_s(status)
        assert delay is not None and 0 < delay <= 1.0


@pytest.mark.parametrize("backend", ["in-process", "remote"])
async def test_an_address_that_keeps_failing_authentication_is_locked_out(
    tmp_path: Path, backend: BackendKind
) -> None:
    admission = AdmissionSettings(auth_failure_limit=3, auth_failure_window_s=60.0)
    async with (
        GatewayStack.start(tmp_path, backend=backend, admission=admission) as stack,
        aiohttp.ClientSession() as http,
    ):
        url = f"{stack.rest_url}/orders/order-3"
        statuses = []
        for _ in range(4):
            async with http.get(url, headers=stack.rest_auth("demo", "guess")) as response:
                statuses.append(response.status)
        assert statuses == [401, 401, 401, 429]
        # Locked out even with the right secret: a refusal must not tell a guesser it guessed right.
        async with http.get(url, headers=stack.rest_auth()) as response:
            assert response.status == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert (await response.json())["detail"]["reason"] == "TOO_MANY_FAILED_AUTHENTICATIONS"


async def test_the_lockout_follows_the_rest_client_not_the_front_end(tmp_path: Path) -> None:
    """Behind the remote backend every call reaches gRPC from the front end's address; the front
    end names its client in x-forwarded-for, which the gRPC side reads only from the peers it is
    told to trust (the stack's gRPC part names its front end, 127.0.0.1/32)."""
    admission = AdmissionSettings(auth_failure_limit=2, auth_failure_window_s=60.0)
    async with GatewayStack.start(tmp_path, backend="remote", admission=admission) as stack:
        stub = stack.stub()
        request = orders_service_pb2.GetOrderRequest(order_handle="order-3")
        bad = (("authorization", "Basic ZGVtbzpndWVzcw=="), ("x-forwarded-for", "203.0.113.7"))
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.GetOrder(request, metadata=bad)
            assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await stub.GetOrder(request, metadata=bad)
        assert locked.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Another client through the same (loopback) front end is not locked out.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{stack.rest_url}/orders/order-3", headers=stack.rest_auth()) as response,
        ):
            assert response.status == 200
