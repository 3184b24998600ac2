"""The benchmark harness, in its reduced run: it must keep working, whatever the figures.

`python -m bench --quick` starts every server (a PostgreSQL cluster, grpc-gateway and a webhook
receiver too), seeds, drives wrk, ghz and h2load, drains a backlog of webhook deliveries, measures
memory and the JSON encoders, and prints the table, in seconds. These tests check that every
request of every measurement succeeded, that every event of a subscribed account reached the
receiver, and that the table and the JSON have every row and every ratio; they never check speed.

grpc-gateway is built first, apart (bench/gogateway.py, cached under build/grpcgateway): on a
fresh machine that downloads Go modules and compiles for a minute or two, which the quick run's
own time limit should not have to cover.

The PostgreSQL rows may be missing only where the PostgreSQL binaries are (the benchmark then says
so in a line of its own), and never under HYPERTRACK_REQUIRE_POSTGRES=1, as CI sets it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import gogateway, ratios
from bench.pgserver import MISSING_BINARIES, find_binaries
from bench.suite import FIXED_RATE_VARIANTS, GRPC_GATEWAY_VARIANT, POSTGRES_VARIANTS, QUICK, VARIANTS, Variant
from bench.targets import RATIO_TARGETS
from gateway.protos import order_pb2

REPO = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT_S = 240  # it takes about 50 s on 2 busy cores; this only stops a hang
# The rows whose requests a REST front end passes to gRPC processes: their CPU is measured apart.
SPLIT_CPU_VARIANTS = ("rest-remote", "rest-grpcgateway", "rest-naive", *POSTGRES_VARIANTS)
REQUIRE_POSTGRES_ENV = "HYPERTRACK_REQUIRE_POSTGRES"  # as tests/pg.py reads it
CANCELLED = order_pb2.ORDER_STATUS_CANCELLED


def postgres_rows_expected() -> bool:
    """Whether the quick run must have measured the PostgreSQL rows here."""
    return find_binaries() is not None or os.environ.get(REQUIRE_POSTGRES_ENV, "") == "1"


def expected_variants() -> list[Variant]:
    if postgres_rows_expected():
        return list(VARIANTS)
    return [v for v in VARIANTS if v.key not in POSTGRES_VARIANTS]


@dataclass(frozen=True)
class QuickRun:
    returncode: int
    stdout: str
    stderr: str
    figures: dict[str, Any]
    run_dir: Path


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    workdir = tmp_path_factory.mktemp("bench")
    gogateway.ensure_built()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(workdir / "figures.json"),
         "--out-dir", str(workdir / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S, check=False,
    )  # fmt: skip
    figures_path = workdir / "figures.json"
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    return QuickRun(result.returncode, result.stdout, result.stderr, figures, workdir / "run")


def test_the_quick_run_finishes_and_succeeds(quick: QuickRun) -> None:
    assert quick.returncode == 0, f"python -m bench --quick failed:\n{quick.stdout}\n{quick.stderr[-4000:]}"


def test_every_request_of_every_measurement_succeeded(quick: QuickRun) -> None:
    measurements = quick.figures["measurements"]
    variants = {m["variant"] for m in measurements}
    assert variants == {v.key for v in expected_variants()}, quick.figures.get("postgres_skipped")
    for m in measurements:
        result = m["result"]
        where = f"{m['phase']} {m['variant']} ({result['tool']})"
        assert result["requests"] > 0, f"{where}: no request answered"
        assert result["failures"] == 0, f"{where}: {result['failures']} failed: {result['failure_sample']}"
    assert quick.figures["failures"] == []
    assert "all" in quick.stdout and "succeeded" in quick.stdout


def test_every_kind_of_load_ran(quick: QuickRun) -> None:
    tools = {(m["variant"], m["result"]["tool"]) for m in quick.figures["measurements"]}
    for variant in expected_variants():
        expected = "wrk" if variant.transport == "rest" else "ghz"
        assert (variant.key, expected) in tools
    assert {tool for _, tool in tools} == {"wrk", "ghz", "h2load"}
    # Each product variant got its own pool of orders, and used no more of it than was seeded.
    for m in quick.figures["measurements"]:
        if m["pool"] is not None:
            assert m["result"]["handles_used"] <= m["pool"], m


def test_the_table_has_every_row(quick: QuickRun) -> None:
    table = quick.stdout
    for variant in expected_variants():
        assert table.count(variant.label) >= 1, variant.label
    for key in FIXED_RATE_VARIANTS:
        label = next(v.label for v in VARIANTS if v.key == key)
        assert table.count(label) >= 3, f"{label}: closed loop, fixed rate and target rows"
    for heading in ("Closed loop, full speed", "Fixed rate, half the median maximum", "JSON mapping",
                    "encode_json(order) (ours)", "orjson.dumps", "MessageToJson(order): defaults",
                    "MessageToJson(order, indent=None, preserving_proto_field_name=True)", "Memory of a fresh serve", "at start",
                    "Targets", "answers: the ceilings answer", "the issue measured its naive gateway at 0.14",
                    "req/s over the naive gateway's: embedded (serve) ", "tools: ", "grpc-gateway v2.",
                    "REST rows next to grpc-gateway (Go) -> the same grpc", "webhook subscribed: ",
                    "Webhook delivery to a fast receiver", "a backlog drained by a fresh serve",
                    "the disk's floor under a durable commit", "the disk's fdatasync p99 alone is"):  # fmt: skip
        assert heading in table, heading
    # Every ratio of issue 15's targets table, and issue 14's, with its verdict.
    for spec in ratios.SPECS:
        assert f"] {spec.name}: " in table, spec.name
    assert "cores" in table and "commit" in table and "date" in table


def test_the_postgresql_rows_or_the_reason_they_are_missing(quick: QuickRun) -> None:
    table = quick.stdout
    if postgres_rows_expected():
        assert MISSING_BINARIES not in table
        # The settings measured are named, as the server reported them: durability on.
        assert "postgresql: PostgreSQL " in table
        for setting in ("fsync=on", "synchronous_commit=on", "full_page_writes=on"):
            assert setting in table, setting
        assert "PostgreSQL scaling" in table and "PostgreSQL server's own CPU" in table
    else:
        assert MISSING_BINARIES in table
        assert all(v.label not in table for v in VARIANTS if v.key in POSTGRES_VARIANTS)


def test_the_json_has_every_figure(quick: QuickRun) -> None:
    figures = quick.figures
    assert [row["key"] for row in figures["rows"]] == [v.key for v in expected_variants()]
    for row in figures["rows"]:
        assert set(row["medians"]) == {"rps", "p50_ms", "p99_ms", "cpu_per_1k"}
        assert all(value is not None for value in row["medians"].values()), row
        assert all(value is not None for value in row["ratios"].values()), row
    assert [f["variant"] for f in figures["fixed"]] == list(FIXED_RATE_VARIANTS)
    disk = figures["disk"]
    assert disk["syncs"] == QUICK.disk_syncs and 0 < disk["p50_ms"] <= disk["p99_ms"] <= disk["max_ms"], disk
    assert len(figures["memory"]["checkpoints"]) == QUICK.memory_checkpoints + 1
    encoders = figures["encoders"]
    for name in ("encode_json_us", "orjson_us", "message_to_json_us", "message_to_json_compact_us"):
        assert encoders[name] > 0, name
    # The ceilings answer what the product answers: the same bytes, so the same size.
    assert figures["answer"]["ceiling_json"] == figures["answer"]["product_json"]
    if postgres_rows_expected():
        postgres = figures["postgres"]
        assert postgres["scaling"] is not None and len(postgres["scaling_runs"]) == QUICK.runs
        assert all(value is not None for value in postgres["database_cpu_per_1k"].values())
        assert postgres["server"]["settings"]["fsync"] == "on"
        assert figures["postgres_skipped"] is None
    else:
        assert figures["postgres"] is None and figures["postgres_skipped"] == MISSING_BINARIES
    assert len(figures["targets"]) == len(RATIO_TARGETS) + 1 + 1
    assert figures["environment"]["cores"].isdigit()


def test_the_bounds_ran_every_variant_and_stand_beside_their_targets(quick: QuickRun) -> None:
    bounds = quick.figures["bounds"]
    for transport in ("grpc", "rest"):
        variants = bounds["closed"][transport]
        assert len(variants) == 3 and "bare" in variants
        for name, results in variants.items():
            assert len(results) == QUICK.runs, name
            assert all(r["requests"] > 0 and r["failures"] == 0 for r in results), (transport, name)
        fixed = bounds["fixed"][transport]
        assert len(fixed) == 2 and all(r["requests"] > 0 and r["failures"] == 0 for r in fixed.values())
    assert "Bare servers + only what a durable cancel needs" in quick.stdout
    assert list(bounds["closed"]["rest"]) == ["bare", "+ durable commit", "+ the essential cancel"]
    # The essential cancel's answers were real cancels: each one left a cancelled order behind.
    for transport in ("grpc", "rest"):
        results = [
            *bounds["closed"][transport]["+ the essential cancel"],
            bounds["fixed"][transport]["+ the essential cancel"],
        ]
        database = quick.run_dir / "bounds" / f"essential-{transport}.sqlite"
        with closing(sqlite3.connect(database)) as db:
            (cancelled,) = db.execute("SELECT count(*) FROM orders WHERE status = ?", (CANCELLED,)).fetchone()
        assert cancelled >= sum(r["requests"] for r in results) > 0, transport
    noted = [t for t in quick.figures["targets"] if "bare + the essential cancel" in t["note"]]
    assert len(noted) == 4, [t["name"] for t in noted]


def test_every_rest_row_against_grpc_gateway_and_the_cpu_apart(quick: QuickRun) -> None:
    for row in quick.figures["rows"]:
        variant = next(v for v in VARIANTS if v.key == row["key"])
        if variant.transport == "rest" and variant.ceiling is not None:
            assert set(row["versus"]) == {"rps", "cpu_per_1k", "front_cpu_per_1k"}, row
            assert all(value is not None for value in row["versus"].values()), row
        else:
            assert row["versus"] == {}, row
        if row["key"] in SPLIT_CPU_VARIANTS:
            assert row["cpu_split"]["front_cpu_per_1k"] is not None, row
            assert row["cpu_split"]["backend_cpu_per_1k"] is not None, row
        else:
            assert row["cpu_split"]["backend_cpu_per_1k"] is None, row
    grpc_gateway = next(row for row in quick.figures["rows"] if row["key"] == GRPC_GATEWAY_VARIANT)
    assert grpc_gateway["versus"]["rps"] == 1.0


def test_every_ratio_is_measured(quick: QuickRun) -> None:
    measured = {r["key"]: r for r in quick.figures["ratios"]}
    assert list(measured) == [spec.key for spec in ratios.SPECS]
    for key, ratio in measured.items():
        postgres = "postgres" in key
        if postgres and not postgres_rows_expected():
            assert ratio["value"] is None and ratio["missing"], ratio
        else:
            assert ratio["value"] is not None and ratio["value"] > 0 and not ratio["missing"], ratio


def test_every_event_of_a_subscribed_account_reached_the_receiver(quick: QuickRun) -> None:
    webhook = quick.figures["webhook"]
    assert webhook["cancels"] > 0
    # Each answered cancel of a fresh order is one event; wrk may have sent a few more than it counted.
    assert webhook["received"]["events"] >= webhook["cancels"], webhook
    assert webhook["received"]["unsigned"] == 0, webhook
    delivery = quick.figures["delivery"]
    assert delivery["events"] == QUICK.delivery_events
    assert delivery["received"]["events"] == delivery["events"], delivery
    assert delivery["received"]["unsigned"] == 0, delivery
    assert delivery["events_per_s"] is not None and delivery["events_per_s"] > 0, delivery
