"""Which URLs an account may subscribe (gateway/events/subscriptions.py), and the signing secret."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.events.subscriptions import MAX_URL_LENGTH, new_signing_secret, webhook_url


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hooks/hypertrack",
        "http://127.0.0.1:8080/hook",
        "https://hooks.example.com:8443/a/b?token=x%20y&z=1",
        "http://[::1]:9000/",
        "https://example.com",
        "HTTPS://Example.COM/Hook",
        "http://receiver_1.internal./x",
        "https://" + "a" * 60 + ".example.com/" + "p" * (MAX_URL_LENGTH - 88),
    ],
)
def test_http_and_https_urls_with_a_host_are_taken_as_they_are(url: str) -> None:
    assert len(url) <= MAX_URL_LENGTH
    assert webhook_url(url) == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://example.com/hook", "http:// or https:// URL, not ftp:"),
        ("javascript:alert(1)", "http:// or https:// URL, not javascript:"),
        ("file:///etc/passwd", "not file:"),
        ("example.com/hook", "http:// or https:// URL"),
        ("//example.com/hook", "http:// or https:// URL"),
        ("", "http:// or https:// URL"),
        ("http:///hook", "must name a host"),
        ("http:example.com/hook", "must name a host"),
        ("https://", "must name a host"),
        ("http://:8080/hook", "must name a host"),
        ("http://exa_mple..com/", "must name a host"),
        ("http://-example.com/", "must name a host"),
        ("http://300.1.1.1/", "not an IPv4 address"),
        ("http://[zz]/", "must be a URL"),
        ("http://[::1/", "must be a URL"),
        ("https://user:hunter2@example.com/hook", "user name or password"),
        ("https://user@example.com/hook", "user name or password"),
        ("https://@example.com/hook", "user name or password"),
        ("https://example.com/hook#part", "#fragment"),
        ("https://example.com/hook#", "#fragment"),
        ("https://example.com:0/hook", "port from 1 to 65535"),
        ("https://example.com:65536/hook", "port from 1 to 65535"),
        ("https://example.com:x/hook", "port from 1 to 65535"),
        ("https://exa mple.com/hook", "printable ASCII"),
        ("https://example.com/ho\nok", "printable ASCII"),
        ("https://example.com/\x00", "printable ASCII"),
        ("https://bücher.example/", "printable ASCII"),
        ("https://evil.example\\@good.example/", "backslashes"),
        ("https://example.com/" + "a" * 5000, f"at most {MAX_URL_LENGTH} characters, not 5020"),
    ],
)
def test_anything_else_is_refused_saying_why(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=r"^must ") as refused:
        webhook_url(url)
    assert said in str(refused.value)


def test_a_refusal_never_repeats_the_url_or_a_password_in_it() -> None:
    for url in ("https://partner:hunter2@example.com/hook", "ftp://hunter2.example/", "https://x/#hunter2"):
        with pytest.raises(ValueError, match=r"^must ") as refused:
            webhook_url(url)
        assert "hunter2" not in str(refused.value)


@given(st.text(max_size=300) | st.from_regex(r"\Ahttps?://[\x20-\x7e]{0,60}\Z"))
def test_any_text_is_taken_whole_or_refused_with_a_value_error(text: str) -> None:
    try:
        accepted = webhook_url(text)
    except ValueError as refused:
        message = str(refused)
    else:
        message = ""
    if message:
        assert message.startswith("must ") and (len(text) < 8 or text not in message)
        return
    parts = urllib.parse.urlsplit(accepted)
    assert accepted == text
    assert parts.scheme in ("http", "https") and parts.hostname
    assert "@" not in parts.netloc and "#" not in text


def test_signing_secrets_are_prefixed_random_and_32_bytes() -> None:
    first, second = new_signing_secret(), new_signing_secret()
    assert first != second
    for secret in (first, second):
        prefix, _, key = secret.partition("_")
        assert prefix == "whsec" and len(base64.urlsafe_b64decode(key + "=")) == 32
