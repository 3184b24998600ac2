"""Run `hypertrack-gateway` as a real subprocess and read its start-up banner."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAST_BANNER_LINE = "Stop with Ctrl-C or SIGTERM"
START_TIMEOUT_S = 30.0


def executable() -> str:
    found = shutil.which("hypertrack-gateway") or str(Path(sys.executable).parent / "hypertrack-gateway")
    assert Path(found).exists(), "hypertrack-gateway is not installed (make venv installs it)"
    return found


def _prlimit() -> str:
    found = shutil.which("prlimit")
    assert found is not None, "prlimit (util-linux) is not installed"
    return found


@dataclass
class GatewayProcess:
    """A started gateway process with its banner, ports, and the lines it logged on stderr."""

    process: subprocess.Popen[str]
    banner: list[str]
    stderr_lines: list[str] = field(default_factory=list)
    _stderr_reader: threading.Thread | None = None

    @property
    def http_port(self) -> int:
        return int(self._find(r"REST\s+https?://[^:]+:(\d+)"))

    @property
    def grpc_port(self) -> int:
        return int(self._find(r"gRPC\s+[^:\s]+:(\d+)"))

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _find(self, pattern: str) -> str:
        for line in self.banner:
            match = re.search(pattern, line)
            if match:
                return match.group(1)
        raise AssertionError(f"no {pattern!r} in banner: {self.banner}")

    def commands(self, program: str) -> list[str]:
        """The example commands of the banner that start with `program`."""
        return [line.strip() for line in self.banner if line.strip().startswith(program + " ")]

    @classmethod
    def start(
        cls,
        args: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        nofile: tuple[int, int] | None = None,
    ) -> GatewayProcess:
        """`nofile` (soft, hard) is the descriptor limit the program starts under (util-linux's prlimit)."""
        limit = [] if nofile is None else [_prlimit(), f"--nofile={nofile[0]}:{nofile[1]}", "--"]
        process = subprocess.Popen(
            [*limit, executable(), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = cls(process, [])
        started._stderr_reader = threading.Thread(target=started._read_stderr, daemon=True)
        started._stderr_reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                started.stop()
                raise AssertionError(f"gateway exited before it was ready: {started.stderr_lines[-20:]}")
            started.banner.append(line.rstrip("\n"))
            if line.startswith(LAST_BANNER_LINE):
                return started
        started.stop()
        raise AssertionError(f"no banner within {START_TIMEOUT_S} s: {started.banner}")

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def rss_mb(self) -> float:
        """The process's resident memory now, in MiB (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def open_descriptors(self) -> int:
        """How many descriptors the process holds now (Linux)."""
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=5)
        return code

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait(timeout=10)
