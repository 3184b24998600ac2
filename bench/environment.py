"""What the table says about where it was measured: date, commit, cores, Python, tool versions."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from bench import gogateway
from bench.tools import Tools

REPO = Path(__file__).resolve().parents[1]


def _output(argv: list[str], *, any_status: bool = False) -> str:
    """The first line a command prints ("" if it fails; `any_status`: wrk -v exits 1 after its version)."""
    try:
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if result.returncode != 0 and not any_status:
        return ""
    return ((result.stdout or result.stderr).strip().splitlines() or [""])[0]


def git_commit() -> str:
    """The commit checked out, marked when tracked files differ from it.

    Read-only: `--no-optional-locks` keeps `git status` from even refreshing the index.
    """
    commit = _output(["git", "rev-parse", "--short=12", "HEAD"])
    if not commit:
        return "unknown (not a git checkout)"
    dirty = _output(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
    return f"{commit} (with uncommitted changes)" if dirty else commit


def describe(tools: Tools) -> dict[str, str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "cores": str(os.cpu_count()),
        "usable_cores": str(usable),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "wrk": _output([str(tools.wrk), "-v"], any_status=True).partition(" Copyright")[0],
        "h2load": _output([str(tools.h2load), "--version"]),
        # A `go install`ed ghz calls itself "dev": its path says which one it is.
        "ghz": f"ghz {_output([str(tools.ghz), '--version'])} ({tools.ghz})",
        **({"grpc_gateway": gogateway.describe()} if tools.grpc_gateway is not None else {}),
    }
