"""Security: how credentials are kept and compared, what one account can learn of another's orders,
what reaches the logs and the error bodies, TLS on both surfaces, and the limits as the command line
configures them.

The limits themselves (token bucket, lock-out, RetryInfo) are tested in tests/e2e/test_limits.py, the
cross-account NOT_FOUND of each gRPC call in tests/e2e/test_grpc_api.py, the 401 bodies in
tests/e2e/test_rest_api.py; here: what those leave out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import requests
from multidict import CIMultiDictProxy

from gateway.calls.auth import Authenticator
from gateway.demo import DEMO_ACCOUNT, DEMO_SECRET
from gateway.domain.errors import Unauthenticated
from gateway.protos import order_pb2, orders_service_pb2
from gateway.rpc.status import details_from_metadata, error_info
from gateway.rpc.stubs import orders_service_grpc
from gateway.testing import GatewayStack, basic
from tests.processes import GatewayProcess, executable
from tests.reliability.certs import Pki, make_pki
from tests.reliability.rawhttp import RawConnection, contract_error, request

pb = orders_service_pb2
EPHEMERAL_PORTS = ["--http-port", "0", "--grpc-port", "0"]
GEOMETRY = {"type": "Point", "coordinates": [-122.4194, 37.7749]}
GENERIC_500 = b'{"detail":{"reason":"INTERNAL"},"message":"internal error; the failure was logged"}'
TIMING_ROUNDS = 300
AUTHENTICATOR_ROUNDS = 3000
MAX_TIMING_DIFFERENCE = 0.25


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def call(
    http: aiohttp.ClientSession,
    stack: GatewayStack,
    method: str,
    path: str,
    headers: Mapping[str, str],
    *,
    body: object = None,
) -> Reply:
    async with http.request(
        method, stack.rest_url + path, headers=headers, json=body if body is not None else None
    ) as response:
        return Reply(response.status, response.headers, await response.read())


def relative_difference(a: float, b: float) -> float:
    return abs(a - b) / min(a, b)


# --- credentials ---------------------------------------------------------------------------------


def create_account(directory: Path, database: Path, account_id: str) -> str:
    """`hypertrack-gateway accounts create`: the secret it prints."""
    created = subprocess.run(
        [executable(), "accounts", "create", "--database", f"sqlite:///{database}", account_id],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed_account, secret = created.stdout.strip().split(":", 1)
    assert printed_account == account_id
    return secret


def database_bytes(directory: Path, name: str) -> bytes:
    """The SQLite database file with its WAL and shared-memory files."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob(f"{name}*")))


def test_an_account_created_by_the_command_is_stored_as_a_sha256_digest_only(tmp_path: Path) -> None:
    database = tmp_path / "orders.db"
    account_id = "acme"
    secret = create_account(tmp_path, database, account_id)
    with sqlite3.connect(database) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(accounts)")]
        rows = db.execute("SELECT * FROM accounts").fetchall()
    assert len(rows) == 1
    stored = dict(zip(columns, rows[0], strict=True))
    assert stored["account_id"] == account_id == "acme"
    digest = stored["secret_hash"]
    assert isinstance(digest, bytes) and len(digest) == 32
    assert digest == hashlib.sha256(secret.encode()).digest()
    assert [name for name, value in stored.items() if secret in str(value)] == []
    everything = database_bytes(tmp_path, "orders.db")
    assert secret.encode() not in everything
    assert base64.b64encode(f"{account_id}:{secret}".encode()) not in everything


async def test_the_demo_account_is_stored_as_a_digest_only(tmp_path: Path) -> None:
    async with GatewayStack.start(tmp_path) as stack:
        assert (
            await stack.store.account_secret_hash(DEMO_ACCOUNT)
            == hashlib.sha256(DEMO_SECRET.encode()).digest()
        )
    assert DEMO_SECRET.encode() not in database_bytes(tmp_path, "gateway.db")


async def test_unknown_accounts_and_wrong_secrets_run_the_same_comparison(
    stack: GatewayStack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt with well-formed credentials costs one SHA-256 of the presented secret and one
    hmac.compare_digest of two 32-byte digests, whether the account exists or not."""
    compared: list[tuple[int, int]] = []
    real_compare = hmac.compare_digest

    def counting_compare(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr("gateway.calls.credentials.hmac.compare_digest", counting_compare)
    other = await stack.create_account("rival")
    attempts = {
        "unknown account": (basic("nobody", DEMO_SECRET), 401),
        "wrong secret": (basic(DEMO_ACCOUNT, "not-the-secret"), 401),
        "empty secret": (basic(DEMO_ACCOUNT, ""), 401),
        "another account's secret": (basic(DEMO_ACCOUNT, other[1]), 401),
        "right secret": (basic(DEMO_ACCOUNT, DEMO_SECRET), 200),
    }
    for name, (authorization, status) in attempts.items():
        compared.clear()
        reply = await call(http, stack, "GET", "/orders/order-3", {"Authorization": authorization})
        assert reply.status == status, name
        assert compared == [(32, 32)], name
    # And below the transports, the authenticator itself (no cache: the store is asked every time).
    authenticator = Authenticator(stack.store, cache_seconds=0)
    for name, (authorization, status) in attempts.items():
        compared.clear()
        try:
            await authenticator.authenticate(authorization)
        except Unauthenticated:
            assert status == 401, name
        assert compared == [(32, 32)], name


async def interleaved_medians(
    attempts: Mapping[str, Callable[[], Awaitable[object]]], rounds: int
) -> dict[str, float]:
    """Median seconds of each attempt, run in turns (so that drift in the machine's load hits all)."""
    samples: dict[str, list[float]] = {name: [] for name in attempts}
    for _ in range(rounds):
        for name, attempt in attempts.items():
            started = time.perf_counter()
            await attempt()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


async def test_unknown_accounts_and_wrong_secrets_take_the_same_time(tmp_path: Path) -> None:
    async with GatewayStack.start(tmp_path) as stack, aiohttp.ClientSession() as http:
        url = f"{stack.rest_url}/orders/order-3"

        def attempt(authorization: str) -> Callable[[], Awaitable[object]]:
            async def send() -> object:
                async with http.get(url, headers={"Authorization": authorization}) as response:
                    assert response.status == 401
                    return await response.read()

            return send

        unknown, wrong = attempt(basic("nobody", DEMO_SECRET)), attempt(basic(DEMO_ACCOUNT, "not-the-secret"))
        await interleaved_medians({"unknown": unknown, "wrong": wrong}, 20)  # warm up
        rest = await interleaved_medians({"unknown": unknown, "wrong": wrong}, TIMING_ROUNDS)

        def direct(authenticator: Authenticator, authorization: str) -> Callable[[], Awaitable[object]]:
            async def check() -> object:
                try:
                    return await authenticator.authenticate(authorization)
                except Unauthenticated:
                    return None

            return check

        figures = {"REST": rest}
        for label, cache_seconds in (("authenticator, cached", 5.0), ("authenticator, no cache", 0.0)):
            authenticator = Authenticator(stack.store, cache_seconds=cache_seconds)
            figures[label] = await interleaved_medians(
                {
                    "unknown": direct(authenticator, basic("nobody", DEMO_SECRET)),
                    "wrong": direct(authenticator, basic(DEMO_ACCOUNT, "not-the-secret")),
                },
                AUTHENTICATOR_ROUNDS,
            )
    print()
    for label, medians in figures.items():
        difference = relative_difference(medians["unknown"], medians["wrong"])
        print(
            f"{label}: median unknown account {medians['unknown'] * 1e6:.1f} us, "
            f"wrong secret {medians['wrong'] * 1e6:.1f} us, difference {difference:.1%}"
        )
    for label, medians in figures.items():
        assert relative_difference(medians["unknown"], medians["wrong"]) < MAX_TIMING_DIFFERENCE, (
            label,
            medians,
        )


# --- one account, another's orders ---------------------------------------------------------------


def track_body(handle: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "worker_handle": "w",
        "track_mode": "flex",
        "orders": [{"order_handle": handle, "destination": {"geometry": GEOMETRY}, "metadata": metadata}],
    }


TARGETED = [("GET", ""), ("POST", "/cancel"), ("POST", "/complete"), ("POST", "/disable")]
QUERIES = ["", "?type=drop", "?type=pick&type_index=0&fulfillment_attempt=0"]
# The demo account's orders in every state an answer could tell apart: open (order-3), two legs (order-2,
# ambiguous to its owner), completed (order-4: 409 to its owner's cancel) and disabled (order-5).
FOREIGN = ["order-3", "order-2", "order-4", "order-5"]
MISSING = "order-9"  # as long as those: the bodies may be compared byte for byte


async def demo_orders(http: aiohttp.ClientSession, stack: GatewayStack) -> dict[str, bytes]:
    legs = [f"/orders/{h}" for h in FOREIGN if h != "order-2"] + [
        "/orders/order-2?type=pick",
        "/orders/order-2?type=drop",
    ]
    return {path: (await call(http, stack, "GET", path, stack.rest_auth())).body for path in legs}


async def test_every_call_on_another_accounts_order_is_a_404_like_a_missing_order(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    demo = stack.rest_auth()
    assert (await call(http, stack, "POST", "/orders/order-4/complete", demo)).status == 200
    assert (await call(http, stack, "POST", "/orders/order-5/disable", demo)).status == 200
    before = await demo_orders(http, stack)
    rival = stack.rest_auth(*await stack.create_account("rival"))
    compared = 0
    for method, action in TARGETED:
        for query in QUERIES:
            body = {"metadata": {"taken": True}} if method == "POST" else None
            missing = await call(http, stack, method, f"/orders/{MISSING}{action}{query}", rival, body=body)
            assert missing.status == 404, missing.body
            for handle in FOREIGN:
                theirs = await call(http, stack, method, f"/orders/{handle}{action}{query}", rival, body=body)
                where = (method, handle, action, query)
                assert theirs.status == 404, where
                assert theirs.body == missing.body.replace(MISSING.encode(), handle.encode()), where
                assert theirs.headers["Content-Type"] == missing.headers["Content-Type"], where
                assert theirs.headers["Content-Length"] == missing.headers["Content-Length"], where
                assert json.loads(theirs.body)["detail"] == {
                    "reason": "ORDER_NOT_FOUND",
                    "order_handle": handle,
                }
                compared += 1
    assert compared == len(TARGETED) * len(QUERIES) * len(FOREIGN)
    assert await demo_orders(http, stack) == before  # untouched, to the byte

    async def foreign() -> object:
        return await call(http, stack, "GET", "/orders/order-3", rival)

    async def absent() -> object:
        return await call(http, stack, "GET", f"/orders/{MISSING}", rival)

    medians = await interleaved_medians({"foreign": foreign, "missing": absent}, TIMING_ROUNDS // 3)
    print(
        f"\nGET of another account's order {medians['foreign'] * 1e6:.0f} us, of a missing one "
        f"{medians['missing'] * 1e6:.0f} us ({relative_difference(*medians.values()):.1%})"
    )
    assert relative_difference(medians["foreign"], medians["missing"]) < MAX_TIMING_DIFFERENCE, medians


async def test_two_accounts_tracking_one_handle_get_two_independent_orders(
    stack: GatewayStack, http: aiohttp.ClientSession
) -> None:
    demo = stack.rest_auth()
    rival = stack.rest_auth(*await stack.create_account("rival"))
    mine = await call(
        http, stack, "POST", "/orders/track", demo, body=track_body("shared-1", {"owner": "demo"})
    )
    theirs = await call(
        http, stack, "POST", "/orders/track", rival, body=track_body("shared-1", {"owner": "rival"})
    )
    assert (mine.status, theirs.status) == (201, 201)
    my_order, their_order = json.loads(mine.body)["orders"][0], json.loads(theirs.body)["orders"][0]
    assert my_order["fulfillment_attempt"] == their_order["fulfillment_attempt"] == 0
    assert my_order["route_handle"] != their_order["route_handle"]
    assert my_order["share_url"] != their_order["share_url"]
    cancelled = await call(http, stack, "POST", "/orders/shared-1/cancel", rival)
    assert json.loads(cancelled.body)["status"] == "cancelled"
    read = json.loads((await call(http, stack, "GET", "/orders/shared-1", demo)).body)
    assert (read["status"], read["metadata"]) == ("ongoing", {"owner": "demo"})
    assert read == my_order
    completed = await call(http, stack, "POST", "/orders/shared-1/complete", demo)
    assert json.loads(completed.body)["status"] == "completed"
    read = json.loads((await call(http, stack, "GET", "/orders/shared-1", rival)).body)
    assert (read["status"], read["metadata"]) == ("cancelled", {"owner": "rival"})


def grpc_request(method: str, handle: str, variant: int) -> Any:
    fields: dict[str, Any] = [{}, {"type": 2}, {"type": 1, "type_index": 0, "fulfillment_attempt": 0}][
        variant
    ]
    if method != "GetOrder":
        fields["update"] = pb.OrderUpdate()
        fields["update"].metadata.members.add(key="taken").value.bool_value = True
    return getattr(pb, f"{method}Request")(order_handle=handle, **fields)


async def test_every_grpc_call_on_another_accounts_order_fails_like_a_missing_order(
    grpc_stack: GatewayStack,
) -> None:
    """NOT_FOUND with the same message and, byte for byte, the same google.rpc.Status as a missing order."""
    stub = grpc_stack.stub()
    demo = grpc_stack.grpc_auth()
    await stub.CompleteOrder(pb.CompleteOrderRequest(order_handle="order-4"), metadata=demo)
    await stub.DisableOrder(pb.DisableOrderRequest(order_handle="order-5"), metadata=demo)
    legs = [
        pb.GetOrderRequest(order_handle="order-3"),
        pb.GetOrderRequest(order_handle="order-4"),
        pb.GetOrderRequest(order_handle="order-5"),
        pb.GetOrderRequest(order_handle="order-2", type=order_pb2.ORDER_TYPE_PICK),
        pb.GetOrderRequest(order_handle="order-2", type=order_pb2.ORDER_TYPE_DROP),
    ]
    before = [await stub.GetOrder(leg, metadata=demo) for leg in legs]
    rival = grpc_stack.grpc_auth(*await grpc_stack.create_account("rival"))

    async def failure(method: str, handle: str, variant: int) -> tuple[grpc.StatusCode, str, bytes]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, method)(grpc_request(method, handle, variant), metadata=rival)
        error = caught.value
        raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
        assert isinstance(raw, bytes)
        return error.code(), error.details() or "", raw

    for method in ("GetOrder", "CancelOrder", "CompleteOrder", "DisableOrder"):
        for variant in range(3):
            missing = await failure(method, MISSING, variant)
            assert missing[0] == grpc.StatusCode.NOT_FOUND
            for handle in FOREIGN:
                code, message, details = await failure(method, handle, variant)
                assert code == grpc.StatusCode.NOT_FOUND, (method, handle)
                assert message == missing[1].replace(MISSING, handle), (method, handle)
                assert details == missing[2].replace(MISSING.encode(), handle.encode()), (method, handle)
                info = error_info(details_from_metadata((("grpc-status-details-bin", details),)))
                assert info is not None and info.reason == "ORDER_NOT_FOUND"
    after = [await stub.GetOrder(leg, metadata=demo) for leg in legs]
    assert after == before


# --- what reaches the logs and the error bodies --------------------------------------------------


CANARY_ACCOUNT = "canary-account-0b7e"
CANARY_SECRET = "canary-secret-S3CR3T-7f3a9e"
CANARY_TOKEN = "canary-token-51c0d2"
CANARY_BINARY = b"canary-binary-e8d1\x00\xff"


def canaries(*secrets: str) -> list[str]:
    """Each secret, and the Basic tokens that carry it."""
    found = [CANARY_TOKEN, CANARY_BINARY[:18].decode(), base64.b64encode(CANARY_BINARY).decode()]
    for secret in (CANARY_SECRET, *secrets):
        found.append(secret)
        for account in (DEMO_ACCOUNT, CANARY_ACCOUNT, "rival"):
            found.append(base64.b64encode(f"{account}:{secret}".encode()).decode())
    return found


def assert_no_canary(texts: list[str], secrets: list[str]) -> None:
    leaked = [(secret, text[:300]) for text in texts for secret in secrets if secret in text]
    assert leaked == []


def rest_authorizations(rival_secret: str) -> list[str]:
    return [
        basic("rival", rival_secret),  # right
        basic(DEMO_ACCOUNT, CANARY_SECRET),  # wrong secret
        basic(CANARY_ACCOUNT, CANARY_SECRET),  # unknown account
        f"Basic {CANARY_SECRET}",  # not base64
        f"Bearer {CANARY_SECRET}",
    ]


CUSTOM_HEADERS = {
    "X-Secret-Token": CANARY_TOKEN,
    "X-Api-Key": CANARY_TOKEN,
    "Cookie": f"session={CANARY_TOKEN}",
}
REST_CALLS: list[tuple[str, str, object]] = [
    ("GET", "/orders/order-3", None),
    ("GET", "/orders/no-such-order", None),
    ("POST", "/orders/order-3/cancel?type=parcel", {"metadata": {}}),
    ("POST", "/orders/order-2/complete", None),
    ("POST", "/orders/track", {"worker_handle": "w"}),
    ("DELETE", "/orders/order-3", None),
    ("GET", "/no-such-route", None),
]


async def exercise_rest(port: int, rival_secret: str) -> list[str]:
    """Every REST call with every kind of credentials and the custom headers, plus requests the HTTP
    parser refuses whose offending line holds a secret; what the server answered."""
    answers: list[str] = []
    async with aiohttp.ClientSession() as http:
        for authorization in rest_authorizations(rival_secret):
            for method, path, body in REST_CALLS:
                headers = {"Authorization": authorization, **CUSTOM_HEADERS}
                async with http.request(
                    method, f"http://127.0.0.1:{port}{path}", headers=headers, json=body
                ) as response:
                    answers.append(f"{dict(response.headers)} {await response.text()}")
    token = basic(DEMO_ACCOUNT, CANARY_SECRET).encode()
    malformed: list[list[tuple[str, str | bytes]]] = [
        [("Authorization", token), ("X-Secret-Token", CANARY_TOKEN.encode() + b"\x01")],
        [("Authorization", token + b"\x01")],
        [("Authorization", token), ("X-Filler", CANARY_TOKEN + "x" * 9000)],
        [("Authorization", token), (f"Bad Name {CANARY_TOKEN}", "v")],
    ]
    for bad in malformed:
        async with await RawConnection.open(port) as connection:
            await connection.send(request("GET", "/orders/order-3", headers=bad))
            answer = await connection.response()
            contract_error(answer, 400)
            answers.append(f"{dict(answer.headers)} {answer.body!r}")
    return answers


async def exercise_grpc(target: str, rival_secret: str) -> list[str]:
    """Every gRPC call with right, wrong and unknown credentials and custom metadata; what came back."""
    answers: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = orders_service_grpc.OrdersServiceStub(channel)  # type: ignore[no-untyped-call]
        for authorization in rest_authorizations(rival_secret):
            metadata = (
                ("authorization", authorization),
                ("x-secret-token", CANARY_TOKEN),
                ("x-api-key-bin", CANARY_BINARY),
            )
            for method, message in (
                ("GetOrder", pb.GetOrderRequest(order_handle="order-3")),
                ("GetOrder", pb.GetOrderRequest(order_handle="a\nb")),
                ("CancelOrder", pb.CancelOrderRequest(order_handle="no-such-order")),
                ("TrackOrders", pb.TrackOrdersRequest()),
            ):
                try:
                    answers.append(str(await getattr(stub, method)(message, metadata=metadata)))
                except grpc.aio.AioRpcError as error:
                    answers.append(f"{error.code()} {error.details()} {error.trailing_metadata()!r}")
    return answers


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    """All a log record holds: its message, its exception, and every attribute."""
    formatter = logging.Formatter()
    texts = []
    for record in records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
        texts.append(repr(record.__dict__))
    return texts


async def test_credentials_and_metadata_never_reach_logs_or_answers_in_process(
    stack: GatewayStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, rival_secret = await stack.create_account("rival")
    answers = await exercise_rest(stack.rest_server.port, rival_secret)
    answers += await exercise_grpc(stack.grpc_target, rival_secret)
    records = record_texts(caplog.records)
    assert len(records) > 0 and len(answers) > 50
    assert any("refused a malformed request" in text for text in records)  # the log was captured
    assert_no_canary(records + answers, canaries(rival_secret))


async def test_credentials_and_metadata_never_reach_the_logs_of_the_program(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'orders.db'}"
    rival_secret = create_account(tmp_path, tmp_path / "orders.db", "rival")
    gateway = GatewayProcess.start(
        [
            "serve",
            *EPHEMERAL_PORTS,
            "--database",
            database,
            "--demo",
            "--log-level",
            "debug",
            "--auth-failure-limit",
            "0",
        ],
        cwd=tmp_path,
    )
    try:
        answers = await exercise_rest(gateway.http_port, rival_secret)
        answers += await exercise_grpc(f"127.0.0.1:{gateway.grpc_port}", rival_secret)
    finally:
        assert gateway.stop() == 0
    assert any('"level":"debug"' in line for line in gateway.stderr_lines)  # debug logging was on
    assert any('"message":"request"' in line for line in gateway.stderr_lines)  # and the access log
    assert_no_canary(gateway.stderr_lines + gateway.banner + answers, canaries(rival_secret))


async def test_an_internal_failure_is_answered_without_its_insides(
    stack: GatewayStack,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inside = (
        "SELECT body FROM orders failed at /work/main/gateway/store/sqlite.py:123 (secret-internal-detail)"
    )

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(inside)

    for operation in ("read_records", "change_order", "track_orders"):
        monkeypatch.setattr(stack.store, operation, broken)
    demo = stack.rest_auth()
    bodies = []
    for method, path, body in [
        ("GET", "/orders/order-3", None),
        ("POST", "/orders/order-3/cancel", {"metadata": {"a": 1}}),
        ("POST", "/orders/track", track_body("t-1", {})),
    ]:
        reply = await call(http, stack, method, path, demo, body=body)
        assert reply.status == 500, reply.body
        assert reply.headers["Content-Type"] == "application/json" and reply.headers["X-Request-ID"]
        bodies.append(reply.body)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub().GetOrder(pb.GetOrderRequest(order_handle="order-3"), metadata=stack.grpc_auth())
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error; the failure was logged"
    info = error_info(details_from_metadata(caught.value.trailing_metadata()))
    assert info is not None and (info.reason, dict(info.metadata)) == ("INTERNAL", {})

    # A failure in the REST front end itself, after the call: the same answer.
    monkeypatch.setattr("gateway.rest.app.encode_json", broken_encoder(inside))
    monkeypatch.delattr(stack.store, "read_records")  # the store works again
    reply = await call(http, stack, "GET", "/orders/order-3", demo)
    assert reply.status == 500
    bodies.append(reply.body)

    assert bodies == [GENERIC_500] * 4
    grpc_text = f"{caught.value.details()} {caught.value.trailing_metadata()!r}"
    for text in [*(b.decode() for b in bodies), grpc_text]:
        for insider in ("Traceback", "RuntimeError", "secret-internal-detail", ".py", "/work", "SELECT"):
            assert insider not in text, text
    # What the caller is told is true: the failure, with its cause, is in the log.
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(logged) >= 4
    assert all(
        "secret-internal-detail" in logging.Formatter().formatException(r.exc_info)
        for r in logged
        if r.exc_info
    )


def broken_encoder(message: str) -> Callable[[object], bytes]:
    def encode(value: object) -> bytes:
        raise RuntimeError(message)

    return encode


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def grpc_channel(port: int, pki: Pki, *, client: str | None = "client") -> grpc.Channel:
    """A TLS channel trusting the test CA, presenting `pki.client` (or `pki.stranger`, or nothing)."""
    pair = {"client": pki.client, "stranger": pki.stranger}.get(client or "")
    credentials_ = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(),
        pair.key.read_bytes() if pair else None,
        pair.cert.read_bytes() if pair else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials_)


def get_order(channel: grpc.Channel, handle: str = "order-3") -> Any:
    stub = orders_service_grpc.OrdersServiceStub(channel)  # type: ignore[no-untyped-call]
    return stub.GetOrder(
        pb.GetOrderRequest(order_handle=handle),
        metadata=(("authorization", basic(DEMO_ACCOUNT, DEMO_SECRET)),),
        timeout=10,
    ).order


def grpc_refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        get_order(channel)
    code: grpc.StatusCode = caught.value.code()
    return code


def mutual_tls_server_args(tmp_path: Path, pki: Pki) -> list[str]:
    """A server on its own database, serving `pki.server` and asking clients for a certificate of the CA."""
    return [
        "--database",
        f"sqlite:///{tmp_path / 'orders.db'}",
        "--demo",
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--tls-client-ca",
        str(pki.ca),
    ]


@pytest.fixture
def tls_gateway(tmp_path: Path, pki: Pki) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess.start(
        ["serve", *EPHEMERAL_PORTS, *mutual_tls_server_args(tmp_path, pki)], cwd=tmp_path
    )
    try:
        yield gateway
    finally:
        assert gateway.stop() == 0


def test_serve_with_tls_answers_https_and_mutual_tls_grpc_only(tls_gateway: GatewayProcess, pki: Pki) -> None:
    assert any(f"https://127.0.0.1:{tls_gateway.http_port}" in line for line in tls_gateway.banner)
    url = f"https://127.0.0.1:{tls_gateway.http_port}"
    demo = {"Authorization": basic(DEMO_ACCOUNT, DEMO_SECRET)}
    cancelled = requests.post(f"{url}/orders/order-3/cancel", headers=demo, verify=str(pki.ca), timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with pytest.raises(requests.exceptions.SSLError):  # a certificate it cannot vouch for is refused
        requests.get(f"{url}/healthz", timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP gets no answer
        requests.get(f"http://127.0.0.1:{tls_gateway.http_port}/orders/order-3", headers=demo, timeout=10)
    with socket.create_connection(("127.0.0.1", tls_gateway.http_port), timeout=10) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not plain.recv(1024).startswith(b"HTTP/")

    with grpc_channel(tls_gateway.grpc_port, pki) as channel:
        assert get_order(channel).status == order_pb2.ORDER_STATUS_CANCELLED  # the REST cancel, over gRPC
    for client in (None, "stranger"):
        with grpc_channel(tls_gateway.grpc_port, pki, client=client) as channel:
            assert grpc_refused(channel) == grpc.StatusCode.UNAVAILABLE, client
    with grpc.insecure_channel(f"127.0.0.1:{tls_gateway.grpc_port}") as channel:
        assert grpc_refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_a_rest_front_end_reaches_its_grpc_servers_over_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    backend = GatewayProcess.start(
        ["grpc", "--grpc-port", "0", *mutual_tls_server_args(tmp_path, pki)], cwd=tmp_path
    )
    started = [backend]
    try:
        target = f"127.0.0.1:{backend.grpc_port}"
        tls = ["--backend-ca", str(pki.ca)]
        client = ["--backend-cert", str(pki.client.cert), "--backend-key", str(pki.client.key)]
        front = GatewayProcess.start(
            ["http", "--http-port", "0", "--backend", target, *tls, *client], cwd=tmp_path
        )
        started.append(front)
        without_certificate = GatewayProcess.start(
            ["http", "--http-port", "0", "--backend", target, *tls], cwd=tmp_path
        )
        started.append(without_certificate)
        demo = {"Authorization": basic(DEMO_ACCOUNT, DEMO_SECRET)}

        cancelled = requests.post(f"{front.rest_url}/orders/order-3/cancel", headers=demo, timeout=10)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert requests.get(f"{front.rest_url}/readyz", timeout=10).status_code == 200

        refused = requests.get(f"{without_certificate.rest_url}/orders/order-3", headers=demo, timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.json() == {
            "detail": {"reason": "BACKEND_UNAVAILABLE"},
            "message": "the order service is unavailable; retry later",
        }
        assert requests.get(f"{without_certificate.rest_url}/readyz", timeout=10).status_code == 503
    finally:
        for process in reversed(started):
            assert process.stop() == 0


# --- the limits, from the command line -----------------------------------------------------------


def test_the_limits_are_set_from_the_command_line_and_environment(tmp_path: Path) -> None:
    gateway = GatewayProcess.start(
        [
            "serve",
            *EPHEMERAL_PORTS,
            "--database",
            f"sqlite:///{tmp_path / 'orders.db'}",
            "--demo",
            "--rate-limit",
            "0.2",
            "--auth-failure-limit",
            "2",
            "--auth-failure-window",
            "30",
        ],
        cwd=tmp_path,
        env={"HYPERTRACK_GATEWAY_RATE_BURST": "1"},
    )
    try:
        url = f"{gateway.rest_url}/orders/order-3"
        demo = {"Authorization": basic(DEMO_ACCOUNT, DEMO_SECRET)}
        with requests.Session() as http:
            assert http.get(url, headers=demo, timeout=10).status_code == 200
            limited = http.get(url, headers=demo, timeout=10)
            assert limited.status_code == 429
            assert limited.headers["Retry-After"] == "5"  # a token every 5 s
            assert limited.json()["detail"] == {"reason": "RATE_LIMITED", "limit_per_second": "0.2"}
            with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:  # one bucket for both
                assert grpc_refused(channel) == grpc.StatusCode.RESOURCE_EXHAUSTED

            wrong = {"Authorization": basic(DEMO_ACCOUNT, "guess")}
            assert [http.get(url, headers=wrong, timeout=10).status_code for _ in range(2)] == [401, 401]
            locked = http.get(url, headers=demo, timeout=10)
            assert locked.status_code == 429
            assert 1 <= int(locked.headers["Retry-After"]) <= 30
            assert locked.json()["detail"] == {"reason": "TOO_MANY_FAILED_AUTHENTICATIONS"}
    finally:
        assert gateway.stop() == 0
