"""Reading the status page's numbers back: each element with `data-key` names a value of
/-/status.json by its path ("repositories.0.last_hour.totals.requests")."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any


def lookup(report: Any, key: str) -> Any:
    value = report
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def shown_as(value: Any) -> str:
    """How data-value spells a JSON value."""
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


class _Keyed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        key = named.get("data-key")
        if key is not None:
            self.found.append((key, named.get("data-value")))


def keyed_values(html: str) -> list[tuple[str, str | None]]:
    """(data-key, data-value) of every keyed element, in page order."""
    parser = _Keyed()
    parser.feed(html)
    return parser.found
