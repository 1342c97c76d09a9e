"""Free text from outside: what a database can store and a person can read.

PostgreSQL's TEXT cannot hold a NUL character, and a lone surrogate (which JSON's \\ud800
escape can carry) is no character at all: neither can be stored, so both are refused with
the field's name instead of failing in the database. Inputs a person types on one line (a
case number, a name, initials) refuse every control character; multi-line text keeps tab
and line breaks.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import AfterValidator
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.problems import problem

_LINE_BREAKS = frozenset("\t\n\r")


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored (a NUL or a lone surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        return "contains a lone surrogate (an invalid \\ud800-\\udfff escape), which is not text"
    return None


def control_character(text: str, *, multiline: bool) -> str | None:
    """Why `text` is refused as free text (a control character, or unstorable), or None."""
    why = unstorable(text)
    if why:
        return why
    for ch in text:
        if unicodedata.category(ch) == "Cc" and not (multiline and ch in _LINE_BREAKS):
            where = "" if multiline else " (one line: no tab or line break)"
            return f"contains a control character (U+{ord(ch):04X}){where}"
    return None


def _single_line(v: str) -> str:
    why = control_character(v, multiline=False)
    if why:
        raise ValueError(why)
    return v


def _multi_line(v: str) -> str:
    why = control_character(v, multiline=True)
    if why:
        raise ValueError(why)
    return v


def _storable(v: str) -> str:
    why = unstorable(v)
    if why:
        raise ValueError(why)
    return v


# Pydantic field types: add to `str` fields of request bodies.
OneLine = Annotated[str, AfterValidator(_single_line)]
MultiLine = Annotated[str, AfterValidator(_multi_line)]
Storable = Annotated[str, AfterValidator(_storable)]


def unstorable_strings(value: Any) -> Iterator[tuple[str, str]]:
    """(path, reason) of every string in a JSON document (keys too) that cannot be stored,
    the path as `a.b[0].c`. Iterative: a deeply nested document does not recurse."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            why = unstorable(v)
            if why:
                yield path or "(value)", why
        elif isinstance(v, dict):
            for k, item in reversed(list(v.items())):
                key = str(k)
                sub = f"{path}.{key}" if path else key
                why = unstorable(key)
                if why:
                    yield sub, f"the key {why}"
                stack.append((sub, item))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(v))))


# ------------------------------------------------------------------------------------------
# URLs: a path or query parameter is text too, and often reaches the database (an id).
# ------------------------------------------------------------------------------------------


def url_problem(path: str, query_string: bytes) -> tuple[str, str] | None:
    """(field, reason) when the decoded path or a query parameter holds a control
    character (a NUL above all), which no id or search term of ours can hold."""
    why = control_character(path, multiline=False)
    if why:
        return "(path)", why
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        why = control_character(name, multiline=False)
        if why:
            return "(query)", f"a parameter's name {why}"
        why = control_character(value, multiline=False)
        if why:
            return name, why
    return None


class RefuseControlCharactersInUrls:
    """ASGI middleware: a request whose URL holds a control character is answered 422
    naming the path or the parameter, before any route (and any database) sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = url_problem(scope.get("path", ""), scope.get("query_string", b""))
            if found is not None:
                field, reason = found
                await problem(422, [{"field": field, "reason": reason}])(scope, receive, send)
                return
        await self.app(scope, receive, send)
