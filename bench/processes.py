"""Starting and stopping the servers under test, and reading their ports from their start-up banners.

Every server is started on port 0 and announces the ports it bound on stdout, ending with a line
that starts "Stop with Ctrl-C or SIGTERM" (the product's banner; the ceilings print the same shape).
stdout and stderr go to files under the run's log directory rather than pipes, so that a server
that logs a lot never blocks on a full pipe nobody reads, and its log is there to read afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAST_BANNER_LINE = "Stop with Ctrl-C or SIGTERM"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 600.0


class ServerFailed(Exception):
    """A server or a command of the product failed; the message carries the end of its log."""


def gateway_executable() -> str:
    """`hypertrack-gateway` of the virtualenv running this benchmark (it need not be on PATH)."""
    beside = Path(sys.executable).parent / "hypertrack-gateway"
    return str(beside) if beside.exists() else "hypertrack-gateway"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class ServerProcess:
    """A started server: its process, banner and log files."""

    name: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    banner: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http_port(self) -> int:
        return int(self._find(r"REST\s+https?://[^:\s]+:(\d+)"))

    @property
    def grpc_port(self) -> int:
        return int(self._find(r"gRPC\s+[^:\s]+:(\d+)"))

    def _find(self, pattern: str) -> str:
        for line in self.banner:
            match = re.search(pattern, line)
            if match:
                return match.group(1)
        raise ServerFailed(f"{self.name}: no {pattern!r} in its banner: {self.banner}")

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        cwd: Path = REPO,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        """Start `argv` in `cwd` (the repository unless told) with `env` (this environment unless told)."""
        log_dir.mkdir(parents=True, exist_ok=True)
        stdout_path, stderr_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ if env is None else env),
            )
        started = cls(name, process, stdout_path, stderr_path, [])
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            lines = stdout_path.read_text(errors="replace").splitlines()
            if any(line.startswith(LAST_BANNER_LINE) for line in lines):
                started.banner = lines
                return started
            if process.poll() is not None:
                raise ServerFailed(
                    f"{name} exited with {process.returncode} before it was ready:\n{_tail(stderr_path)}"
                )
            time.sleep(0.05)
        started.stop()
        raise ServerFailed(f"{name}: no banner within {START_TIMEOUT_S:g} s:\n{_tail(stderr_path)}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM, as an operator would stop it; SIGKILL if it has not stopped in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=STOP_TIMEOUT_S)


def start_gateway(name: str, mode: str, options: Sequence[str], log_dir: Path) -> ServerProcess:
    """`hypertrack-gateway MODE` (serve, grpc or http) on free ports."""
    ports = {
        "serve": ["--http-port", "0", "--grpc-port", "0"],
        "grpc": ["--grpc-port", "0"],
        "http": ["--http-port", "0"],
    }[mode]
    return ServerProcess.start(name, [gateway_executable(), mode, *ports, *options], log_dir)


def start_ceiling(
    kind: str,
    log_dir: Path,
    backend: str | None = None,
    *,
    options: Sequence[str] = (),
    name: str | None = None,
) -> ServerProcess:
    """`python -m bench.ceilings KIND` (rest, grpc, or naive with its `backend`) on a free port,
    with `options` (`--durable DIR`, `--essential DB`), its logs named `ceiling-<name or KIND>`."""
    argv = [sys.executable, "-m", "bench.ceilings", kind, "--port", "0", *options]
    if backend is not None:
        argv += ["--backend", backend]
    return ServerProcess.start(f"ceiling-{name or kind}", argv, log_dir)


def run_gateway_command(args: Sequence[str]) -> str:
    """Run a one-shot `hypertrack-gateway` command (accounts, seed, migrate); its stdout."""
    result = subprocess.run(
        [gateway_executable(), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise ServerFailed(
            f"hypertrack-gateway {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return result.stdout
