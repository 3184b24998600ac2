"""Driving the load tools and reading their results into one shape, `LoadResult`.

- wrk (bench/wrk/cancel.lua): REST cancels at full speed, closed loop, for a duration or for a fixed
  number of requests. Every request names a fresh handle `PREFIX<n>`; threads never share one.
- ghz: gRPC CancelOrder, handles templated from `{{.RequestNumber}}`, closed loop or at a fixed
  rate (`--rps`, ghz's constant load schedule). JSON report parsed.
- h2load: REST cancels at a fixed rate (`--rps`). h2load walks its URI list from the top in every
  client, so each connection is its own h2load process (`-c 1`) with its own slice of handles; the
  per-request log (`--log-file`) gives exact percentiles and the status of every request.

Latency under a fixed rate is measured, as these tools do, from when a request is sent: a request
that had to wait for its connection to be free does not count its wait (coordinated omission). At
half the maximum rate, with several connections each far from busy, such waits are rare.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "cancel.lua"
CANCEL_BODY = b"{}"
RESULT_MARKER = "BENCH-JSON "
THREAD_DONE = "BENCH-THREAD-DONE"
# A run for a fixed number of requests still needs a duration for wrk; this one only guards a hang.
SLOWEST_RATE_PER_S = 50
# An HTTP/1.1 connection carries one request at a time: at a fixed rate each h2load connection is
# kept well below what it could carry, so that requests seldom wait for it (see run_h2load_fixed_rate).
MAX_FIXED_RATE_PER_CONNECTION = 250.0
FIXED_RATE_MARGIN = 1.2  # handles seeded for a fixed-rate run over what its rate asks for
TOOL_GRACE_S = 120.0


class LoadToolFailed(Exception):
    """A load tool exited with an error or printed no result."""


@dataclass
class LoadResult:
    """One measurement: how many requests were answered, how fast, and which failed."""

    tool: str
    requests: int
    failures: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failure_sample: str = ""
    handles_used: int = 0
    server_cpu_s: float | None = None  # of the server processes, filled in by whoever measured it
    backend_cpu_s: float | None = None  # the part of it spent by gRPC backends behind a REST front end
    database_cpu_s: float | None = None  # of the PostgreSQL server (all its processes), if one served it

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_1k(self) -> float | None:
        if self.server_cpu_s is None or self.requests == 0:
            return None
        return self.server_cpu_s / self.requests * 1000

    @property
    def front_cpu_per_1k(self) -> float | None:
        """The front end's share: all of it when no backend served the requests."""
        if self.server_cpu_s is None or self.requests == 0:
            return None
        return (self.server_cpu_s - (self.backend_cpu_s or 0.0)) / self.requests * 1000

    @property
    def backend_cpu_per_1k(self) -> float | None:
        if self.backend_cpu_s is None or self.requests == 0:
            return None
        return self.backend_cpu_s / self.requests * 1000

    @property
    def database_cpu_per_1k(self) -> float | None:
        if self.database_cpu_s is None or self.requests == 0:
            return None
        return self.database_cpu_s / self.requests * 1000


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of values already sorted ascending (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _run(argv: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise LoadToolFailed(f"{argv[0]} did not finish within {timeout_s:g} s") from error
    if result.returncode != 0:
        raise LoadToolFailed(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return result


# wrk -------------------------------------------------------------------------------------------


def pool_size(transport: str, requests: float, *, threads: int, connections: int) -> int:
    """Orders to seed for `requests` requests at full speed, with room for those in flight: wrk's
    (REST, `threads` threads over `connections`) or ghz's (gRPC, `connections` calls in flight)."""
    if transport == "rest":
        return wrk_pool_size(threads, connections, math.ceil(requests))
    return math.ceil(requests) + connections


def fixed_rate_pool_size(
    transport: str, rate: float, duration_s: float, *, clients: int, connections: int
) -> int:
    """Orders to seed for a fixed-rate run: h2load over `clients` connections (REST, see
    h2load_pool_size) or ghz with `connections` calls in flight (gRPC), with a margin over its rate."""
    if transport == "rest":
        return h2load_pool_size(rate, clients, duration_s)
    return math.ceil(rate * duration_s * FIXED_RATE_MARGIN) + connections


def wrk_pool_size(threads: int, connections: int, requests: int) -> int:
    """Handles a wrk run of `requests` answers uses at most: its threads' shares, plus in flight."""
    return threads * math.ceil(requests / threads) + connections + threads


def _wrk_result(stdout: str) -> LoadResult:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise LoadToolFailed(f"wrk printed no result line:\n{stdout[-2000:]}")
    raw = json.loads(lines[-1].removeprefix(RESULT_MARKER))
    errors = raw["errors"]
    # Transport errors (connect, read, write, timeout) are failed requests too; `status` counts
    # answers > 399, which the script's own count of non-2xx answers already includes.
    transport = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    latency = raw["latency_us"]
    return LoadResult(
        tool="wrk",
        requests=raw["requests"],
        failures=raw["non_2xx"] + transport,
        seconds=raw["duration_us"] / 1e6,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        failure_sample=raw["first_failure"] or (f"transport errors: {errors}" if transport else ""),
        # Thread t names handles t, t + T, t + 2T ...: the busiest thread bounds the range used.
        handles_used=raw["most_issued_per_thread"] * raw["threads"],
    )


def run_wrk(
    wrk: Path,
    base_url: str,
    *,
    authorization: str,
    prefix: str,
    threads: int,
    connections: int,
    duration_s: int | None = None,
    requests: int | None = None,
    start: int = 0,
) -> LoadResult:
    """POST /orders/PREFIX<n>/cancel, n from `start` on, for `duration_s` or until `requests` answers.

    With both, whichever comes first: `requests` then caps a timed run at the orders seeded for it.
    """
    if duration_s is None and requests is None:
        raise ValueError("give duration_s, requests, or both")
    limit = requests or 0
    seconds = duration_s if duration_s is not None else max(60, limit // SLOWEST_RATE_PER_S)
    argv = [
        str(wrk), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), "-H", f"Authorization: {authorization}", base_url,
        "--", prefix, str(start), str(threads), str(limit),
    ]  # fmt: skip
    # wrk's main thread sleeps out the whole duration even when the script has stopped every thread
    # at its share of `requests`; the script says so on stderr, and SIGINT (wrk's "stop now") ends
    # the sleep. wrk's stdout is a few lines, written at the end: reading stderr first cannot block.
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    done, other = 0, []
    for line in process.stderr:
        if line.strip() == THREAD_DONE:
            done += 1
            if done == threads:
                process.send_signal(signal.SIGINT)
        else:
            other.append(line)
    try:
        stdout, _ = process.communicate(timeout=seconds + TOOL_GRACE_S)
    except subprocess.TimeoutExpired as error:
        process.kill()
        raise LoadToolFailed(f"wrk did not finish within {seconds + TOOL_GRACE_S:g} s") from error
    if process.returncode != 0:
        raise LoadToolFailed(f"wrk failed ({process.returncode}): {''.join(other)[-2000:]}")
    return _wrk_result(stdout)


def wrk_request_cap(threads: int, connections: int, pool: int) -> int:
    """The most answers a wrk run may wait for without naming a handle beyond `pool` (inverse of the above)."""
    return max(threads, (pool - connections - threads) // threads * threads)


# ghz -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcCall:
    """What ghz calls: the target, the method, the descriptor set, and the credentials."""

    target: str
    method: str
    protoset: Path
    authorization: str


def run_ghz(
    ghz: Path,
    call: GrpcCall,
    *,
    prefix: str,
    concurrency: int,
    connections: int,
    output: Path,
    duration_s: float | None = None,
    total: int | None = None,
    rps: float | None = None,
) -> LoadResult:
    """CancelOrder with order_handle PREFIX{{.RequestNumber}} for `duration_s`, or `total` calls.

    Not both: ghz v0.121.0 ignores -n once a duration is set, even with -x ("max duration, n
    respected"), so a timed run cannot be capped at the orders seeded for it.
    """
    if (duration_s is None) == (total is None):
        raise ValueError("give either duration_s or total")
    data = json.dumps({"order_handle": prefix + "{{.RequestNumber}}"})
    argv = [
        str(ghz), "--insecure", "--protoset", str(call.protoset), "--call", call.method,
        "-d", data, "-m", json.dumps({"authorization": call.authorization}),
        "-c", str(concurrency), "--connections", str(connections),
        # "wait": calls in flight when the duration ends are answered and counted, not cut off as errors.
        "--duration-stop", "wait", "--format", "json", "-o", str(output),
    ]  # fmt: skip
    if duration_s is not None:
        argv += ["-z", f"{duration_s:g}s"]
        timeout_s = duration_s + TOOL_GRACE_S
    else:
        argv += ["-n", str(total)]
        timeout_s = (total or 0) / SLOWEST_RATE_PER_S + TOOL_GRACE_S
    if rps is not None:
        argv += ["--rps", str(max(1, round(rps)))]
    argv.append(call.target)
    _run(argv, timeout_s)
    return ghz_result(orjson.loads(output.read_bytes()))


def ghz_result(report: dict[str, object]) -> LoadResult:
    """A LoadResult from ghz's JSON report: only status OK counts as success."""
    count = int(report["count"])  # type: ignore[call-overload]
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}  # type: ignore[assignment]
    errors: dict[str, int] = report.get("errorDistribution") or {}  # type: ignore[assignment]
    latencies = {int(p["percentage"]): p["latency"] for p in report.get("latencyDistribution") or []}  # type: ignore[attr-defined]
    failures = count - codes.get("OK", 0)
    sample = "; ".join(f"{n} x {message}" for message, n in list(errors.items())[:3])
    return LoadResult(
        tool="ghz",
        requests=count,
        failures=failures,
        seconds=int(report["total"]) / 1e9,  # type: ignore[call-overload]
        p50_ms=latencies.get(50, 0) / 1e6,
        p99_ms=latencies.get(99, 0) / 1e6,
        failure_sample=sample or (f"status codes: {codes}" if failures else ""),
        handles_used=count,
    )


# h2load ----------------------------------------------------------------------------------------


def fixed_rate_clients(rate: float, least: int) -> int:
    """h2load connections for a fixed `rate`: at least `least`, and enough that none carries more
    than MAX_FIXED_RATE_PER_CONNECTION."""
    return max(least, math.ceil(rate / MAX_FIXED_RATE_PER_CONNECTION))


def h2load_pool_size(rate: float, clients: int, duration_s: float) -> int:
    """Handles a fixed-rate h2load run uses: each client's slice, with a margin over its rate."""
    return clients * _h2load_slice(rate, clients, duration_s)


def _h2load_slice(rate: float, clients: int, duration_s: float) -> int:
    return math.ceil(rate / clients * duration_s * FIXED_RATE_MARGIN) + 20


@dataclass(frozen=True)
class _H2loadClient:
    """What every h2load process of a fixed-rate run shares; `run` starts one on its own URIs."""

    h2load: Path
    body: Path
    authorization: str
    rate: float  # of this client
    duration_s: float

    def run(self, uris: Path, log: Path) -> dict[str, int]:
        """h2load's summary counts: total, started, done, succeeded, failed, errored, timeout, 2xx ..."""
        argv = [
            str(self.h2load), "--h1", "-c", "1", "--rps", f"{self.rate:.3f}", "-D", f"{self.duration_s:g}",
            "-i", str(uris), "-d", str(self.body), "-H", f"Authorization: {self.authorization}",
            "-H", "Content-Type: application/json", "--log-file", str(log),
        ]  # fmt: skip
        stdout = _run(argv, self.duration_s + TOOL_GRACE_S).stdout
        summary: dict[str, int] = {}
        for line in stdout.splitlines():
            if line.startswith(("requests:", "status codes:")):
                for part in line.split(":", 1)[1].split(","):
                    number, _, name = part.strip().partition(" ")
                    summary[name] = int(number)
        if "done" not in summary or "2xx" not in summary:
            raise LoadToolFailed(f"h2load printed no summary:\n{stdout[-2000:]}")
        return summary


def run_h2load_fixed_rate(
    h2load: Path,
    base_url: str,
    *,
    authorization: str,
    prefix: str,
    rate: float,
    clients: int,
    duration_s: float,
    workdir: Path,
) -> LoadResult:
    """POST /orders/PREFIX<n>/cancel at `rate` requests/s in all, over `clients` connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    body = workdir / "body.json"
    body.write_bytes(CANCEL_BODY)
    size = _h2load_slice(rate, clients, duration_s)
    jobs = []
    for client in range(clients):
        uris = workdir / f"uris-{client}.txt"
        uris.write_text(
            "".join(f"{base_url}/orders/{prefix}{client * size + i}/cancel\n" for i in range(size))
        )
        jobs.append((uris, workdir / f"requests-{client}.log"))
    one = _H2loadClient(h2load, body, authorization, rate / clients, duration_s)
    with ThreadPoolExecutor(max_workers=clients) as pool:
        summaries = list(pool.map(lambda job: one.run(*job), jobs))
    durations: list[float] = []
    bad_statuses: dict[str, int] = {}
    for _, log in jobs:
        for line in log.read_text().splitlines():
            _start, status, micros = line.split("\t")
            if status.startswith("2"):
                durations.append(int(micros) / 1000)
            else:
                bad_statuses[status] = bad_statuses.get(status, 0) + 1
    durations.sort()
    # done - 2xx covers 3xx/4xx/5xx answers and requests that errored; timeouts are counted apart.
    failures = sum(s["done"] - s["2xx"] + s.get("timeout", 0) for s in summaries)
    return LoadResult(
        tool="h2load",
        requests=sum(s["done"] for s in summaries),
        failures=failures,
        seconds=duration_s,
        p50_ms=percentile(durations, 50),
        p99_ms=percentile(durations, 99),
        failure_sample=f"statuses: {bad_statuses}" if bad_statuses else "",
        handles_used=clients * size,
    )
