"""The real program, run as a user or an SRE would: subprocesses, signals, printed commands."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.protos import order_pb2
from gateway.testing import basic
from tests.conftest import REFERENCE_DIR
from tests.gotools import find_go_tool
from tests.processes import GatewayProcess, executable

DEMO_AUTH = {"Authorization": basic("demo", "demo-secret")}
DEMO_TOKEN = base64.b64encode(b"demo:demo-secret").decode()
EPHEMERAL_PORTS = {"HYPERTRACK_GATEWAY_HTTP_PORT": "0", "HYPERTRACK_GATEWAY_GRPC_PORT": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [executable(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


async def shell(command: str, *, tool_dir: str) -> tuple[int, str, str]:
    """Run a printed command as a user would paste it into bash."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": f"{tool_dir}:{os.environ['PATH']}"},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def orders_in(database: Path) -> list[order_pb2.Order]:
    with sqlite3.connect(database) as db:
        return [order_pb2.Order.FromString(row[0]) for row in db.execute("SELECT body FROM orders")]


def cancelled_events(order: order_pb2.Order) -> int:
    return sum(1 for event in order.timeline if event.HasField("order_cancelled"))


async def test_embedded_default_prints_commands_that_work(tmp_path: Path) -> None:
    gateway = GatewayProcess.start(["serve"], cwd=tmp_path, env=EPHEMERAL_PORTS)
    try:
        assert any("for local use only" in line for line in gateway.banner)
        assert (tmp_path / "var" / "hypertrack-gateway.db").exists()
        [curl] = gateway.commands("curl")
        [grpcurl] = gateway.commands("grpcurl")
        tool_dir = str(find_go_tool("grpcurl").parent)

        code, out, err = await shell(curl, tool_dir=tool_dir)
        assert code == 0, err
        cancelled = json.loads(out)
        reference = json.loads((REFERENCE_DIR / "cancel-order-example.json").read_text())
        assert list(cancelled) == list(reference)
        assert cancelled["status"] == "cancelled"
        assert cancelled["end_location"] == reference["end_location"]

        code, out, err = await shell(grpcurl, tool_dir=tool_dir)
        assert code == 0, err
        read_back = json.loads(out)["order"]
        assert read_back["order_handle"] == "order-1"
        assert read_back["status"] == "ORDER_STATUS_CANCELLED"
    finally:
        assert gateway.stop() == 0


async def test_grpc_and_http_as_separate_processes(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'orders.db'}"
    grpc_server = GatewayProcess.start(
        ["grpc", "--grpc-port", "0", "--database", database, "--demo"], cwd=tmp_path
    )
    try:
        front = GatewayProcess.start(
            ["http", "--http-port", "0", "--backend", f"127.0.0.1:{grpc_server.grpc_port}"], cwd=tmp_path
        )
        try:
            async with aiohttp.ClientSession(headers=DEMO_AUTH) as http:
                async with http.post(f"{front.rest_url}/orders/order-3/cancel") as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["status"] == "cancelled"
                async with http.get(f"{front.rest_url}/orders/order-3") as response:
                    assert (await response.json())["status"] == "cancelled"
                async with http.get(f"{front.rest_url}/readyz") as response:
                    assert response.status == 200
                    assert (await response.json())["checks"] == {"grpc_backend": True}
        finally:
            assert front.stop() == 0
    finally:
        assert grpc_server.stop() == 0
    [order] = [o for o in orders_in(tmp_path / "orders.db") if o.order_handle == "order-3"]
    assert order.status == order_pb2.ORDER_STATUS_CANCELLED


async def test_sigterm_lets_cancels_in_flight_finish(tmp_path: Path) -> None:
    database_path = tmp_path / "orders.db"
    database = f"sqlite:///{database_path}"
    assert cli("migrate", "--database", database, cwd=tmp_path).returncode == 0
    created = cli("accounts", "create", "--database", database, "loadtest", cwd=tmp_path)
    account_id, secret = created.stdout.strip().split(":", 1)
    seeded = cli("seed", "--database", database, "--account", account_id, "--count", "400", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    gateway = GatewayProcess.start(
        ["serve", "--database", database, "--no-demo", "--grace", "5"], cwd=tmp_path, env=EPHEMERAL_PORTS
    )
    answered: dict[str, int] = {}
    refused: list[str] = []
    halfway = asyncio.Event()

    async def cancel_all(handles: list[str], http: aiohttp.ClientSession) -> None:
        for handle in handles:
            try:
                async with http.post(f"{gateway.rest_url}/orders/{handle}/cancel") as response:
                    body = await response.json()
                    answered[handle] = response.status
                    assert response.status != 200 or body["status"] == "cancelled"
            except aiohttp.ClientConnectionError:
                refused.append(handle)
            if len(answered) >= 100:
                halfway.set()

    # A new connection per request: after SIGTERM a request is either answered in full or refused.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        headers={"Authorization": basic(account_id, secret)}, connector=connector
    ) as http:
        handles = [f"load-{i}" for i in range(400)]
        workers = [asyncio.create_task(cancel_all(handles[i::8], http)) for i in range(8)]
        await asyncio.wait_for(halfway.wait(), timeout=60)
        gateway.signal(signal.SIGTERM)
        await asyncio.gather(*workers)
    assert gateway.wait(timeout=5 + 5) == 0
    assert set(answered.values()) == {200}, answered
    assert len(answered) + len(refused) == 400
    assert refused, "SIGTERM came after every request was answered; the test proved nothing"

    with sqlite3.connect(database_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for order in orders_in(database_path):
        if order.status == order_pb2.ORDER_STATUS_CANCELLED:
            assert order.HasField("cancelled_at") and cancelled_events(order) == 1
        else:
            assert order.status == order_pb2.ORDER_STATUS_ONGOING
            assert not order.HasField("cancelled_at") and cancelled_events(order) == 0
            assert order.order_handle not in answered


async def test_health_readiness_metrics_and_logs(tmp_path: Path) -> None:
    database_path = tmp_path / "orders.db"
    gateway = GatewayProcess.start(
        ["serve", "--database", f"sqlite:///{database_path}", "--demo"], cwd=tmp_path, env=EPHEMERAL_PORTS
    )
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gateway.rest_url}/healthz") as response:
                assert response.status == 200 and (await response.json())["status"] == "ok"
            async with http.get(f"{gateway.rest_url}/readyz") as response:
                assert response.status == 200, await response.text()
            for handle in ("order-3", "order-4"):
                async with http.post(
                    f"{gateway.rest_url}/orders/{handle}/cancel", headers=DEMO_AUTH
                ) as response:
                    assert response.status == 200
            async with http.post(
                f"{gateway.rest_url}/orders/order-5/cancel",
                headers={"Authorization": basic("demo", "wrong-secret")},
            ) as response:
                assert response.status == 401

            # Another process holds the database's write lock: not ready, until it lets go.
            locker = sqlite3.connect(database_path, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
            try:
                async with http.get(f"{gateway.rest_url}/readyz") as response:
                    assert response.status == 503
                    assert (await response.json())["checks"]["database"] is False
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            async with http.get(f"{gateway.rest_url}/readyz") as response:
                assert response.status == 200

            async with http.get(f"{gateway.rest_url}/metrics") as response:
                metrics = await response.text()
        cancel_route = 'http_route="/orders/{order_handle}/cancel"'
        for status, count in (("200", 2), ("401", 1)):
            assert (
                'http_server_request_duration_seconds_count{http_request_method="POST",'
                f'http_response_status_code="{status}",{cancel_route}}} {count}.0'
            ) in metrics
        # serve's REST calls reach the servicer in-process: they are no gRPC calls.
        assert (
            'grpc_server_started_total{grpc_method="CancelOrder",'
            'grpc_service="hypertrack.orders.v1.OrdersService",grpc_type="unary"} 0.0'
        ) in metrics
        assert "grpc_server_handled_total{" not in metrics
        assert (
            'hypertrack_gateway_store_operation_duration_seconds_count{operation="change_order"} 2.0'
            in metrics
        )
    finally:
        assert gateway.stop() == 0
    records = [json.loads(line) for line in gateway.stderr_lines]
    requests = [r for r in records if r.get("message") == "request"]
    cancels = [r for r in requests if r["route"] == "/orders/{order_handle}/cancel"]
    assert [r["status"] for r in cancels] == [200, 200, 401]
    assert all(r["request_id"] and r["duration_ms"] >= 0 and r["method"] == "POST" for r in cancels)
    text = "\n".join(gateway.stderr_lines)
    for secret in ("demo-secret", "wrong-secret", DEMO_TOKEN, "Basic "):
        assert secret not in text


async def test_accounts_create_prints_a_working_secret_once(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'orders.db'}"
    created = cli("accounts", "create", "--database", database, "acme", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    account_id, secret = created.stdout.strip().split(":", 1)
    assert account_id == "acme" and len(secret) >= 40
    again = cli("accounts", "create", "--database", database, "acme", cwd=tmp_path)
    assert again.returncode == 1 and "exists already" in again.stderr
    with sqlite3.connect(tmp_path / "orders.db") as db:
        stored = db.execute("SELECT secret_hash FROM accounts WHERE account_id = 'acme'").fetchone()[0]
    assert secret.encode() not in stored
    seeded = cli(
        "seed", "--database", database, "--account", "acme", "--count", "3", "--prefix", "x-", cwd=tmp_path
    )
    assert seeded.returncode == 0, seeded.stderr
    gateway = GatewayProcess.start(
        ["serve", "--database", database, "--no-demo"], cwd=tmp_path, env=EPHEMERAL_PORTS
    )
    try:
        async with aiohttp.ClientSession(headers={"Authorization": basic(account_id, secret)}) as http:
            for handle in ("x-0", "x-1", "x-2"):
                async with http.post(f"{gateway.rest_url}/orders/{handle}/cancel") as response:
                    assert response.status == 200
            async with http.get(f"{gateway.rest_url}/orders/x-3") as response:
                assert response.status == 404
    finally:
        assert gateway.stop() == 0


async def test_workers_share_the_ports(tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    gateway = GatewayProcess.start(
        [
            "serve",
            "--workers",
            "2",
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--database",
            f"sqlite:///{tmp_path / 'orders.db'}",
            "--demo",
        ],
        cwd=tmp_path,
    )
    try:
        assert gateway.http_port == http_port
        async with aiohttp.ClientSession(headers=DEMO_AUTH) as http:
            statuses = []
            for handle in ("order-3", "order-4", "order-5", "order-3"):
                async with http.post(f"http://127.0.0.1:{http_port}/orders/{handle}/cancel") as response:
                    statuses.append(response.status)
        assert statuses == [200, 200, 200, 200]
    finally:
        assert gateway.stop() == 0


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["serve", "--http-port", "70000"], {}, "--http-port"),
        (["serve"], {"HYPERTRACK_GATEWAY_GRPC_PORT": "abc"}, "HYPERTRACK_GATEWAY_GRPC_PORT"),
        (["serve", "--database", "mysql://db/orders"], {}, "--database"),
        (["serve", "--workers", "0"], {}, "--workers"),
        (["serve", "--grace", "-1"], {}, "--grace"),
        (["serve", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], {}, "--tls-cert"),
        (["serve", "--tls-cert", "README.md"], {}, "--tls-key"),
        (["serve", "--default-timeout", "90", "--max-timeout", "30"], {}, "--default-timeout"),
        (["http"], {}, "--backend"),
        (["http", "--backend", "no port here"], {}, "--backend"),
        (["serve"], {"HYPERTRACK_GATEWAY_LOG_LEVEL": "loud"}, "HYPERTRACK_GATEWAY_LOG_LEVEL"),
        (["serve"], {"HYPERTRACK_GATEWAY_NO_DEMO": "maybe"}, "HYPERTRACK_GATEWAY_NO_DEMO"),
        (["seed", "--count", "5"], {}, "--account"),
        (["serve", "--demo", "--host", "0.0.0.0"], {}, "--demo"),
        (["grpc", "--demo"], {"HYPERTRACK_GATEWAY_HOST": "192.0.2.1"}, "--demo"),
        (["serve", "--demo", "--no-demo"], {}, "--demo"),
        (["http", "--backend", "127.0.0.1:50051", "--database", "sqlite:///x.db"], {}, "--database"),
    ],
)
def test_a_bad_setting_stops_with_one_clear_line(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    (tmp_path / "README.md").write_text("not a certificate")
    result = subprocess.run(
        [executable(), *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0] and "error" in lines[0]
    assert result.stdout == ""


async def test_the_demo_account_is_only_on_the_embedded_default_or_asked_for(tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'orders.db'}"
    without = GatewayProcess.start(["serve", "--database", other], cwd=tmp_path, env=EPHEMERAL_PORTS)
    try:
        assert not any("for local use only" in line for line in without.banner)
        async with (
            aiohttp.ClientSession(headers=DEMO_AUTH) as http,
            http.get(f"{without.rest_url}/orders/order-3") as response,
        ):
            assert response.status == 401
    finally:
        assert without.stop() == 0
    asked = GatewayProcess.start(["serve", "--database", other, "--demo"], cwd=tmp_path, env=EPHEMERAL_PORTS)
    try:
        assert any("for local use only" in line for line in asked.banner)
        async with (
            aiohttp.ClientSession(headers=DEMO_AUTH) as http,
            http.get(f"{asked.rest_url}/orders/order-3") as response,
        ):
            assert response.status == 200
    finally:
        assert asked.stop() == 0


def test_help_shows_defaults_as_they_are_typed(tmp_path: Path) -> None:
    serve_help = " ".join(cli("serve", "--help", cwd=tmp_path).stdout.split())
    trusted = serve_help.partition("--trusted-proxies TRUSTED_PROXIES ")[2].partition(" --")[0]
    assert trusted.endswith("default none]"), trusted
    assert "IPv4Network" not in serve_help
    http_help = cli("http", "--help", cwd=tmp_path).stdout
    assert "--database" not in http_help and "--backend" in http_help


def test_version_and_the_help_of_seed_and_accounts(tmp_path: Path) -> None:
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("hypertrack-gateway 0.")
    seed_help = " ".join(cli("seed", "--help", cwd=tmp_path).stdout.split())
    assert (
        "--account ACCOUNT the account that owns the orders [env HYPERTRACK_GATEWAY_ACCOUNT; required]"
        in seed_help
    )
    assert "how many orders [env HYPERTRACK_GATEWAY_COUNT; required]" in seed_help
    assert "ACCOUNT_ID the new account's id" in " ".join(
        cli("accounts", "create", "--help", cwd=tmp_path).stdout.split()
    )


def test_seed_without_the_account_says_how_to_get_one(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'orders.db'}"
    result = cli("seed", "--database", database, "--account", "demo", "--count", "3", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"accounts create --database {database} demo" in line and "serve" in line


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("hypertrack-gateway: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "--grpc-port", "0", "--http-port", "{port}"], "--http-port {port}"),
        (["serve", "--http-port", "0", "--grpc-port", "{port}"], "--grpc-port {port}"),
        (["grpc", "--grpc-port", "0", "--admin-port", "{port}"], "--admin-port {port}"),
        (["serve", "--workers", "2", "--http-port", "{free}", "--grpc-port", "{port}"], "--grpc-port {port}"),
    ],
)
def test_a_port_in_use_stops_with_one_line(
    tmp_path: Path, taken_port: int, args: list[str], named: str
) -> None:
    free = str(free_port())
    filled = [a.format(port=taken_port, free=free) for a in args]
    line = one_line_failure(cli(*filled, "--no-demo", cwd=tmp_path))
    assert named.format(port=taken_port) in line and "127.0.0.1" in line


def test_an_unreachable_database_stops_with_one_line(tmp_path: Path) -> None:
    refused = f"postgresql://gateway:hunter2@127.0.0.1:{free_port()}/orders"
    line = one_line_failure(cli("grpc", "--grpc-port", "0", "--database", refused, cwd=tmp_path))
    assert "--database postgresql://gateway:***@127.0.0.1" in line and "hunter2" not in line


def test_a_tls_file_that_is_no_certificate_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    result = cli(
        "serve", "--http-port", "0", "--grpc-port", "0", "--tls-cert", "junk.pem", "--tls-key", "junk.pem",
        cwd=tmp_path,
    )  # fmt: skip
    assert "--tls-cert junk.pem" in one_line_failure(result)
