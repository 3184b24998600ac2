"""Webhook subscriptions: which URLs an account may subscribe, and the secret that signs for it.

The URL is checked when it is set, not when the first event is sent, so that a typo is said to
whoever typed it rather than logged later as failed deliveries. What is refused and why:
- any scheme but http and https (javascript:, file:, ftp: ... are never fetched by the worker);
- a URL without a host;
- a user name or password in it: they would be kept in the database and sent in the clear with
  every event, and the signature already proves to the receiver who sent the event;
- a fragment: it is never sent, so a receiver could not rely on it;
- spaces, control characters, non-ASCII characters and backslashes, which HTTP clients repair or
  read differently (a backslash is a slash to some, part of the user name to others), so the URL
  stored would not be the one fetched;
- more than MAX_URL_LENGTH characters.
Error messages never repeat the URL: it may hold a token or a password.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import urllib.parse

MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32

_SCHEMES = ("http", "https")
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_MAX_HOST_NAME = 253


def new_signing_secret() -> str:
    """A new webhook signing secret: `whsec_` (so that it is recognised for what it is, in a
    configuration file or by a secret scanner) and 32 random bytes in URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def webhook_url(text: str) -> str:
    """`text` if it is a URL events may be sent to; else ValueError saying what is wrong."""
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters, not {len(text)}")
    if any(not "!" <= c <= "~" or c == "\\" for c in text):
        raise ValueError(
            "must be printable ASCII without spaces or backslashes (percent-encode the rest,"
            " punycode a host name)"
        )
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:  # unbalanced brackets, an address in brackets that is none: said in its words
        raise ValueError("must be a URL: http(s)://HOST[:PORT]/PATH") from None
    if parts.scheme not in _SCHEMES:
        shown = f", not {parts.scheme[:16]}:" if parts.scheme else ""
        raise ValueError(f"must be an http:// or https:// URL{shown}")
    if "#" in text:
        raise ValueError("must not have a #fragment (it is never sent to the receiver)")
    if not text[len(parts.scheme) + 1 :].startswith("//") or not parts.netloc:
        raise ValueError("must name a host: http(s)://HOST[:PORT]/PATH")
    if "@" in parts.netloc:
        raise ValueError("must not hold a user name or password (the signature authenticates the sender)")
    _check_host(parts.netloc, parts.hostname or "")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("must have a port from 1 to 65535, if any")
    return text


def _check_host(netloc: str, host: str) -> None:
    if netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("must name a host: [IPV6] is not an IPv6 address") from None
        return
    if not host:
        raise ValueError("must name a host: http(s)://HOST[:PORT]/PATH")
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError("must name a host: not an IPv4 address") from None
        return
    if len(host) > _MAX_HOST_NAME or not _HOST_NAME.match(host):
        raise ValueError("must name a host: letters, digits, '-' and '_' in dot-separated labels")
