"""The status report as one self-contained HTML page (pure): inline style and charts, no
script, nothing loaded from elsewhere. Every text from an upstream or a client (error
messages, project names) is escaped. Elements holding a number carry it exactly in
`data-value`, named by its place in /-/status.json (`data-key`), for tools and tests."""

from __future__ import annotations

import datetime as dt
from html import escape

from mypypi2 import status_chart
from mypypi2.status import Counts, RepositoryStatus, Status, Storage, Window
from mypypi2.status_chart import BYTE_SERIES, REQUEST_SERIES, human_bytes

REFRESH_SECONDS = 30

_STYLE = """
:root { --fg: #1d2330; --muted: #5f6b7a; --bg: #f4f6f9; --card: #fff; --line: #dde2ea;
  --cache: #2f9e5b; --fetched: #3d7bd9; --missing: #a3acb9; --error: #d64545;
  --served: #3d7bd9; --upstream: #e08a1e; --ok: #2f9e5b; --failing: #d64545; --unknown: #8a94a3; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e3e8ef; --muted: #9aa5b4; --bg: #14171c; --card: #1d2128; --line: #313743; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 24px;
  margin-bottom: 16px; }
h1 { font-size: 22px; margin: 0; }
h2 { font-size: 18px; margin: 0; }
h3 { font-size: 13px; margin: 14px 0 6px; color: var(--muted); text-transform: uppercase;
  letter-spacing: .04em; }
a { color: var(--fetched); }
.muted { color: var(--muted); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 20px; margin-bottom: 20px; }
.title { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px; }
.badge { font-size: 12px; font-weight: 600; padding: 2px 8px; border-radius: 10px; color: #fff; }
.badge.ok { background: var(--ok); } .badge.failing { background: var(--failing); }
.badge.unknown { background: var(--unknown); }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th:first-child, td:first-child, table.left td, table.left th { text-align: left; }
th.group { text-align: center; border-bottom: 2px solid var(--line); }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.text { text-align: left; white-space: normal; word-break: break-word; }
.grid2 { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px 32px;
  margin-top: 12px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: minmax(0, 1fr); } }
.scroll { overflow-x: auto; }
figure { margin: 0; }
figcaption { font-size: 12px; color: var(--muted); }
.legend span { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin: 0 4px 0 10px; vertical-align: -1px; }
svg.chart { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axis { fill: var(--muted); font-size: 11px; }
svg .slot { fill: transparent; } svg g:hover .slot { fill: var(--line); opacity: .5; }
.s-cache { fill: var(--cache); background: var(--cache); }
.s-fetched { fill: var(--fetched); background: var(--fetched); }
.s-missing { fill: var(--missing); background: var(--missing); }
.s-error { fill: var(--error); background: var(--error); }
.s-served { fill: var(--served); background: var(--served); }
.s-upstream { fill: var(--upstream); background: var(--upstream); }
.meter { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden;
  margin-top: 4px; }
.meter div { height: 100%; background: var(--fetched); }
.meter div.full { background: var(--error); }
"""


def render(status: Status) -> bytes:
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">\n',
        # An icon of its own, so the browser asks no one for /favicon.ico.
        '<link rel="icon" href="data:,">\n',
        "<title>mypypi2 status</title>\n",
        f"<style>{_STYLE}</style>\n</head>\n<body>\n",
        "<header><h1>mypypi2 status</h1>",
        f'<span class="muted">generated {_time(status.generated_at)} · every worker and '
        f"replica, a few seconds late · refreshes every {REFRESH_SECONDS} s</span>",
        '<a href="status.json">JSON</a></header>\n',
        f'<div class="card">Store: {_storage(status.storage, "storage")}</div>\n',
    ]
    if not status.repositories:
        parts.append('<div class="card">No repositories are configured.</div>\n')
    for index, repository in enumerate(status.repositories):
        parts.append(_repository(repository, f"repositories.{index}"))
    parts.append("</body>\n</html>\n")
    return "".join(parts).encode()


def _repository(repository: RepositoryStatus, key: str) -> str:
    upstream = repository.upstream
    name = escape(repository.name)
    parts = [
        f'<section class="card" id="repository-{name}">\n<div class="title"><h2>{name}</h2>',
        f'<span class="badge {upstream.state}" data-key="{key}.upstream.state">'
        f"upstream {upstream.state}</span>",
        f'<span class="muted">{escape(upstream.url)}</span></div>\n',
        _totals(repository, key),
        '<div class="grid2">',
        _figure(
            status_chart.stacked(repository.last_hour, REQUEST_SERIES, "Requests, last hour"),
            "Requests a minute, last hour",
            REQUEST_SERIES,
        ),
        _figure(
            status_chart.stacked(repository.last_day, REQUEST_SERIES, "Requests, last day"),
            "Requests an hour, last day",
            REQUEST_SERIES,
        ),
        _figure(
            status_chart.grouped(repository.last_hour, BYTE_SERIES, "Bytes, last hour"),
            "Bytes a minute, last hour",
            BYTE_SERIES,
        ),
        _figure(
            status_chart.grouped(repository.last_day, BYTE_SERIES, "Bytes, last day"),
            "Bytes an hour, last day",
            BYTE_SERIES,
        ),
        '</div>\n<div class="grid2"><div>',
        _upstream(repository, key),
        f"<h3>Storage</h3><div>{_storage(repository.storage, f'{key}.storage')}</div>",
        "</div><div>",
        _top_projects(repository, key),
        "</div></div>\n</section>\n",
    ]
    return "".join(parts)


def _totals(repository: RepositoryStatus, key: str) -> str:
    header = (
        '<tr><th></th><th class="group" colspan="6">requests</th>'
        '<th class="group" colspan="2">bytes</th><th class="group">upstream</th></tr>'
        "<tr><th></th><th>all</th><th>hit ratio</th><th>from cache</th><th>from upstream</th>"
        "<th>not found</th><th>errors</th><th>served</th><th>fetched</th>"
        "<th>failed requests</th></tr>"
    )
    rows = [header]
    for label, field, window in (
        ("last hour", "last_hour", repository.last_hour),
        ("last day", "last_day", repository.last_day),
    ):
        totals = window.totals
        at = f"{key}.{field}"
        rows.append(
            f"<tr><td>{label}</td>"
            f"{_count(totals.requests, f'{at}.totals.requests')}"
            f"{_ratio(window, f'{at}.hit_ratio')}"
            f"{_count(totals.from_cache, None)}"
            f"{_count(totals.misses, f'{at}.totals.misses')}"
            f"{_count(totals.not_found, f'{at}.totals.not_found')}"
            f"{_count(totals.errors, f'{at}.totals.errors')}"
            f"{_bytes(totals.bytes_served, f'{at}.totals.bytes_served')}"
            f"{_bytes(totals.bytes_fetched, f'{at}.totals.bytes_fetched')}"
            f"<td>{_upstream_failures(totals, at)}</td></tr>"
        )
    return f'<div class="scroll"><table>{"".join(rows)}</table></div>\n'


def _upstream_failures(totals: Counts, at: str) -> str:
    failures = _number(totals.upstream_failures, f"{at}.totals.upstream_failures")
    requests = _number(totals.upstream_requests, f"{at}.totals.upstream_requests")
    return f"{failures} of {requests}"


def _figure(svg: str, caption: str, series: tuple[status_chart.Series, ...]) -> str:
    legend = "".join(f'<span class="{s.css_class}"></span>{escape(s.label)}' for s in series)
    return (
        f"<figure>{svg}<figcaption>{escape(caption)}"
        f'<span class="legend">{legend}</span></figcaption></figure>'
    )


def _upstream(repository: RepositoryStatus, key: str) -> str:
    upstream = repository.upstream
    parts = [
        "<h3>Upstream</h3><p>",
        f"last success: {_maybe_time(upstream.last_success)}<br>",
        f"last failure: {_maybe_time(upstream.last_failure)}</p>",
    ]
    if upstream.failures:
        parts.append(
            '<table class="left"><tr><th>time</th><th>kind</th><th>result</th><th>error</th></tr>'
        )
        for number, failure in enumerate(upstream.failures):
            parts.append(
                f"<tr><td>{_time(failure.at)}</td><td>{escape(failure.kind)}</td>"
                f'<td data-key="{key}.upstream.failures.{number}.result">'
                f"{escape(failure.result)}</td>"
                f'<td class="text">{escape(failure.error or "")}</td></tr>'
            )
        parts.append("</table>")
    return "".join(parts)


def _top_projects(repository: RepositoryStatus, key: str) -> str:
    parts = ["<h3>Top projects, last day</h3>"]
    if not repository.top_projects:
        parts.append('<p class="muted">none yet</p>')
        return "".join(parts)
    parts.append("<table><tr><th>project</th><th>requests</th><th>served</th></tr>")
    for number, project in enumerate(repository.top_projects):
        at = f"{key}.top_projects.{number}"
        parts.append(
            f'<tr><td class="text" data-key="{at}.project">{escape(project.project)}</td>'
            f"{_count(project.requests, f'{at}.requests')}"
            f"{_bytes(project.bytes_served, f'{at}.bytes_served')}</tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def _storage(storage: Storage, key: str) -> str:
    used = (
        f"{_number(storage.files, f'{key}.files')} file{'' if storage.files == 1 else 's'}, "
        f'<span data-key="{key}.bytes" data-value="{storage.bytes}">'
        f"{human_bytes(storage.bytes)}</span>"
    )
    if storage.max_bytes is None:
        return f"{used} (no max-bytes)"
    share = min(storage.bytes / storage.max_bytes, 1.0)
    full = ' class="full"' if share >= 0.9 else ""
    return (
        f"{used} of {human_bytes(storage.max_bytes)} ({share:.0%})"
        f'<div class="meter"><div{full} style="width: {share:.1%}"></div></div>'
    )


def _number(value: int, key: str) -> str:
    return f'<span data-key="{key}" data-value="{value}">{value:,}</span>'


def _count(value: int, key: str | None) -> str:
    named = "" if key is None else f' data-key="{key}" data-value="{value}"'
    return f"<td{named}>{value:,}</td>"


def _bytes(value: int, key: str) -> str:
    exact = f'data-key="{key}" data-value="{value}" title="{value:,} bytes"'
    return f"<td {exact}>{human_bytes(value)}</td>"


def _ratio(window: Window, key: str) -> str:
    ratio = window.hit_ratio
    if ratio is None:
        return f'<td data-key="{key}" data-value="null">n/a</td>'
    return f'<td data-key="{key}" data-value="{ratio!r}">{ratio:.1%}</td>'


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _maybe_time(moment: dt.datetime | None) -> str:
    return "never" if moment is None else _time(moment)
