"""What an operator runs against: /metrics by the ecosystem's names and one view of it across
`--workers`, the admin port that takes /metrics, /healthz and /readyz off the public port, and the
API docs page served with its own assets."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import SNAPSHOT_INTERVAL_S
from gateway.protos import SERVICE_NAME, orders_service_pb2
from gateway.rpc.stubs import orders_service_grpc
from gateway.testing import GatewayStack, basic
from tests.e2e.test_cli import DEMO_AUTH, free_port
from tests.processes import GatewayProcess

DEMO_GRPC_AUTH = (("authorization", basic("demo", "demo-secret")),)
REQUESTS = 30
SCRAPES = 10
VIEW_TIMEOUT_S = 3 * SNAPSHOT_INTERVAL_S + 5.0
"""How long the workers' snapshots may take to show a request counted by the other worker."""
GET_ROUTE = "/orders/{order_handle}"
ADMIN_PATHS = ("/metrics", "/healthz", "/readyz")

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
Kinds = dict[str, str]
"""The type of each family, by the names of its samples."""


def parse(text: str) -> tuple[Series, Kinds]:
    series: Series = {}
    kinds: Kinds = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
            kinds[sample.name] = family.type
    return series, kinds


def total(series: Series, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, found), value in series.items() if sample == name and wanted <= found)


def admin_port_of(gateway: GatewayProcess) -> int:
    for line in gateway.banner:
        match = re.search(r"^  admin https?://[^:]+:(\d+) \(/metrics, /healthz, /readyz\)$", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no admin line in the banner: {gateway.banner}")


@pytest.fixture
async def fresh_connections() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that opens a new connection for each request, so that the kernel spreads them over
    the workers that share the port (a kept-alive connection would stay with one)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        yield http


async def scrape(http: aiohttp.ClientSession, url: str) -> Series:
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        return parse(await response.text())[0]


async def grpc_get_order(port: int, handle: str = "order-1") -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = orders_service_grpc.OrdersServiceStub(channel)
        await stub.GetOrder(
            orders_service_pb2.GetOrderRequest(order_handle=handle), metadata=DEMO_GRPC_AUTH, timeout=10
        )


async def until(http: aiohttp.ClientSession, url: str, done: Callable[[Series], bool], what: str) -> Series:
    """Scrape until `done(series)` holds: the other worker's counts show at its next snapshot."""
    deadline = time.monotonic() + VIEW_TIMEOUT_S
    while True:
        series = await scrape(http, url)
        if done(series):
            return series
        assert time.monotonic() < deadline, f"{what}: not within {VIEW_TIMEOUT_S} s"
        await asyncio.sleep(0.2)


def answered_by_worker(directory: Path) -> list[float]:
    """The REST requests to GET_ROUTE each worker has counted, from its last snapshot."""
    counts = []
    for path in directory.glob("worker-*.json"):
        (family,) = [
            f
            for f in json.loads(path.read_text())["families"]
            if f["name"] == "http_server_request_duration_seconds"
        ]
        counts.append(
            sum(
                value
                for name, labels, value in family["samples"]
                if name.endswith("_count") and labels["http_route"] == GET_ROUTE
            )
        )
    return counts


def metrics_directories(tmp_path: Path) -> list[Path]:
    return list(tmp_path.glob("hypertrack-gateway-metrics-*"))


async def test_workers_answer_one_view_that_never_goes_backwards(
    tmp_path: Path, fresh_connections: aiohttp.ClientSession
) -> None:
    http_port, grpc_port, admin_port = free_port(), free_port(), free_port()
    gateway = GatewayProcess.start(
        [
            "serve",
            "--workers",
            "2",
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--admin-port",
            str(admin_port),
            "--database",
            f"sqlite:///{tmp_path / 'orders.db'}",
            "--demo",
        ],
        cwd=tmp_path,
        env={"TMPDIR": str(tmp_path)},  # where the supervisor makes the run's snapshot directory
    )
    http, public, admin = fresh_connections, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{admin_port}"
    try:
        assert admin_port_of(gateway) == admin_port
        (directory,) = metrics_directories(tmp_path)
        assert directory.stat().st_mode & 0o777 == 0o700

        scrapes = []
        for sent in range(REQUESTS):
            async with http.get(f"{public}/orders/order-1", headers=DEMO_AUTH) as response:
                assert response.status == 200
            if sent % (REQUESTS // SCRAPES) == 0:
                scrapes.append(await scrape(http, admin))
        assert len(scrapes) == SCRAPES

        # All sent: the sum shows them all once the other worker has written its next snapshot.
        def counted_all(series: Series) -> bool:
            return (
                total(series, "http_server_request_duration_seconds_count", http_route=GET_ROUTE) == REQUESTS
            )

        settled = await until(http, admin, counted_all, f"{REQUESTS} requests in the view")
        scrapes.append(settled)
        for _ in range(3):
            scrapes.append(await scrape(http, admin))

        # Every counter series, in every scrape, at least what the scrape before showed.
        async with http.get(f"{admin}/metrics") as response:
            kinds = parse(await response.text())[1]
        counters = {name for name, kind in kinds.items() if kind in ("counter", "histogram")}
        for before, after in itertools.pairwise(scrapes):
            for key, value in before.items():
                if key[0] in counters and not key[0].endswith("_created"):
                    assert after.get(key, 0.0) >= value, f"{key} went from {value} to {after.get(key)}"
        assert (
            total(scrapes[-1], "http_server_request_duration_seconds_count", http_route=GET_ROUTE) == REQUESTS
        )

        # Both workers answered requests (so the view above is a sum), each in its own snapshot.
        deadline = time.monotonic() + VIEW_TIMEOUT_S
        answered = answered_by_worker(directory)
        while sum(answered) != REQUESTS:
            assert time.monotonic() < deadline, answered
            await asyncio.sleep(0.2)
            answered = answered_by_worker(directory)
        assert len(answered) == 2 and all(answered), answered

        # serve's REST calls are no gRPC calls; a call through the gRPC server is one.
        latest = scrapes[-1]
        assert total(latest, "grpc_server_started_total") == 0
        assert total(latest, "grpc_server_handled_total") == 0
        await grpc_get_order(grpc_port)

        def counted_the_call(series: Series) -> bool:
            return total(series, "grpc_server_handled_total", grpc_method="GetOrder", grpc_code="OK") == 1

        latest = await until(http, admin, counted_the_call, "the gRPC call in the view")
        labels = {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "GetOrder"}
        assert total(latest, "grpc_server_started_total", **labels) == 1
        assert total(latest, "grpc_server_handled_total", **labels, grpc_code="OK") == 1
        assert total(latest, "grpc_server_handling_seconds_count", **labels) == 1
        rest = {"http_request_method": "GET", "http_route": GET_ROUTE, "http_response_status_code": "200"}
        assert total(latest, "http_server_request_duration_seconds_count", **rest) == REQUESTS

        # The names the contract lists, with their labels, and the process and GC collectors'.
        names = {name for name, _ in latest}
        for name in (
            "grpc_server_started_total",
            "grpc_server_handled_total",
            "grpc_server_handling_seconds_bucket",
            "http_server_request_duration_seconds_bucket",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "python_gc_collections_total",
        ):
            assert name in names, name
        for name, labelnames in (
            ("grpc_server_handled_total", {"grpc_type", "grpc_service", "grpc_method", "grpc_code"}),
            ("grpc_server_handling_seconds_count", {"grpc_type", "grpc_service", "grpc_method"}),
            (
                "http_server_request_duration_seconds_count",
                {"http_request_method", "http_route", "http_response_status_code"},
            ),
        ):
            assert all({k for k, _ in labels_} == labelnames for n, labels_ in latest if n == name), name
        assert not any(name.startswith("hypertrack_gateway_grpc") for name in names)
    finally:
        assert gateway.stop() == 0
    assert metrics_directories(tmp_path) == []  # the run's snapshots go with the run


async def test_the_admin_port_takes_the_ops_routes_off_the_public_port(tmp_path: Path) -> None:
    gateway = GatewayProcess.start(
        ["serve", "--database", f"sqlite:///{tmp_path / 'orders.db'}", "--demo", "--admin-port", "0"],
        cwd=tmp_path,
        env={"HYPERTRACK_GATEWAY_HTTP_PORT": "0", "HYPERTRACK_GATEWAY_GRPC_PORT": "0"},
    )
    admin = f"http://127.0.0.1:{admin_port_of(gateway)}"
    try:
        async with aiohttp.ClientSession() as http:
            for path in ADMIN_PATHS:
                async with http.get(f"{gateway.rest_url}{path}") as response:
                    assert response.status == 404, path
                    assert (await response.json())["detail"] == {}
                async with http.get(f"{admin}{path}") as response:
                    assert response.status == 200, path
            for path in ("/openapi.json", "/docs", "/orders/order-1"):
                async with http.get(f"{admin}{path}", headers=DEMO_AUTH) as response:
                    assert response.status == 404, path
                    assert response.headers["X-Request-ID"]
            async with http.get(f"{gateway.rest_url}/openapi.json") as response:
                document = await response.json()
            assert not set(ADMIN_PATHS) & set(document["paths"])
            assert {"/openapi.json", "/docs"} <= set(document["paths"])
            async with http.get(f"{gateway.rest_url}/docs") as response:
                assert response.status == 200
            async with http.get(f"{admin}/readyz") as response:
                assert (await response.json())["checks"] == {"database": True, "grpc_backend": True}
    finally:
        assert gateway.stop() == 0


async def test_grpc_alone_gets_its_metrics_and_health_on_the_admin_port(tmp_path: Path) -> None:
    grpc_port, admin_port = free_port(), free_port()
    gateway = GatewayProcess.start(
        [
            "grpc",
            "--database",
            f"sqlite:///{tmp_path / 'orders.db'}",
            "--demo",
            "--grpc-port",
            str(grpc_port),
            "--admin-port",
            str(admin_port),
        ],
        cwd=tmp_path,
    )
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        assert admin_port_of(gateway) == admin_port
        await grpc_get_order(grpc_port)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{admin}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{admin}/readyz") as response:
                assert (await response.json()) == {"status": "ready", "checks": {"database": True}}
            series = await scrape(http, admin)
        labels = {"grpc_service": SERVICE_NAME, "grpc_method": "GetOrder", "grpc_code": "OK"}
        assert total(series, "grpc_server_handled_total", **labels) == 1
        assert total(series, "hypertrack_gateway_store_operation_duration_seconds_count") >= 1
        assert total(series, "http_server_request_duration_seconds_count") == 0  # no REST here
    finally:
        assert gateway.stop() == 0


class _Assets(HTMLParser):
    """The URLs a page loads: scripts, stylesheets, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.urls.append(str(found["src"]))
        if tag == "link" and found.get("href"):
            self.urls.append(str(found["href"]))


async def test_the_docs_page_loads_everything_from_the_server_itself(tmp_path: Path) -> None:
    async with GatewayStack.start(tmp_path) as stack, aiohttp.ClientSession() as http:
        page_url = f"{stack.rest_url}/docs"
        async with http.get(page_url) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            page = await response.text()
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "style-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "<script>" not in page  # no inline script: the policy would refuse it
        parser = _Assets()
        parser.feed(page)
        assert len(parser.urls) >= 3
        loaded: dict[str, tuple[str, bytes]] = {}
        for url in parser.urls:
            # Relative, so that the page works behind a proxy that serves the gateway under a prefix.
            assert not urlsplit(url).netloc and not url.startswith("/"), url
            async with http.get(urljoin(page_url, url)) as response:
                assert response.status == 200, url
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                loaded[url] = (response.content_type, await response.read())
        types = {url.rsplit(".", 1)[1]: content_type for url, (content_type, _) in loaded.items()}
        assert types == {"css": "text/css", "png": "image/png", "js": "text/javascript"}
        # The starting script reads the document from beside the page.
        (start,) = [body for url, (_, body) in loaded.items() if url.endswith("start.js")]
        spec = re.search(rb'url: "([^"]+)"', start)
        assert spec is not None
        async with http.get(urljoin(page_url, spec.group(1).decode())) as response:
            assert response.status == 200
            document = await response.json()
        assert [server["url"] for server in document["servers"]] == ["."]
        # The bundle comes compressed to a client that takes gzip.
        async with http.get(f"{stack.rest_url}/docs/swagger-ui-bundle.js") as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert len(await response.read()) > 100_000
