"""Path templates of google.api.http rules, compiled once into segment matchers.

Supported: literal segments, `*`, and single-segment variables `{field}` / `{field=*}`.
Matching works on the raw (still percent-encoded) path, split on `/`, so an encoded
`%2F` stays inside its segment; a variable's value is then percent-decoded exactly
once, as strict UTF-8 (`a%2Fb` names `a/b`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

_VARIABLE = re.compile(r"^\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?:=\*)?\}$")
_LITERAL = re.compile(r"^[A-Za-z0-9._~-]+$")


class TemplateError(ValueError):
    """A path template this gateway cannot serve; raised at start-up."""


class PathDecodeError(ValueError):
    """A path variable that is not valid percent-encoded UTF-8."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: must be valid percent-encoded UTF-8")
        self.field = field


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled template: per segment, a literal to match or None for a wildcard."""

    template: str
    literals: tuple[str | None, ...]
    variables: tuple[tuple[int, str], ...]

    @classmethod
    def compile(cls, template: str) -> PathTemplate:
        if not template.startswith("/") or ":" in template:
            raise TemplateError(f"unsupported path template {template!r}")
        literals: list[str | None] = []
        variables: list[tuple[int, str]] = []
        for index, segment in enumerate(template[1:].split("/")):
            variable = _VARIABLE.match(segment)
            if variable:
                literals.append(None)
                variables.append((index, variable.group(1)))
            elif segment == "*":
                literals.append(None)
            elif _LITERAL.match(segment):
                literals.append(segment)
            else:
                raise TemplateError(f"unsupported segment {segment!r} in path template {template!r}")
        return cls(template, tuple(literals), tuple(variables))

    def matches(self, segments: list[str]) -> bool:
        if len(segments) != len(self.literals):
            return False
        return all(lit is None or lit == seg for lit, seg in zip(self.literals, segments, strict=True))

    def bind(self, segments: list[str]) -> dict[str, str]:
        """The decoded variables of a matching path; raises PathDecodeError."""
        bound = {}
        for index, field in self.variables:
            try:
                bound[field] = unquote_to_bytes(segments[index]).decode("utf-8")
            except UnicodeDecodeError:
                raise PathDecodeError(field) from None
        return bound


def split_path(raw_path: str) -> list[str]:
    """The raw segments of a path without its query: `/a/b%2Fc` is `['a', 'b%2Fc']`. A request target
    in absolute form (`http://host/a`, which RFC 9112 3.2.2 says a server must accept) is split the
    same, without its scheme and authority."""
    path = raw_path.partition("?")[0]
    scheme, absolute, rest = path.partition("://")
    if absolute and not scheme.startswith("/"):
        path = "/" + rest.partition("/")[2]
    return path[1:].split("/")
