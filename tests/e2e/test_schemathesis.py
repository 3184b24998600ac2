"""Schemathesis against the live /openapi.json of a running gateway, over both REST backends.

The gateway runs in a background thread with its own event loop (schemathesis is synchronous), and
schemathesis runs as its CLI in a subprocess: every phase (examples, coverage, fuzzing, stateful,
with the API links it infers) and every default check, with the demo credentials, and by itself without
or with wrong ones. Any 5xx, undocumented status, header or content type, or response that contradicts
its schema fails the test, with schemathesis' report (a curl command per failure) as the message.

Two checks are narrowed, each for a reason the document cannot fix (see SCHEMATHESIS_CONFIG):
- positive_data_acceptance is off: the decoder refuses an integer beyond 64 bits in metadata, though
  JSON Schema calls it an integer: a rule of the contract (metadata keeps integers exactly, `1e30`
  stays a float) that no schema can state.
- allow_header_conformance is off for /orders/track only: GET /orders/track is GetOrder of the order
  whose handle is `track` (the http rules overlap), so the server rightly lists GET in `Allow`, while
  OpenAPI matches the literal path first and documents only POST there.

Set HYPERTRACK_SCHEMATHESIS_SEED to explore other seeds; the default one keeps the suite repeatable.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from jsonschema import Draft202012Validator
from schemathesis.checks import CheckFunction, ignored_auth

from gateway.demo import DEMO_ACCOUNT, DEMO_SECRET
from gateway.openapi import openapi_document
from gateway.settings import AdmissionSettings
from gateway.testing import NO_LIMITS, BackendKind, GatewayStack, basic

SEED = int(os.environ.get("HYPERTRACK_SCHEMATHESIS_SEED", "20261130"))
MAX_EXAMPLES = 10  # per operation and phase: ~900 requests per backend, a few seconds
RUN_TIMEOUT_S = 120.0
START_TIMEOUT_S = 30.0
AUTH = {"Authorization": basic(DEMO_ACCOUNT, DEMO_SECRET)}

SCHEMATHESIS_CONFIG = f"""
[generation]
# Credentials come from the security scheme below, not from generated Authorization headers: a
# generated header would be overridden by the configured one, and a case "without credentials" would
# then be sent with them. The ignored_auth check still sends requests without and with wrong ones.
with-security-parameters = false
database = "none"

[auth.openapi.basicAuth]
username = "{DEMO_ACCOUNT}"
password = "{DEMO_SECRET}"

[checks.positive_data_acceptance]
enabled = false

[[operations]]
include-path = "/orders/track"
checks.allow_header_conformance.enabled = false
"""


@dataclass
class LiveGateway:
    """A GatewayStack served from a thread of its own, for synchronous clients."""

    directory: Path
    backend: BackendKind
    admission: AdmissionSettings = NO_LIMITS
    url: str = ""

    def __post_init__(self) -> None:
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="live-gateway")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with GatewayStack.start(
                self.directory, backend=self.backend, admission=self.admission
            ) as stack:
                self._ready.put(stack.rest_url)
                await self._stop.wait()
        except BaseException as error:
            self._ready.put(error)
            raise

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        ready = self._ready.get(timeout=START_TIMEOUT_S)
        if isinstance(ready, BaseException):
            raise RuntimeError("the gateway did not start") from ready
        self.url = ready
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=START_TIMEOUT_S)


@pytest.fixture(scope="module", params=["in-process", "remote"])
def live_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    with LiveGateway(tmp_path_factory.mktemp("gateway"), request.param) as gateway:
        yield gateway


def run_schemathesis(url: str, directory: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`st run` against the document at `url`; its output and its JSON report."""
    config = directory / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    report = directory / "report.json"
    command = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--request-timeout",
        "10",
        "--no-color",
        "--output-sanitize",
        "false",  # the demo credentials are no secret, and the curl commands should replay as they are
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    # In a directory of its own: schemathesis may leave caches behind.
    finished = subprocess.run(
        command, cwd=directory, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    return finished, json.loads(report.read_text()) if report.exists() else {}


def test_the_server_keeps_every_promise_of_its_document(live_gateway: LiveGateway, tmp_path: Path) -> None:
    served = requests.get(f"{live_gateway.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.content == openapi_document()
    operations = sum(len(item) for item in served.json()["paths"].values())

    finished, report = run_schemathesis(live_gateway.url, tmp_path)

    assert finished.returncode == 0, f"schemathesis (seed {SEED}) found problems:\n{finished.stdout[-20000:]}"
    # Guard against a run that passes because it tested nothing.
    # Every operation, but for GET /openapi.json, which schemathesis leaves out when it sees that it is
    # the document's own route (it does not see it through a relative server URL such as ".").
    assert report["operations"]["total"] == report["operations"]["tested"] >= operations - 1
    assert {name: phase["status"] for name, phase in report["phases"].items()} == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
    assert report["test_cases"]["generated"] >= 300
    assert report["failures"] == [] and report["errors"] == []


# Deterministic calls on the demo data, so that the fullest orders (the reference order with its polyline
# and six kinds of events, an order of two legs, a completed and a disabled order) are checked against the
# document whatever the generated cases reach. Cases made by hand get every check schemathesis has for them.


@pytest.fixture(scope="module")
def live_schema(live_gateway: LiveGateway) -> Any:
    return schemathesis.openapi.from_url(f"{live_gateway.url}/openapi.json")


def checked(
    live_schema: Any, path: str, method: str, *, excluded: Sequence[CheckFunction] = (), **case: Any
) -> schemathesis.Response:
    """The response to a case made by hand, after every check that applies to it passed."""
    operation = live_schema[path][method]
    response: schemathesis.Response = operation.Case(
        headers=case.pop("headers", AUTH), **case
    ).call_and_validate(excluded_checks=list(excluded))
    return response


def test_demo_orders_and_their_changes_match_the_document(live_schema: Any) -> None:
    for handle in ("order-1", "order-2", "order-3", "order-4", "order-5"):
        response = checked(
            live_schema, "/orders/{order_handle}", "GET", path_parameters={"order_handle": handle}
        )
        assert response.status_code in (200, 422), response.text  # order-2 has two legs
    leg = checked(
        live_schema,
        "/orders/{order_handle}",
        "GET",
        path_parameters={"order_handle": "order-2"},
        query={"type": "pick", "type_index": 0},
    )
    assert leg.status_code == 200, leg.text
    cancelled = checked(
        live_schema,
        "/orders/{order_handle}/cancel",
        "POST",
        path_parameters={"order_handle": "order-1"},
        body={"metadata": {"reason": "customer", "n": 1}},
        media_type="application/json",
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["timeline"][-1]["type"] == "order_cancelled"
    completed = checked(
        live_schema, "/orders/{order_handle}/complete", "POST", path_parameters={"order_handle": "order-3"}
    )
    assert completed.status_code == 200, completed.text
    disabled = checked(
        live_schema, "/orders/{order_handle}/disable", "POST", path_parameters={"order_handle": "order-4"}
    )
    assert disabled.status_code == 200, disabled.text


def test_failures_match_the_document(live_schema: Any) -> None:
    path = {"order_handle": "order-3"}
    unauthorized = checked(live_schema, "/orders/{order_handle}", "GET", path_parameters=path, headers={})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"] == ['Basic realm="hypertrack-gateway"']
    missing = checked(
        live_schema, "/orders/{order_handle}", "GET", path_parameters={"order_handle": "no-such"}
    )
    assert missing.status_code == 404
    ambiguous = checked(
        live_schema, "/orders/{order_handle}/cancel", "POST", path_parameters={"order_handle": "order-2"}
    )
    assert ambiguous.status_code == 422
    assert set(ambiguous.json()["detail"]) == {"query"}


def test_refusals_of_the_admission_limits_match_the_document(tmp_path: Path) -> None:
    """429 with Retry-After: the account's rate limit, then the address's failed-authentication lock-out."""
    admission = AdmissionSettings(
        rate_limit=0.01, rate_burst=1, auth_failure_limit=1, auth_failure_window_s=60.0
    )
    with LiveGateway(tmp_path, "remote", admission) as gateway:
        schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
        # ignored_auth sends calls of its own with wrong credentials, which would spend the limits.
        check = functools.partial(checked, schema, excluded=[ignored_auth])
        path = {"order_handle": "order-3"}
        assert check("/orders/{order_handle}", "GET", path_parameters=path).status_code == 200
        limited = check("/orders/{order_handle}", "GET", path_parameters=path)
        assert limited.status_code == 429
        assert limited.json()["detail"]["reason"] == "RATE_LIMITED"
        assert int(limited.headers["retry-after"][0]) >= 1
        wrong = {"Authorization": basic(DEMO_ACCOUNT, "wrong")}
        assert check("/orders/track", "POST", headers=wrong, body={}).status_code == 401
        locked = check("/orders/{order_handle}/cancel", "POST", path_parameters=path)
        assert locked.status_code == 429
        assert locked.json()["detail"]["reason"] == "TOO_MANY_FAILED_AUTHENTICATIONS"


def test_integral_floats_are_integers_to_the_document_and_to_the_decoder(
    live_gateway: LiveGateway,
) -> None:
    """`"radius": 100.0` is an integer to JSON Schema, so the document admits it, and so does the server."""
    body = {
        "worker_handle": "w",
        "track_mode": "flex",
        "orders": [
            {
                "order_handle": f"float-radius-{live_gateway.backend}",
                "destination": {"geometry": {"type": "Point", "coordinates": [0, 0]}, "radius": 100.0},
            }
        ],
    }
    document = requests.get(f"{live_gateway.url}/openapi.json", timeout=10).json()
    schema = {"$ref": "#/components/schemas/TrackOrdersRequest", "components": document["components"]}
    assert list(Draft202012Validator(schema).iter_errors(body)) == []
    response = requests.post(f"{live_gateway.url}/orders/track", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 201, response.text
    assert response.json()["orders"][0]["destination"]["radius"] == 100
