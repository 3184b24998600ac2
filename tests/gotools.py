"""Find the Go command-line tools the gRPC tests drive (ghz, grpcurl).

CI installs them with `go install`, which puts them in `$GOBIN` or `$(go env GOPATH)/bin`,
directories that are often not on PATH. A missing tool fails the test (it never skips),
with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

INSTALL = {
    "ghz": "go install github.com/bojand/ghz/cmd/ghz@v0.121.0",
    "grpcurl": "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4",
}


@cache
def _go_env(name: str) -> str:
    go = shutil.which("go")
    if go is None:
        return ""
    try:
        result = subprocess.run([go, "env", name], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _candidates(name: str) -> list[Path]:
    found = shutil.which(name)
    candidates = [Path(found)] if found else []
    gobin = os.environ.get("GOBIN") or _go_env("GOBIN")
    if gobin:
        candidates.append(Path(gobin) / name)
    candidates.extend(Path(entry) / "bin" / name for entry in _go_env("GOPATH").split(os.pathsep) if entry)
    return candidates


def find_go_tool(name: str) -> Path:
    """The path of `name` from PATH, then $GOBIN, then `go env GOPATH`/bin; fails the test if absent."""
    for candidate in _candidates(name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"{name} is required by the gRPC tool tests but was found neither on PATH, nor in $GOBIN, "
        f"nor in $(go env GOPATH)/bin. Install it with: {INSTALL.get(name, f'go install ...{name}')}",
        pytrace=False,
    )
