"""The tests' stack is production's assembly: a setting handed to it takes effect there, as it
does in `serve` (access log, TLS, admission limits)."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import aiohttp
import pytest

from gateway.observability.logs import ACCESS_LOGGER
from gateway.settings import AdmissionSettings, ServerTlsFiles
from gateway.testing import GatewayStack
from tests.reliability.certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_the_access_log_setting_writes_one_line_per_request(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with (
        GatewayStack.start(tmp_path, access_log=True) as stack,
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
        http.get(f"{stack.rest_url}/orders/order-3", headers={"X-Request-ID": "assembly-1"}) as got,
    ):
        assert got.status == 200
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if "assembly-1" in line]
    assert [(line["route"], line["status"]) for line in lines] == [("/orders/{order_handle}", 200)]


async def test_without_the_access_log_setting_no_line_is_written(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with (
        GatewayStack.start(tmp_path) as stack,
        aiohttp.ClientSession(headers=stack.rest_auth()) as http,
        http.get(f"{stack.rest_url}/orders/order-3", headers={"X-Request-ID": "assembly-2"}) as got,
    ):
        assert got.status == 200
    assert "assembly-2" not in capfd.readouterr().err


async def test_the_tls_setting_serves_https_only(tmp_path: Path, pki: Pki) -> None:
    tls = ServerTlsFiles(pki.server.cert, pki.server.key)
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    async with GatewayStack.start(tmp_path, tls=tls) as stack, aiohttp.ClientSession() as http:
        assert stack.rest_url.startswith("https://")
        async with http.get(
            f"{stack.rest_url}/orders/order-3", headers=stack.rest_auth(), ssl=trusted
        ) as got:
            assert got.status == 200
        plain = stack.rest_url.replace("https://", "http://")
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"{plain}/orders/order-3", headers=stack.rest_auth()) as refused:
                await refused.read()


@pytest.mark.parametrize("backend", ["in-process", "remote"])
async def test_an_admission_setting_limits_the_stack(tmp_path: Path, backend: str) -> None:
    limits = AdmissionSettings(auth_failure_limit=2, auth_failure_window_s=60.0)
    async with (
        GatewayStack.start(tmp_path, backend=backend, admission=limits) as stack,  # type: ignore[arg-type]
        aiohttp.ClientSession() as http,
    ):
        statuses = []
        for _ in range(3):
            wrong = stack.rest_auth(secret="wrong")
            async with http.get(f"{stack.rest_url}/orders/order-3", headers=wrong) as got:
                statuses.append(got.status)
        assert statuses == [401, 401, 429]
