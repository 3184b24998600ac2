"""The metrics' own counters and histograms (gateway/observability/metrics.py) as Prometheus reads
them: cumulative `le` buckets, a value on a bound counted in that bucket, sums and counts."""

from __future__ import annotations

import grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import Metrics


def _samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition()[0].decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_histogram_counts_each_value_in_the_first_bucket_it_fits_and_cumulates() -> None:
    metrics = Metrics()
    for seconds in (0.0002, 0.001, 0.003, 99.0):  # 0.001 is a bound itself: le="0.001"
        metrics.observe_call("CancelOrder", grpc.StatusCode.OK, seconds)
    samples = _samples(metrics)
    bucket = "hypertrack_gateway_grpc_call_duration_seconds_bucket"

    def le(bound: str) -> float:
        return samples[(bucket, frozenset({("method", "CancelOrder"), ("le", bound)}))]

    assert [le("0.0005"), le("0.001"), le("0.0025"), le("0.005"), le("10.0"), le("+Inf")] == [
        1,
        2,
        2,
        3,
        3,
        4,
    ]
    method = frozenset({("method", "CancelOrder")})
    assert samples[("hypertrack_gateway_grpc_call_duration_seconds_count", method)] == 4
    assert (
        samples[("hypertrack_gateway_grpc_call_duration_seconds_sum", method)]
        == 0.0002 + 0.001 + 0.003 + 99.0
    )
    assert samples[("hypertrack_gateway_grpc_calls_total", method | {("code", "OK")})] == 4


def test_counters_keep_each_label_set_apart() -> None:
    metrics = Metrics()
    route = "/orders/{order_handle}/cancel"
    for status in (200, 200, 404):
        metrics.observe_request(
            route=route, method="POST", status=status, seconds=0.001, request_id="r", remote=None
        )
    samples = _samples(metrics)
    labels = frozenset({("route", route), ("method", "POST")})
    assert samples[("hypertrack_gateway_http_requests_total", labels | {("status", "200")})] == 2
    assert samples[("hypertrack_gateway_http_requests_total", labels | {("status", "404")})] == 1
    assert samples[("hypertrack_gateway_http_request_duration_seconds_count", labels)] == 3
