"""The before/after benchmark in its reduced run: it must keep working, whatever the figures.

`python -m bench.ab HEAD HEAD --quick` checks HEAD out into a worktree (here under a temporary
directory), runs every row once per side from it, and prints the table. These tests check that the
servers ran the worktree's code, that every request succeeded and that the table and the JSON have
every row, never how fast they were. HYPERTRACK_AB_REVISION names another revision to check out
(both sides), for when HEAD itself cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.ab import ROWS, Revision, order_of_round, parse_args

REPO = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT_S = 240  # it takes about 25 s on 2 busy cores; this only stops a hang
REVISION = os.environ.get("HYPERTRACK_AB_REVISION", "HEAD")


@dataclass(frozen=True)
class QuickRun:
    returncode: int
    stdout: str
    stderr: str
    figures: dict[str, Any]
    worktrees: Path


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    workdir = tmp_path_factory.mktemp("ab")
    result = subprocess.run(
        [sys.executable, "-m", "bench.ab", REVISION, REVISION, "--quick", "--json", str(workdir / "figures.json"),
         "--out-dir", str(workdir / "run"), "--worktrees", str(workdir / "trees")],
        cwd=REPO, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S, check=False,
    )  # fmt: skip
    figures_path = workdir / "figures.json"
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    return QuickRun(result.returncode, result.stdout, result.stderr, figures, workdir / "trees")


def test_rounds_alternate_abba() -> None:
    assert [order_of_round(n)[0] for n in (1, 2, 3, 4)] == ["before", "after", "before", "after"]


def test_the_quick_run_finishes_and_succeeds(quick: QuickRun) -> None:
    assert quick.returncode == 0, (
        f"python -m bench.ab --quick failed:\n{quick.stdout}\n{quick.stderr[-4000:]}"
    )
    assert "every request of the 6 runs and their warm-ups succeeded" in quick.stdout


def test_the_servers_ran_the_worktree_code(quick: QuickRun) -> None:
    sha = quick.figures["revisions"]["before"]["sha"]
    assert f"a child imports {quick.worktrees.resolve() / sha / 'gateway' / '__init__.py'}" in quick.stderr
    # The worktree this run made is gone again.
    assert not (quick.worktrees / sha).exists()


def test_every_row_ran_on_both_sides(quick: QuickRun) -> None:
    measured = {(m["row"], m["side"]) for m in quick.figures["measurements"]}
    assert measured == {(row.key, side) for row in ROWS for side in ("before", "after")}
    for m in quick.figures["measurements"]:
        assert m["result"]["requests"] > 0 and m["result"]["failures"] == 0, m
        assert m["result"]["handles_used"] <= m["pool"], m
        assert m["result"]["server_cpu_s"] is not None
    assert [row["row"] for row in quick.figures["rows"]] == [row.key for row in ROWS]
    for row in ROWS:
        assert quick.stdout.count(row.label) == 2, row.label  # the table and the round-by-round lines


def test_the_harness_itself_never_imports_gateway() -> None:
    """The working tree's gateway/ may be half-way through a change: only the worktrees' code runs."""
    probe = "import sys, bench.ab; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_each_side_may_give_its_database_servers_flags_of_its_own() -> None:
    """`HEAD HEAD --before-args ... --after-args ...`: one revision, two configurations."""
    args = parse_args(
        [
            "HEAD",
            "HEAD",
            "--before-args",
            "--sqlite-synchronous normal",
            "--after-args=--sqlite-synchronous full",
        ]
    )
    assert args.before_args == ["--sqlite-synchronous", "normal"]
    assert args.after_args == ["--sqlite-synchronous", "full"]
    assert parse_args(["HEAD", "HEAD"]).before_args == []
    side = Revision("before", "HEAD", "0" * 40, "subject", REPO, tuple(args.before_args))
    for mode in ("serve", "grpc"):
        assert side.server_argv(mode, ["--log-level", "warning"])[-4:] == [
            "--log-level", "warning", "--sqlite-synchronous", "normal",
        ]  # fmt: skip
    # The REST front end of `http` has no database: it takes none of them.
    assert "--sqlite-synchronous" not in side.server_argv("http", ["--backend", "127.0.0.1:1"])
    assert side.shown == "0000000000 (HEAD) [--sqlite-synchronous normal]"
