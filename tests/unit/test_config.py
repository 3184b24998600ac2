"""Settings are parsed once, at the edge, each with a message that says what is wrong."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from gateway import config
from gateway.settings import redacted


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (config.port, "0", 0),
        (config.port, "65535", 65535),
        (config.positive_int, "3", 3),
        (config.non_negative_int, "0", 0),
        (config.positive_float, "0.25", 0.25),
        (config.non_negative_float, "0", 0.0),
        (config.boolean, "yes", True),
        (config.boolean, "0", False),
        (config.log_level, "WARNING", "warning"),
        (config.database_url, "sqlite:///var/x.db", "sqlite:///var/x.db"),
        (config.database_url, "postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        (config.backend_target, "127.0.0.1:50051", "127.0.0.1:50051"),
        (config.backend_target, "dns:///orders:50051", "dns:///orders:50051"),
        (
            config.backend_target,
            "dns://10.0.0.2:53/orders.internal:50051",
            "dns://10.0.0.2:53/orders.internal:50051",
        ),
        (config.backend_target, "ipv4:127.0.0.1:1,127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2"),
        (
            config.networks,
            "10.0.0.0/8, ::1/128",
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        ),
    ],
)
def test_good_values_parse(parse: Callable[[str], Any], text: str, value: object) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "says"),
    [
        (config.port, "65536", "port number from 0 to 65535"),
        (config.port, "-1", "port number"),
        (config.positive_int, "0", "at least 1"),
        (config.non_negative_int, "-1", "at least 0"),
        (config.positive_float, "0", "positive number of seconds"),
        (config.positive_float, "nan", "positive number of seconds"),
        (config.positive_float, "inf", "positive number of seconds"),
        (config.non_negative_float, "-0.5", "at least 0"),
        (config.boolean, "maybe", "true or false"),
        (config.log_level, "loud", "debug, info, warning or error"),
        (config.database_url, "mysql://db", "sqlite:///PATH or postgresql://"),
        (config.database_url, "sqlite:///", "sqlite:///PATH"),
        (config.backend_target, "http://h:1", "HOST:PORT"),
        (config.backend_target, "no-port", "HOST:PORT"),
        (config.host, "999.1.1.1", "does not appear to be an IPv4 or IPv6 address"),
        (config.networks, "10.0.0.0/33", "comma-separated networks"),
    ],
)
def test_bad_values_say_what_is_wrong(parse: Callable[[str], Any], text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse(text)


def test_passwords_never_reach_the_screen() -> None:
    assert redacted("postgresql://gw:s3cret@db:5432/orders") == "postgresql://gw:***@db:5432/orders"
    assert redacted("postgresql://gw@db/orders") == "postgresql://gw@db/orders"
    assert redacted("sqlite:///var/x.db") == "sqlite:///var/x.db"


def _service_settings(argv: list[str], environ: dict[str, str] | None = None) -> Any:
    """The settings `hypertrack-gateway ARGV` would run with (flags, then environment, then defaults)."""
    from gateway.cli import build_parser

    parser = build_parser(environ or {})
    args = parser.parse_args(argv)
    config.check_pairs(parser, args)
    return config.service_settings(args.command, args)


def test_webhook_delivery_defaults_are_the_contracts() -> None:
    webhooks = _service_settings(["grpc"]).webhooks
    assert (webhooks.retries, webhooks.retry_interval_s, webhooks.timeout_s) == (3, 20.0, 10.0)
    assert webhooks.lease_s > webhooks.timeout_s


def test_webhook_delivery_flags_and_variables_reach_the_settings() -> None:
    flags = ["--webhook-retries", "5", "--webhook-retry-interval", "0.5", "--webhook-timeout", "2",
             "--webhook-lease", "4"]  # fmt: skip
    webhooks = _service_settings(["serve", *flags]).webhooks
    assert (webhooks.retries, webhooks.retry_interval_s, webhooks.timeout_s, webhooks.lease_s) == (
        5,
        0.5,
        2.0,
        4.0,
    )
    from_env = _service_settings(
        ["grpc"], {"HYPERTRACK_GATEWAY_WEBHOOK_RETRIES": "0", "HYPERTRACK_GATEWAY_WEBHOOK_TIMEOUT": "1.5"}
    ).webhooks
    assert (from_env.retries, from_env.timeout_s) == (0, 1.5)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "--webhook-retries", "-1"], "at least 0"),
        (["serve", "--webhook-retry-interval", "0"], "positive number of seconds"),
        (["grpc", "--webhook-timeout", "nan"], "positive number of seconds"),
        (["grpc", "--webhook-timeout", "30", "--webhook-lease", "30"], "--webhook-lease must be longer"),
        (["http", "--backend", "127.0.0.1:1", "--webhook-retries", "1"], "unrecognized arguments"),
    ],
)
def test_bad_webhook_flags_stop_with_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _service_settings(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert says in error and error.count("\n") == 1
