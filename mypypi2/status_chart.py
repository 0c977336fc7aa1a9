"""Bar charts of a status window as inline SVG (pure): drawn by the server, so the status
page needs no JavaScript and no asset from anywhere (it works air-gapped)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from mypypi2.status import Counts, Window

WIDTH = 600
HEIGHT = 170
_LEFT = 64  # room for the axis labels
_RIGHT = 8
_TOP = 10
_BOTTOM = 22
_PLOT_WIDTH = WIDTH - _LEFT - _RIGHT
_PLOT_HEIGHT = HEIGHT - _TOP - _BOTTOM


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    css_class: str  # its colour, from the page's style sheet
    value: Callable[[Counts], int]


REQUEST_SERIES = (
    Series("from cache", "s-cache", lambda c: c.from_cache),
    Series("from upstream", "s-fetched", lambda c: c.misses),
    Series("not found", "s-missing", lambda c: c.not_found),
    Series("errors", "s-error", lambda c: c.errors),
)
BYTE_SERIES = (
    Series("served", "s-served", lambda c: c.bytes_served),
    Series("fetched", "s-upstream", lambda c: c.bytes_fetched),
)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    raise AssertionError("unreachable")


def stacked(window: Window, series: Sequence[Series], title: str) -> str:
    """One bar a bucket, its series stacked (requests: each is answered one way)."""
    return _chart(window, series, title, grouped=False, label=lambda v: f"{v:,}")


def grouped(window: Window, series: Sequence[Series], title: str) -> str:
    """The series side by side in each bucket (bytes: served and fetched overlap)."""
    return _chart(window, series, title, grouped=True, label=human_bytes)


def _chart(
    window: Window,
    series: Sequence[Series],
    title: str,
    *,
    grouped: bool,
    label: Callable[[int], str],
) -> str:
    buckets = window.buckets
    heights = [[s.value(b) for s in series] for b in buckets]
    peak = max((max(h) if grouped else sum(h) for h in heights), default=0)
    top = _nice_ceiling(peak)
    slot = _PLOT_WIDTH / len(buckets)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):  # gridlines with their values
        y = _TOP + _PLOT_HEIGHT * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(label(round(top * fraction)))}</text>"
        )
    for index, (bucket, values) in enumerate(zip(buckets, heights, strict=True)):
        x = _LEFT + index * slot
        tip = ", ".join(f"{s.label} {label(v)}" for s, v in zip(series, values, strict=True))
        parts.append(f"<g><title>{_time(bucket)}: {escape(tip)}</title>")
        parts.append(
            f'<rect class="slot" x="{x:.2f}" y="{_TOP}" width="{slot:.2f}" '
            f'height="{_PLOT_HEIGHT}"/>'
        )
        base = 0
        for number, (one, value) in enumerate(zip(series, values, strict=True)):
            if not value:
                continue
            height = _PLOT_HEIGHT * value / top
            if grouped:
                width = slot * 0.8 / len(series)
                left = x + slot * 0.1 + number * width
                y = _TOP + _PLOT_HEIGHT - height
            else:
                width = slot * 0.8
                left = x + slot * 0.1
                y = _TOP + _PLOT_HEIGHT - (base + value) * _PLOT_HEIGHT / top
                base += value
            parts.append(
                f'<rect class="bar {one.css_class}" x="{left:.2f}" y="{y:.2f}" '
                f'width="{width:.2f}" height="{max(height, 0.5):.2f}"/>'
            )
        parts.append("</g>")
    middle = len(buckets) // 2
    for x, anchor, text in (
        (_LEFT, "start", _time(buckets[0])),
        (_LEFT + middle * slot, "middle", _time(buckets[middle])),
        (WIDTH - _RIGHT, "end", "now"),
    ):
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{text}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _time(bucket: Counts) -> str:
    return bucket.start.strftime("%H:%M")
