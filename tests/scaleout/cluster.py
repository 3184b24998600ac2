"""A scale-out deployment as separate processes: gRPC servers on one PostgreSQL database, each on
its own loopback address and the same port, a DNS name for them all, and REST front ends whose
`--backend dns://RESOLVER/NAME:PORT` balances over every address the name resolves to.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.processes import GatewayProcess, executable
from tests.scaleout.dns import DnsServer, dns_server

GRPC_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
SERVICE_NAME = "orders.test"
READY_TIMEOUT_S = 20.0
PORT_ATTEMPTS = 3
STOP_TIMEOUT_S = 20.0


def port_free_on_every_host(hosts: Sequence[str]) -> int:
    """A TCP port that nothing listens on at any of `hosts` (checked by binding it on each)."""
    for _ in range(20):
        with contextlib.ExitStack() as sockets:
            first = sockets.enter_context(socket.socket())
            first.bind((hosts[0], 0))
            port: int = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    sockets.enter_context(socket.socket()).bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no port free on all of {hosts}")


def run_cli(*args: str, cwd: Path) -> str:
    """Run a one-shot subcommand (seed, migrate, accounts create); its stdout. Fails the test on error."""
    result = subprocess.run(
        [executable(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"hypertrack-gateway {' '.join(args[:2])} failed: {result.stderr}"
    return result.stdout


@dataclass
class Cluster:
    """The running processes. `grpc_servers[i]` listens on `GRPC_HOSTS[i]:grpc_port`."""

    database: str
    grpc_port: int
    dns: DnsServer
    workdir: Path
    grpc_servers: list[GatewayProcess] = field(default_factory=list)
    front_ends: list[GatewayProcess] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)

    @property
    def backend(self) -> str:
        return f"dns://{self.dns.authority}/{SERVICE_NAME}:{self.grpc_port}"

    def seed(self, account: str, count: int, prefix: str) -> list[str]:
        out = run_cli(
            "seed", "--database", self.database, "--account", account,
            "--count", str(count), "--prefix", prefix, cwd=self.workdir,
        )  # fmt: skip
        assert f"seeded {count} open orders" in out, out
        return [f"{prefix}{i}" for i in range(count)]

    def freeze_grpc_server(self, index: int) -> None:
        """SIGSTOP: it still accepts bytes (the kernel queues them) but answers nothing."""
        self.grpc_servers[index].signal(signal.SIGSTOP)

    def kill_grpc_server(self, index: int) -> None:
        """SIGKILL: no grace, no goodbye to its clients or to the database."""
        server = self.grpc_servers[index]
        self.killed.add(index)
        server.signal(signal.SIGKILL)
        assert server.wait(timeout=10) == -signal.SIGKILL


async def _start_all(commands: Sequence[list[str]], cwd: Path) -> list[GatewayProcess]:
    """Start the processes at the same time; if any fails, stop the others and fail."""
    results = await asyncio.gather(
        *(asyncio.to_thread(GatewayProcess.start, args, cwd=cwd) for args in commands),
        return_exceptions=True,
    )
    started = [r for r in results if isinstance(r, GatewayProcess)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        stop_all(started)
        raise failures[0]
    return started


def stop_all(processes: Sequence[GatewayProcess]) -> list[int]:
    """SIGTERM every process still running, all at once, then wait for each (SIGKILL after
    STOP_TIMEOUT_S); their exit codes."""
    for process in processes:
        if process.process.poll() is None:
            process.signal(signal.SIGTERM)
            process.signal(signal.SIGCONT)  # a frozen process acts on SIGTERM only once thawed
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=STOP_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            process.process.kill()
            codes.append(process.wait(timeout=STOP_TIMEOUT_S))
    return codes


async def wait_ready(url: str, http: aiohttp.ClientSession) -> None:
    """Poll GET /readyz until it answers 200 (the front end's gRPC backend is SERVING)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
                last = f"{response.status} {await response.text()}"
        except aiohttp.ClientError as error:
            last = repr(error)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready within {READY_TIMEOUT_S} s: {last}")


def grpc_command(host: str, port: int, database: str) -> list[str]:
    return ["grpc", "--host", host, "--grpc-port", str(port), "--database", database, "--demo"]


async def _start_grpc_servers(database: str, workdir: Path) -> tuple[int, list[GatewayProcess]]:
    """The gRPC servers, started at once on one free port: (the port, the servers)."""
    for attempt in range(PORT_ATTEMPTS):
        port = port_free_on_every_host(GRPC_HOSTS)
        try:
            return port, await _start_all([grpc_command(h, port, database) for h in GRPC_HOSTS], workdir)
        except AssertionError as error:
            # Another program took the port between the check and the start: try another one.
            # Any other failure (of concurrent migrations, say) is the product's and fails the test.
            if "cannot listen" not in str(error) or attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def running_cluster(database: str, workdir: Path, *, front_ends: int = 2) -> AsyncIterator[Cluster]:
    """len(GRPC_HOSTS) `grpc` processes started at once on `database` (each one migrates it and
    creates the demo account as it starts), then `front_ends` `http` processes, all with
    `--backend` naming the DNS name of the servers. On the way out every process is stopped
    with SIGTERM, and must exit 0 (unless the test killed it)."""
    with dns_server({SERVICE_NAME: GRPC_HOSTS}) as dns:
        port, servers = await _start_grpc_servers(database, workdir)
        cluster = Cluster(database, port, dns, workdir, grpc_servers=servers)
        try:
            cluster.front_ends = await _start_all(
                [["http", "--http-port", "0", "--backend", cluster.backend]] * front_ends, workdir
            )
            async with aiohttp.ClientSession() as http:
                for front_end in cluster.front_ends:
                    await wait_ready(front_end.rest_url, http)
            yield cluster
        finally:
            try:
                front_end_codes = stop_all(cluster.front_ends)
            finally:
                grpc_codes = stop_all(cluster.grpc_servers)
    assert front_end_codes == [0] * len(cluster.front_ends), front_end_codes
    expected = [-signal.SIGKILL if i in cluster.killed else 0 for i in range(len(GRPC_HOSTS))]
    assert grpc_codes == expected, grpc_codes
