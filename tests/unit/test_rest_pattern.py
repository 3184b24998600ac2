"""Path templates: compiled once, matched on raw segments, variables percent-decoded exactly once."""

from __future__ import annotations

import pytest

from gateway.rest.pattern import PathDecodeError, PathTemplate, TemplateError, split_path
from gateway.rest.router import MethodNotAllowed, NoRoute, Route, Router

CANCEL = PathTemplate.compile("/orders/{order_handle}/cancel")


@pytest.mark.parametrize(
    "template",
    [
        "orders/{order_handle}",  # not absolute
        "/orders/{order_handle}:cancel",  # custom verb
        "/v1/{name=orders/*}",  # multi-segment variable
        "/orders/{order_handle=**}",
        "/orders/**",
        "/orders/{Order}",  # not a field name
        "/orders/{order_handle",
        "/orders/{}",
        "/orders//cancel",  # empty segment
        "/orders/",  # trailing slash
        "/",
        "/orders/a b",
        "/orders/%2F",
    ],
)
def test_templates_this_gateway_cannot_serve_are_refused_at_compile_time(template: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate.compile(template)


def test_a_template_compiles_into_literals_and_variables() -> None:
    assert CANCEL.template == "/orders/{order_handle}/cancel"
    assert CANCEL.literals == ("orders", None, "cancel")
    assert CANCEL.variables == ((1, "order_handle"),)
    single = PathTemplate.compile("/v1/{a.b=*}/x/*")
    assert single.literals == ("v1", None, "x", None)
    assert single.variables == ((1, "a.b"),)


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/orders/order-1/cancel", True),
        ("/orders/a%2Fb/cancel", True),
        ("/orders//cancel", True),  # an empty handle matches; the service refuses it
        ("/orders/order-1/cancel?type=drop", True),
        ("/orders/order-1", False),
        ("/orders/a/b/cancel", False),
        ("/orders/order-1/cancel/", False),
        ("/orders/order-1/Cancel", False),
        ("/Orders/order-1/cancel", False),
        ("/orders/order-1/%63ancel", False),  # literals match the raw segment
        ("//orders/order-1/cancel", False),
    ],
)
def test_matching_works_on_raw_segments(path: str, matches: bool) -> None:
    assert CANCEL.matches(split_path(path)) is matches


def test_split_path_keeps_encoded_slashes_inside_their_segment_and_drops_the_query() -> None:
    assert split_path("/orders/a%2Fb/cancel?x=/y") == ["orders", "a%2Fb", "cancel"]
    assert split_path("/") == [""]
    assert split_path("/orders/") == ["orders", ""]


@pytest.mark.parametrize(
    ("raw", "handle"),
    [
        ("order-1", "order-1"),
        ("a%2Fb", "a/b"),
        ("a%2fb", "a/b"),
        ("100%25", "100%"),
        ("x%2541", "x%41"),  # decoded once: %25 -> %, and the 41 after it stays
        ("%252F", "%2F"),
        ("z%C3%BCrich-%F0%9F%9A%9A", "zürich-🚚"),
        ("zürich", "zürich"),  # already-decoded text (as some clients send) is kept
        ("a+b", "a+b"),  # + is a plus sign in a path, not a space
        ("a%20b", "a b"),
        ("%2E%2E", ".."),
        ("..", ".."),
        ("", ""),
        ("%zz", "%zz"),  # not an escape: kept as it is
        ("%", "%"),
        ("%4", "%4"),
        ("%00", "\x00"),
    ],
)
def test_variables_are_percent_decoded_exactly_once(raw: str, handle: str) -> None:
    assert CANCEL.bind(["orders", raw, "cancel"]) == {"order_handle": handle}


@pytest.mark.parametrize(
    "raw",
    [
        "%FF",
        "a%C3",  # truncated sequence
        "%C3%28",  # bad continuation byte
        "%C0%AF",  # overlong encoding of /
        "%ED%A0%80",  # a UTF-16 surrogate encoded as UTF-8
        "%F4%90%80%80",  # above U+10FFFF
        "%80",
    ],
)
def test_a_variable_that_is_not_utf8_once_decoded_is_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(PathDecodeError) as raised:
        CANCEL.bind(["orders", raw, "cancel"])
    assert raised.value.field == "order_handle"


def test_bind_decodes_only_variables() -> None:
    template = PathTemplate.compile("/a/{x}/*/{y}")
    assert template.bind(["a", "%41", "%42", "%43"]) == {"x": "A", "y": "C"}


# The router: 404 for a path no template matches, 405 (with the allowed methods) for a wrong method.

ROUTER: Router[str] = Router(
    [
        Route("POST", PathTemplate.compile("/orders/track"), "track"),
        Route("GET", PathTemplate.compile("/orders/{order_handle}"), "get"),
        Route("POST", PathTemplate.compile("/orders/{order_handle}/cancel"), "cancel"),
        Route("DELETE", PathTemplate.compile("/orders/{order_handle}/cancel"), "uncancel"),
    ]
)


@pytest.mark.parametrize(
    ("method", "path", "target"),
    [
        ("POST", "/orders/track", "track"),
        ("GET", "/orders/track", "get"),  # the literal route is POST only; GET reads the order "track"
        ("GET", "/orders/order-1", "get"),
        ("HEAD", "/orders/order-1", "get"),
        ("POST", "/orders/order-1/cancel", "cancel"),
        ("DELETE", "/orders/order-1/cancel", "uncancel"),
    ],
)
def test_the_router_finds_the_first_matching_route_of_the_method(method: str, path: str, target: str) -> None:
    assert ROUTER.match(method, split_path(path)).target == target


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/orders/order-1", ["GET", "HEAD"]),
        ("POST", "/orders/order-1", ["GET", "HEAD"]),
        ("GET", "/orders/order-1/cancel", ["DELETE", "POST"]),
        ("PUT", "/orders/track", ["GET", "HEAD", "POST"]),
    ],
)
def test_a_wrong_method_is_405_with_the_allowed_methods(method: str, path: str, allowed: list[str]) -> None:
    with pytest.raises(MethodNotAllowed) as raised:
        ROUTER.match(method, split_path(path))
    assert raised.value.allowed == allowed


@pytest.mark.parametrize("path", ["/", "/orders", "/orders/a/b", "/orders/a/cancel/x", "/nope", "//orders/a"])
def test_a_path_no_template_matches_is_404_for_any_method(path: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        with pytest.raises(NoRoute):
            ROUTER.match(method, split_path(path))
