"""The OTEL_* variables into TracingSettings: off unless an OTLP endpoint is named, and a wrong
value named at start-up."""

from __future__ import annotations

import subprocess

import pytest

from gateway.config import tracing_settings
from gateway.settings import TracingSettings
from tests.processes import executable

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


def test_no_otel_variables_leave_tracing_off() -> None:
    assert tracing_settings({}) == TracingSettings()
    assert not tracing_settings({}).enabled
    assert not tracing_settings({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}).enabled


@pytest.mark.parametrize(
    "off",
    [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_SDK_DISABLED": "TRUE"}, {"OTEL_TRACES_EXPORTER": "none"}],
)
def test_disabled_or_no_exporter_turns_tracing_off_even_with_an_endpoint(off: dict[str, str]) -> None:
    assert not tracing_settings({**ENDPOINT, **off}).enabled


def test_disabled_off_leaves_tracing_on() -> None:
    assert tracing_settings({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}).enabled


def test_the_base_endpoint_gets_the_traces_path_and_the_traces_endpoint_is_taken_as_it_is() -> None:
    assert tracing_settings(ENDPOINT).endpoint == "http://collector:4318/v1/traces"
    assert (
        tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}).endpoint
        == "http://collector:4318/v1/traces"
    )
    traces = {**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://other:443/custom"}
    assert tracing_settings(traces).endpoint == "https://other:443/custom"


def test_the_other_variables_are_read() -> None:
    settings = tracing_settings(
        {
            **ENDPOINT,
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,x-team=orders",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-team=tracing",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=from-resource",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    assert dict(settings.headers) == {"api-key": "s ecret", "x-team": "tracing"}
    assert settings.service_name == "from-resource"
    assert dict(settings.resource_attributes) == {"deployment.environment": "prod"}
    assert (settings.sampler, settings.sampler_arg, settings.export_delay_s) == (
        "parentbased_traceidratio",
        0.25,
        0.2,
    )
    assert "s ecret" not in repr(settings)  # headers carry keys: never shown
    assert tracing_settings({**ENDPOINT, "OTEL_SERVICE_NAME": "orders"}).service_name == "orders"
    assert tracing_settings(ENDPOINT).service_name == "hypertrack-gateway"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "no-equals-sign"}, "OTEL_EXPORTER_OTLP_HEADERS"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "-1"}, "OTEL_BSP_SCHEDULE_DELAY"),
    ],
)
def test_a_wrong_value_is_named(variables: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        tracing_settings({**ENDPOINT, **variables})


def test_the_command_stops_on_a_wrong_value_with_one_line_and_status_2() -> None:
    done = subprocess.run(
        [executable(), "grpc", "--grpc-port", "0", "--database", "sqlite:///:memory:"],
        env={**ENDPOINT, "OTEL_TRACES_SAMPLER": "sometimes", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("hypertrack-gateway: error: OTEL_TRACES_SAMPLER:")
