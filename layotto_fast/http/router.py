"""Method + path -> handler, with ``{name}`` path parameters.

Static paths are one dict lookup; patterns are tried in the order they were added.
A placeholder matches one whole, non-empty segment, so a percent-encoded "/" in a
key stays inside its parameter. One trailing "/" is ignored on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

from layotto_fast.http.messages import Request, Response

__all__ = ["Handler", "Match", "Router"]

# Sync handlers answer inline; async ones still answer in request order.
Handler = Callable[[Request], Response | Awaitable[Response]]

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
_METHOD = re.compile(r"[A-Z]+")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Match:
    handler: Handler | None  # None: 404 when ``allowed`` is empty, else 405
    params: Mapping[str, str] = field(default_factory=lambda: _NO_PARAMS)
    allowed: tuple[str, ...] = ()


@dataclass(slots=True)
class _Pattern:
    segments: tuple[str | None, ...]  # a literal segment, or None for a placeholder
    names: tuple[str, ...]
    handlers: dict[str, Handler] = field(default_factory=dict)

    def capture(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        values: list[str] = []
        for want, got in zip(self.segments, parts, strict=True):
            if want is None:
                if not got:
                    return None
                values.append(unquote(got))
            elif want != got:
                return None
        return dict(zip(self.names, values, strict=True))


_NOT_FOUND = Match(None)


class Router:
    def __init__(self) -> None:
        self._static: dict[str, dict[str, Match]] = {}
        self._patterns: dict[str, _Pattern] = {}

    def add(self, methods: str | Iterable[str], pattern: str, handler: Handler) -> None:
        """Route ``methods`` (e.g. ``("GET", "HEAD")``) on ``pattern`` to ``handler``."""
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        if not methods or not all(_METHOD.fullmatch(m) for m in methods):
            raise ValueError(f"methods must be upper-case names, got {methods!r}")
        if not pattern.startswith("/"):
            raise ValueError(f"a route starts with '/': {pattern!r}")
        path = _normalise(pattern)
        if "{" not in path and "}" not in path:
            routes = self._static.setdefault(path, {})
            for method in methods:
                self._claim(routes, method, pattern)
                routes[method] = Match(handler)
            return
        compiled = self._patterns.get(path) or _compile(path)
        for method in methods:
            self._claim(compiled.handlers, method, pattern)
            compiled.handlers[method] = handler
        self._patterns[path] = compiled

    def match(self, method: str, path: str) -> Match:
        path = _normalise(path)
        routes = self._static.get(path)
        if routes is not None:
            return routes.get(method) or Match(None, allowed=tuple(routes))
        parts = path.split("/")
        allowed: list[str] = []
        for compiled in self._patterns.values():
            params = compiled.capture(parts)
            if params is None:
                continue
            handler = compiled.handlers.get(method)
            if handler is not None:
                return Match(handler, MappingProxyType(params))
            allowed.extend(m for m in compiled.handlers if m not in allowed)
        return Match(None, allowed=tuple(allowed)) if allowed else _NOT_FOUND

    @staticmethod
    def _claim(routes: Mapping[str, object], method: str, pattern: str) -> None:
        if method in routes:
            raise ValueError(f"{method} {pattern} is routed twice")


def _normalise(path: str) -> str:
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


def _compile(path: str) -> _Pattern:
    segments: list[str | None] = []
    names: list[str] = []
    for part in path.split("/"):
        found = _PLACEHOLDER.fullmatch(part)
        if found is not None:
            if found[1] in names:
                raise ValueError(f"placeholder {{{found[1]}}} appears twice in {path!r}")
            names.append(found[1])
            segments.append(None)
        elif "{" in part or "}" in part:
            raise ValueError(f"a placeholder is a whole segment like {{name}}: {path!r}")
        else:
            segments.append(part)
    return _Pattern(tuple(segments), tuple(names))
