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
