"""The metrics (gateway/observability/metrics.py) as Prometheus reads them: the ecosystem's names and
labels, cumulative `le` buckets, a value on a bound counted in that bucket, sums and counts; and the
one view across workers that share a directory of snapshots."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability import metrics as metrics_module
from gateway.observability.metrics import Family, Metrics, Snapshot, WorkerSnapshots

SERVICE = "hypertrack.orders.v1.OrdersService"
CANCEL = frozenset({("grpc_type", "unary"), ("grpc_service", SERVICE), ("grpc_method", "CancelOrder")})
ROUTE = "/orders/{order_handle}/cancel"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def samples(metrics: Metrics) -> Samples:
    return parse(metrics.exposition()[0].decode())


async def scraped(metrics: Metrics) -> Samples:
    return parse((await metrics.scrape())[0].decode())


def request(metrics: Metrics, status: int = 200, *, route: str = ROUTE, method: str = "POST") -> None:
    metrics.observe_request(
        route=route, method=method, status=status, seconds=0.001, request_id="r", remote=None
    )


def rest_count(found: Samples, status: str = "200", route: str = ROUTE, method: str = "POST") -> float:
    labels = {("http_request_method", method), ("http_route", route), ("http_response_status_code", status)}
    return found.get(("http_server_request_duration_seconds_count", frozenset(labels)), 0.0)


def a_dead_pid() -> int:
    """The pid of a process that has exited."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(finished.stdout)


def snapshots(directory: Path) -> list[Path]:
    return list(directory.glob("worker-*.json"))


def test_a_histogram_counts_each_value_in_the_first_bucket_it_fits_and_cumulates() -> None:
    metrics = Metrics()
    for seconds in (0.0002, 0.001, 0.003, 99.0):  # 0.001 is a bound itself: le="0.001"
        metrics.call_started("CancelOrder")
        metrics.call_handled("CancelOrder", grpc.StatusCode.OK, seconds)
    found = samples(metrics)

    def le(bound: str) -> float:
        return found[("grpc_server_handling_seconds_bucket", CANCEL | {("le", bound)})]

    assert [le("0.0005"), le("0.001"), le("0.0025"), le("0.005"), le("10.0"), le("+Inf")] == [
        1,
        2,
        2,
        3,
        3,
        4,
    ]
    assert found[("grpc_server_handling_seconds_count", CANCEL)] == 4
    assert found[("grpc_server_handling_seconds_sum", CANCEL)] == 0.0002 + 0.001 + 0.003 + 99.0


def test_grpc_calls_are_named_as_go_grpc_prometheus_names_them() -> None:
    metrics = Metrics()
    for code in (grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):
        metrics.call_started("CancelOrder")
        metrics.call_handled("CancelOrder", code, 0.001)
    metrics.call_started("CancelOrder")  # still running
    found = samples(metrics)
    assert found[("grpc_server_started_total", CANCEL)] == 4
    assert found[("grpc_server_handled_total", CANCEL | {("grpc_code", "OK")})] == 2
    assert found[("grpc_server_handled_total", CANCEL | {("grpc_code", "NOT_FOUND")})] == 1
    assert found[("grpc_server_msg_received_total", CANCEL)] == 4
    assert found[("grpc_server_msg_sent_total", CANCEL)] == 2
    # Every method is there from the start, at 0, so that a rate has a beginning.
    get = frozenset({("grpc_type", "unary"), ("grpc_service", SERVICE), ("grpc_method", "GetOrder")})
    assert found[("grpc_server_started_total", get)] == 0


def test_the_event_stream_is_a_server_stream_whose_messages_are_counted_as_written() -> None:
    metrics = Metrics()
    watch = frozenset(
        {("grpc_type", "server_stream"), ("grpc_service", SERVICE), ("grpc_method", "WatchOrderEvents")}
    )
    metrics.call_started("WatchOrderEvents")
    for _ in range(3):
        metrics.message_sent("WatchOrderEvents")
    metrics.call_handled("WatchOrderEvents", grpc.StatusCode.OK, 0.5)
    found = samples(metrics)
    assert found[("grpc_server_started_total", watch)] == 1
    assert found[("grpc_server_handled_total", watch | {("grpc_code", "OK")})] == 1
    # Three events written, not one message for the call that ended OK.
    assert found[("grpc_server_msg_sent_total", watch)] == 3
    assert found[("grpc_server_msg_received_total", watch)] == 1


def test_rest_requests_are_named_as_opentelemetry_http_server_conventions_in_prometheus() -> None:
    metrics = Metrics()
    for status in (200, 200, 404):
        request(metrics, status)
    request(metrics, 404, route="unmatched", method="GET")
    request(metrics, 404, route="unmatched", method="PROPFIND")  # a method of no convention
    found = samples(metrics)
    assert rest_count(found) == 2
    assert rest_count(found, "404") == 1
    # No route matched: the route label is left out (empty is Prometheus's absent), as OpenTelemetry
    # leaves http.route out.
    assert rest_count(found, "404", route="", method="GET") == 1
    assert rest_count(found, "404", route="", method="_OTHER") == 1
    bucket = {("http_request_method", "POST"), ("http_route", ROUTE), ("http_response_status_code", "200")}
    bounds = {
        dict(labels)["le"]
        for name, labels in found
        if name == "http_server_request_duration_seconds_bucket" and bucket <= labels
    }
    # OpenTelemetry's recommended buckets, and finer ones below 5 ms.
    otel = {"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0"}
    assert otel | {"7.5", "10.0", "+Inf", "0.0005", "0.001", "0.0025"} == bounds


def test_process_platform_and_gc_collectors_are_in_the_registry() -> None:
    names = {name for name, _ in samples(Metrics())}
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    } <= names
    assert {"python_gc_objects_collected_total", "python_gc_collections_total", "python_info"} <= names


def test_store_operations_keep_the_products_prefix() -> None:
    metrics = Metrics()
    metrics.observe_store("change_order", 0.002)
    found = samples(metrics)
    assert (
        found[
            (
                "hypertrack_gateway_store_operation_duration_seconds_count",
                frozenset({("operation", "change_order")}),
            )
        ]
        == 1
    )


# --- one view across workers -------------------------------------------------------------------------


async def test_workers_sharing_a_directory_answer_with_the_sum_of_all(tmp_path: Path) -> None:
    first, second = Metrics(shared_directory=tmp_path), Metrics(shared_directory=tmp_path)
    first.start()
    second.start()
    try:
        for _ in range(3):
            request(first)
        for _ in range(4):
            request(second)
        # The one answering counts itself as it is now, the other as of its last snapshot.
        assert rest_count(await scraped(first)) == 3
        assert rest_count(await scraped(second)) == 7
        # Whatever a scrape showed was written first: the next, by any worker, shows as much.
        assert rest_count(await scraped(first)) == 7
        request(first)
        seen = [rest_count(await scraped(m)) for m in (first, second, first, second)]
        assert seen == [8, 8, 8, 8]
    finally:
        await first.stop()
        await second.stop()


async def test_counters_never_go_backwards_whichever_worker_answers(tmp_path: Path) -> None:
    workers = [Metrics(shared_directory=tmp_path) for _ in range(3)]
    for worker in workers:
        worker.start()
    last: Samples = {}
    for round_ in range(12):
        request(workers[round_ % 3], 200 if round_ % 2 else 404)
        workers[(round_ * 7) % 3].call_started("GetOrder")
        found = await scraped(workers[(round_ * 5) % 3])
        for key, value in found.items():
            name = key[0]
            if name.endswith(("_total", "_count", "_bucket", "_sum")) and key in last:
                assert value >= last[key], key
        last = found
    for worker in workers:
        await worker.stop()


async def test_a_stopped_workers_counts_stay_and_its_gauges_go(tmp_path: Path) -> None:
    staying, leaving = Metrics(shared_directory=tmp_path), Metrics(shared_directory=tmp_path)
    staying.start()
    leaving.start()
    for _ in range(5):
        request(leaving)
    await leaving.stop()  # writes its last snapshot, marked final
    found = await scraped(staying)
    assert rest_count(found) == 5
    own = samples(staying)
    memory = ("process_resident_memory_bytes", frozenset())
    # The leaving worker's memory is no longer the service's (both are this one process here: the
    # sum of the two would be twice its own).
    assert found[memory] < 1.5 * own[memory]
    await staying.stop()


async def test_a_dead_workers_last_snapshot_counts_but_not_its_gauges(tmp_path: Path) -> None:
    dead = Metrics()
    for _ in range(6):
        request(dead)
    # A worker killed at once leaves its last periodic snapshot, not marked final.
    dead_pid = a_dead_pid()
    families = metrics_module._families(dead.registry.collect())
    (tmp_path / f"worker-{dead_pid}-0.json").write_bytes(
        orjson.dumps({"pid": dead_pid, "final": False, "families": families})
    )
    alive = Metrics(shared_directory=tmp_path)
    alive.start()
    found = await scraped(alive)
    assert rest_count(found) == 6
    own = samples(alive)
    fds = ("process_open_fds", frozenset())
    # Only the live worker's descriptors: the dead one's are closed.
    assert found[fds] < 1.5 * own[fds]
    cpu = ("process_cpu_seconds_total", frozenset())
    assert found[cpu] >= own[cpu]
    await alive.stop()


async def test_snapshots_are_private_files_in_the_directory(tmp_path: Path) -> None:
    metrics = Metrics(shared_directory=tmp_path)
    metrics.start()
    await metrics.scrape()
    await metrics.stop()
    (snapshot,) = snapshots(tmp_path)
    assert snapshot.name.startswith(f"worker-{os.getpid()}-")
    assert stat.S_IMODE(snapshot.stat().st_mode) & 0o077 == 0
    assert orjson.loads(snapshot.read_bytes())["final"] is True


def test_a_snapshot_taken_earlier_never_replaces_a_later_one(tmp_path: Path) -> None:
    # Writes run in threads: the periodic one, taken first, may finish after a scrape's.
    snapshots = WorkerSnapshots(tmp_path)
    later: list[Family] = [{"name": "later", "type": "counter", "help": "", "samples": []}]
    snapshots.write(Snapshot(2, later))
    snapshots.write(Snapshot(1, [{"name": "earlier", "type": "counter", "help": "", "samples": []}]))
    assert orjson.loads(snapshots.path.read_bytes())["families"] == later
