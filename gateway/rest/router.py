"""Matches a method and raw path against compiled templates: a target, 404, or 405."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.rest.pattern import PathTemplate

T = TypeVar("T")


class NoRoute(LookupError):
    """No template matches the path."""


class MethodNotAllowed(LookupError):
    """Templates match the path, but not for this method."""

    def __init__(self, allowed: Sequence[str]) -> None:
        super().__init__("method not allowed")
        self.allowed = sorted(set(allowed))


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    method: str
    path: PathTemplate
    target: T


class Router(Generic[T]):
    """First match wins, in the order routes were given. HEAD is served as GET."""

    def __init__(self, routes: Sequence[Route[T]]) -> None:
        self._by_length: dict[int, list[Route[T]]] = {}
        for route in routes:
            self._by_length.setdefault(len(route.path.literals), []).append(route)

    def match(self, method: str, segments: list[str]) -> Route[T]:
        if method == "HEAD":
            method = "GET"
        allowed = []
        for route in self._by_length.get(len(segments), ()):
            if route.path.matches(segments):
                if route.method == method:
                    return route
                allowed.append(route.method)
        if allowed:
            raise MethodNotAllowed([*allowed, "HEAD"] if "GET" in allowed else allowed)
        raise NoRoute()
