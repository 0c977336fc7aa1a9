"""The status page rendered from a report: escaped, self-contained, its numbers the JSON's."""

from __future__ import annotations

import datetime as dt
import re

import msgspec

from mypypi2.queries.traffic import ProjectUse, UpstreamFailure
from mypypi2.status import Counts, RepositoryStatus, Status, Storage, Upstream, Window
from mypypi2.status_chart import human_bytes
from mypypi2.status_page import render
from tests.support.status import keyed_values, lookup, shown_as

NOW = dt.datetime(2026, 12, 1, 15, 30, 20, tzinfo=dt.UTC)
HOSTILE = '<script>alert("x")</script>'


def window(bucket_seconds: int, count: int, requests: list[int]) -> Window:
    start = NOW - dt.timedelta(seconds=bucket_seconds * (count - 1))
    buckets = [
        Counts(
            start=start + dt.timedelta(seconds=bucket_seconds * i),
            requests=n,
            hits=n - n // 4,
            misses=n // 4,
            bytes_served=n * 1000,
            bytes_fetched=n * 250,
        )
        for i, n in enumerate(requests + [0] * (count - len(requests)))
    ]
    totals = Counts(start=start)
    for bucket in buckets:
        totals.add(bucket)
    ratio = totals.hits / (totals.hits + totals.misses) if totals.requests else None
    return Window(
        start=start, bucket_seconds=bucket_seconds, totals=totals, hit_ratio=ratio, buckets=buckets
    )


def report() -> Status:
    failure = UpstreamFailure("pypi", NOW, "page", "5xx", f"upstream said {HOSTILE}")
    repository = RepositoryStatus(
        name="pypi",
        last_hour=window(60, 60, [4, 0, 12]),
        last_day=window(3600, 24, [40, 7]),
        upstream=Upstream(
            url="https://upstream.example/simple/",
            state="failing",
            last_success=NOW - dt.timedelta(minutes=5),
            last_failure=NOW,
            failures=[failure],
        ),
        storage=Storage(files=3, bytes=2_500_000, max_bytes=10_000_000),
        top_projects=[ProjectUse("pypi", HOSTILE, 9, 12_345)],
    )
    empty = RepositoryStatus(
        name="private",
        last_hour=window(60, 60, []),
        last_day=window(3600, 24, []),
        upstream=Upstream(
            url="http://127.0.0.1:9/",
            state="unknown",
            last_success=None,
            last_failure=None,
            failures=[],
        ),
        storage=Storage(files=0, bytes=0, max_bytes=None),
        top_projects=[],
    )
    return Status(
        generated_at=NOW,
        repositories=[repository, empty],
        storage=Storage(files=3, bytes=2_500_000, max_bytes=None),
    )


def test_upstream_texts_are_escaped_and_nothing_is_loaded_from_elsewhere() -> None:
    page = render(report()).decode()
    assert HOSTILE not in page
    assert "upstream said &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<script" not in page
    # No URL but the icon's data: one and the SVG namespace (an identifier, never fetched).
    urls = set(re.findall(r'(?:href|src)="([^"]*)"', page))
    assert urls == {"data:,", "status.json"}


def test_every_number_on_the_page_is_the_one_in_the_json() -> None:
    status = report()
    as_json = msgspec.json.decode(msgspec.json.encode(status))
    keyed = keyed_values(render(status).decode())
    keys = {key for key, _value in keyed}
    assert {
        "repositories.0.last_hour.totals.requests",
        "repositories.0.last_day.totals.bytes_served",
        "repositories.0.last_hour.hit_ratio",
        "repositories.0.top_projects.0.requests",
        "repositories.0.storage.bytes",
        "repositories.1.last_hour.hit_ratio",
        "storage.files",
    } <= keys
    for key, value in keyed:
        if value is not None:
            assert value == shown_as(lookup(as_json, key)), key
    assert lookup(as_json, "repositories.0.last_hour.totals.requests") == 16


def test_the_charts_draw_a_bar_for_each_bucket_with_traffic() -> None:
    page = render(report()).decode()
    charts = re.findall(r'<svg class="chart".*?</svg>', page)
    assert len(charts) == 8  # requests and bytes, hour and day, for each repository
    requests_last_hour = charts[0]
    assert requests_last_hour.count("<g>") == 60
    heights = [
        float(h) for h in re.findall(r'class="bar s-cache"[^>]*height="([\d.]+)"', charts[0])
    ]
    assert len(heights) == 2 and heights[1] > heights[0]  # 3 hits, then 9
    assert 'class="bar' not in charts[4]  # the empty repository's


def test_sizes_read_in_decimal_units() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 2_500_000, 3 * 10**12, 10**16)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "2.5 MB",
        "3.0 TB",
        "10000.0 TB",
    ]
