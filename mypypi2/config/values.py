"""The value types options have besides msgspec's own: durations, sizes, file-hosts entries.

A duration or size may be written with a unit ("15m", "512MiB"); `convert.py` turns such
strings into these numbers before the option Structs are built.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Literal, NamedTuple

from msgspec import Meta

from mypypi2.urls import normalize_host

# An option of one of these types also takes a string with a unit ("15m", "512MiB").
Seconds = Annotated[float, Meta(extra={"unit": "duration"})]
WholeSeconds = Annotated[int, Meta(extra={"unit": "duration"})]
Bytes = Annotated[int, Meta(extra={"unit": "size"})]
Unit = Literal["duration", "size"]

# Unit names are matched case-insensitively; none means seconds or bytes.
_UNITS: dict[Unit, dict[str, int]] = {
    "duration": {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400},
    "size": {
        **{"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12},
        **{"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40},
    },
}
# What each accepts, for error messages and config.example.toml.
FORMS: dict[Unit, str] = {
    "duration": 'a number of seconds, or a number and s, m, h or d ("90s", "15m", "36h", "7d")',
    "size": "a number of bytes, or a number and kB, MB, GB, TB (powers of 1000) or KiB, MiB, "
    'GiB, TiB (powers of 1024), such as "512MiB" or "200GB"',
}
_QUANTITY = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "1.5m", "36h", "7d"; ValueError naming the accepted forms."""
    return float(_quantity(text, "duration"))


def parse_size(text: str) -> int:
    """Bytes in "1000", "512MiB", "200GB" (GB = 10**9, GiB = 2**30); ValueError otherwise."""
    amount = _quantity(text, "size")
    if amount.denominator != 1:
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(amount)


def _quantity(text: str, unit: Unit) -> Fraction:
    match = _QUANTITY.fullmatch(text)
    scale = _UNITS[unit].get(match[2].lower()) if match else None
    if match is None or scale is None:
        raise ValueError(f"{text!r} is not a {unit}: {FORMS[unit]}")
    return Fraction(match[1]) * scale


def format_duration(seconds: float) -> str:
    """The shortest exact spelling with a unit: 600 -> "10m", 90 -> "90s"."""
    for name, scale in sorted(_UNITS["duration"].items(), key=lambda item: -item[1]):
        if seconds and name and seconds % scale == 0:
            return f"{int(seconds // scale)}{name}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """The shortest exact binary spelling: 16777216 -> "16MiB", 1000 -> "1000B"."""
    for name in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS["size"][name.lower()]
        if size and size % scale == 0:
            return f"{size // scale}{name}"
    return f"{size}B"


class FileHost(NamedTuple):
    """One `file-hosts` entry: a host, "*." + a domain (its subdomains), or "*" (any host)."""

    host: str  # normalized; empty for "*"
    subdomains: bool

    @classmethod
    def parse(cls, entry: str) -> FileHost:
        if entry == "*":
            return cls("", subdomains=True)
        host = entry.removeprefix("*.")
        if not host or any(c in host for c in "*/@: "):
            raise ValueError(
                f"file-hosts entry {entry!r}: use a host (no port), '*.' + a domain, or '*'"
            )
        return cls(normalize_host(host), subdomains=host != entry)

    def matches(self, host: str) -> bool:
        host = normalize_host(host)
        if not self.subdomains:
            return host == self.host
        return not self.host or host.endswith(f".{self.host}")
