"""The load tools the benchmark drives, found on this machine or installed where missing.

wrk and h2load come from Debian (`apt-get install wrk nghttp2-client`), installed here only when we
are root; otherwise the exact command is printed and the benchmark stops. ghz comes from
`go install` at the version the Makefile pins, and is looked for on PATH, in $GOBIN and in
`go env GOPATH`/bin (where `go install` puts it, often not on PATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.121.0"
APT_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}
INSTALL_TIMEOUT_S = 900


class ToolMissing(Exception):
    """A tool is absent and cannot be installed from here; the message says how to install it."""


@dataclass(frozen=True)
class Tools:
    wrk: Path
    h2load: Path
    ghz: Path
    grpc_gateway: Path | None = None  # built apart (bench/gogateway.py): only `python -m bench` needs it


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _go_env(name: str) -> str:
    go = shutil.which("go")
    if go is None:
        return ""
    result = subprocess.run([go, "env", name], capture_output=True, text=True, timeout=60, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_go_tool(name: str) -> Path | None:
    """`name` from PATH, then $GOBIN, then each `go env GOPATH` entry's bin; None if absent."""
    found = shutil.which(name)
    candidates = [Path(found)] if found else []
    gobin = os.environ.get("GOBIN") or _go_env("GOBIN")
    if gobin:
        candidates.append(Path(gobin) / name)
    candidates += [Path(entry) / "bin" / name for entry in _go_env("GOPATH").split(os.pathsep) if entry]
    return next((c for c in candidates if _executable(c)), None)


def _apt_install(packages: list[str]) -> None:
    command = f"apt-get update && apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolMissing(f"{', '.join(packages)} missing; install with: sudo sh -c '{command}'")
    _log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise ToolMissing(f"`{' '.join(argv)}` failed: {result.stderr.strip()[-2000:]}")


def _go_install_ghz() -> Path:
    go = shutil.which("go")
    if go is None:
        raise ToolMissing(
            f"ghz missing and no Go toolchain to build it; install Go, then: go install {GHZ_MODULE}"
        )
    _log(f"installing ghz: go install {GHZ_MODULE}")
    result = subprocess.run(
        [go, "install", GHZ_MODULE], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    found = find_go_tool("ghz")
    if result.returncode != 0 or found is None:
        raise ToolMissing(f"`go install {GHZ_MODULE}` failed: {result.stderr.strip()[-2000:]}")
    return found


def ensure_tools() -> Tools:
    """The paths of wrk, h2load and ghz, installing the missing ones; raises ToolMissing."""
    missing = [package for name, package in APT_PACKAGES.items() if shutil.which(name) is None]
    if missing:
        _apt_install(missing)
    paths = {name: shutil.which(name) for name in APT_PACKAGES}
    absent = [name for name, path in paths.items() if path is None]
    if absent:
        raise ToolMissing(f"{', '.join(absent)} still not on PATH after apt-get install")
    ghz = find_go_tool("ghz") or _go_install_ghz()
    return Tools(wrk=Path(str(paths["wrk"])), h2load=Path(str(paths["h2load"])), ghz=ghz)
