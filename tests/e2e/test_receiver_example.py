"""The README's webhook receiver (examples/webhook_receiver.py): the README quotes the file as it
is, and what it accepts is exactly what the gateway signs (gateway/events/signing.py), recently."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from gateway.calls.events import order_event
from gateway.demo import reference_order
from gateway.domain import lifecycle
from gateway.events.delivery import delivery_body
from gateway.events.signing import signature_header
from gateway.protos import json_pb2
from gateway.testing import basic
from tests.processes import GatewayProcess, executable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "webhook_receiver.py"
SECRET = "whsec_" + "k" * 43
BODY = b'[{"account_id":"acme","type":"order","data":{"order_handle":"order-1","value":"cancelled"}}]'
NOW = 1_765_095_396


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example()


def test_the_readme_quotes_the_file_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, flags=re.DOTALL | re.MULTILINE)
    assert EXAMPLE.read_text() in blocks


def test_the_readme_example_body_is_what_the_gateway_sends() -> None:
    """The README's example is the demo order's cancel, recorded 2026-03-02T14:05:31.482Z and written
    1.917 ms later, as the delivery worker encodes it (indented for reading)."""
    section = (ROOT / "README.md").read_text().split("## Order events and webhooks\n", 1)[1]
    shown = re.search(r"^```json\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)
    assert shown is not None
    order = reference_order()
    recorded_us = 1_772_460_331_482_000
    assert lifecycle.cancel(order, json_pb2.JsonObject(), recorded_us // 1000)
    event = order_event("acme", order, recorded_us, recorded_us + 1917)
    sent = delivery_body((event.SerializeToString(),))
    # Pairs rather than dicts: the README shows the fields in the order they are sent, too.
    assert json.loads(shown.group(1), object_pairs_hook=list) == json.loads(sent, object_pairs_hook=list)


def test_the_example_uses_nothing_but_the_standard_library() -> None:
    imported = re.findall(r"^(?:from|import) (\w+)", EXAMPLE.read_text(), flags=re.MULTILINE)
    assert set(imported) <= {"hashlib", "hmac", "json", "os", "time", "http"}, imported


def test_the_example_compares_in_constant_time() -> None:
    # A plain `==` on the signature would let an attacker find it byte by byte, by timing.
    source = EXAMPLE.read_text()
    assert "hmac.compare_digest(" in source
    assert not re.search(r"(expected|signature)\S*\s*[!=]=|[!=]=\s*(expected|signature)", source)


def test_what_the_gateway_signs_now_is_accepted(example: ModuleType) -> None:
    header = signature_header(SECRET, BODY)
    assert example.verify(SECRET, header, BODY) is True
    assert example.verify(SECRET, signature_header(SECRET, BODY, timestamp=NOW), BODY, now=NOW) is True


def test_up_to_five_minutes_old_is_accepted_and_older_is_refused(example: ModuleType) -> None:
    for age, accepted in ((0, True), (299, True), (300, True), (301, False), (3600, False)):
        header = signature_header(SECRET, BODY, timestamp=NOW - age)
        assert example.verify(SECRET, header, BODY, now=NOW) is accepted, age
    ahead = signature_header(SECRET, BODY, timestamp=NOW + 3600)
    assert example.verify(SECRET, ahead, BODY, now=NOW) is False


def test_a_tampered_body_is_refused(example: ModuleType) -> None:
    header = signature_header(SECRET, BODY, timestamp=NOW)
    for tampered in (BODY.replace(b"cancelled", b"completed"), BODY + b" ", b"", BODY[:-1]):
        assert example.verify(SECRET, header, tampered, now=NOW) is False


def test_a_wrong_secret_is_refused(example: ModuleType) -> None:
    header = signature_header("whsec_" + "x" * 43, BODY, timestamp=NOW)
    assert example.verify(SECRET, header, BODY, now=NOW) is False
    assert example.verify(SECRET, signature_header("", BODY, timestamp=NOW), BODY, now=NOW) is False


def test_a_signature_moved_to_another_time_is_refused(example: ModuleType) -> None:
    signed = signature_header(SECRET, BODY, timestamp=NOW - 3600)
    moved = re.sub(r"t=\d+", f"t={NOW}", signed)
    assert example.verify(SECRET, moved, BODY, now=NOW) is False


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=,v1=",
        f"t={NOW}",
        "v1=" + "0" * 64,
        f"t=now,v1={'0' * 64}",
        f"v1={'0' * 64},t",
        f"t={NOW},v1=ü{'0' * 63}",
        f"t={10**400},v1={'0' * 64}",
        f"t={'9' * 5000},v1={'0' * 64}",
        "t=1.5e9,v1=" + "0" * 64,
    ],
)
def test_a_malformed_header_is_refused_without_an_error(example: ModuleType, header: str) -> None:
    assert example.verify(SECRET, header, BODY, now=NOW) is False


def serving(handler: Any) -> tuple[HTTPServer, threading.Thread]:
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def stop_serving(server: HTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def receiver(example: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The example's receiver on a loopback port, with SECRET as its secret."""
    monkeypatch.setenv("HYPERTRACK_WEBHOOK_SECRET", SECRET)
    server, thread = serving(example.Receiver)
    try:
        yield server.server_address[1]
    finally:
        stop_serving(server, thread)


def post(port: int, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/", body=body, headers={"Content-Type": "application/json", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


def cancelled_order_event() -> tuple[bytes, str]:
    """A delivery body as the gateway sends it: the reference order's cancel; and its recorded_at."""
    order = reference_order()
    now_ms = NOW * 1000
    assert lifecycle.cancel(order, json_pb2.JsonObject(), now_ms)
    event = order_event("acme", order, now_ms * 1000, now_ms * 1000 + 417)
    return delivery_body((event.SerializeToString(),)), "2025-12-07T08:16:36.000000Z"


def test_the_receiver_takes_a_signed_delivery_and_refuses_the_rest(
    receiver: int, capsys: pytest.CaptureFixture[str]
) -> None:
    body, recorded_at = cancelled_order_event()
    signed = {"X-HyperTrack-Signature": signature_header(SECRET, body), "X-HyperTrack-Delivery-Id": "d-1"}
    assert post(receiver, body, signed) == 204
    assert capsys.readouterr().out.split() == ["d-1", "order-1", "cancelled", recorded_at]

    stale = signature_header(SECRET, body, timestamp=int(time.time()) - 301)
    assert post(receiver, body, {**signed, "X-HyperTrack-Signature": stale}) == 401
    assert post(receiver, body.replace(b"order-1", b"order-2"), signed) == 401
    wrong = signature_header("whsec_" + "x" * 43, body)
    assert post(receiver, body, {**signed, "X-HyperTrack-Signature": wrong}) == 401
    assert post(receiver, body, {"X-HyperTrack-Delivery-Id": "d-2"}) == 401
    assert capsys.readouterr().out == ""


async def test_the_readme_flow_from_subscribing_to_a_verified_event(
    example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the README tells it: `webhooks set` to the example receiver, give it the secret printed,
    cancel an order; the receiver verifies what the gateway sends and takes it."""
    answered: queue.Queue[int] = queue.Queue()

    class Told(example.Receiver):
        def send_response(self, code: int, message: str | None = None) -> None:
            super().send_response(code, message)
            answered.put(code)

    server, thread = serving(Told)
    database = f"sqlite:///{tmp_path / 'orders.db'}"
    gateway = GatewayProcess.start(
        ["serve", "--database", database, "--demo", "--http-port", "0", "--grpc-port", "0"], cwd=tmp_path
    )
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hypertrack"
        subscribe = [
            executable(),
            "webhooks",
            "set",
            "--database",
            database,
            "--account",
            "demo",
            "--url",
            url,
        ]
        subscribed = await asyncio.create_subprocess_exec(*subscribe, cwd=tmp_path, stdout=subprocess.PIPE)
        secret, _ = await asyncio.wait_for(subscribed.communicate(), timeout=60)
        assert subscribed.returncode == 0
        monkeypatch.setenv("HYPERTRACK_WEBHOOK_SECRET", secret.decode().strip())
        async with (
            aiohttp.ClientSession(headers={"Authorization": basic("demo", "demo-secret")}) as http,
            http.post(f"{gateway.rest_url}/orders/order-1/cancel", json={}) as response,
        ):
            assert response.status == 200
            cancelled_at = (await response.json())["cancelled_at"]
        assert await asyncio.to_thread(answered.get, timeout=30) == 204
        delivery_id, handle, value, recorded_at = capsys.readouterr().out.split()
        assert (handle, value) == ("order-1", "cancelled") and delivery_id
        assert recorded_at == cancelled_at.removesuffix("Z") + "000Z"
    finally:
        gateway.stop()
        stop_serving(server, thread)
