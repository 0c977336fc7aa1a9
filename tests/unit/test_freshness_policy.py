"""The freshness policy as a table: each decision at, just before and just past its bounds."""

from __future__ import annotations

import math

import pytest

from mypypi2 import freshness
from mypypi2.freshness import DATABASE_RETRY_SECONDS, ERROR_RETRY_SECONDS, Window

T = 1_000_000.0  # when the copy was last confirmed
TTL = 600.0
NEGATIVE_TTL = 300.0


@pytest.mark.parametrize(
    ("found", "expected"),
    [pytest.param(True, TTL, id="found-ttl"), pytest.param(False, NEGATIVE_TTL, id="negative-ttl")],
)
def test_ttl_for(found: bool, expected: float) -> None:
    assert freshness.ttl_for(found, TTL, NEGATIVE_TTL) == expected


@pytest.mark.parametrize(
    ("now", "fresh_until", "expected"),
    [
        pytest.param(T, T + TTL, True, id="just-confirmed"),
        pytest.param(T + TTL - 0.001, T + TTL, True, id="just-before-ttl"),
        pytest.param(T + TTL, T + TTL, False, id="exactly-at-ttl"),
        pytest.param(T + TTL + 1, T + TTL, False, id="past-ttl"),
        pytest.param(T, -math.inf, False, id="expired-by-a-missed-purge"),
    ],
)
def test_is_fresh(now: float, fresh_until: float, expected: bool) -> None:
    assert freshness.is_fresh(now, fresh_until) is expected


@pytest.mark.parametrize(
    ("now", "ttl", "offline", "expected"),
    [
        pytest.param(T + 10, TTL, False, T + TTL, id="online-from-checked-at"),
        pytest.param(T + 10, NEGATIVE_TTL, False, T + NEGATIVE_TTL, id="online-negative-ttl"),
        pytest.param(T + 10, TTL, True, T + 10 + TTL, id="offline-a-ttl-from-now"),
        pytest.param(T - 10, TTL, True, T + TTL, id="offline-never-shorter"),
    ],
)
def test_serve_until(now: float, ttl: float, offline: bool, expected: float) -> None:
    assert freshness.serve_until(now, T, ttl, offline) == expected


@pytest.mark.parametrize(
    ("now", "after", "offline", "expected"),
    [
        pytest.param(T + 4.999, 5.0, False, False, id="no-cache-within-window"),
        pytest.param(T + 5.0, 5.0, False, True, id="no-cache-exactly-at-window"),
        pytest.param(T + 60, 5.0, False, True, id="no-cache-after-window"),
        pytest.param(T, 0.0, False, True, id="zero-always-asks"),
        pytest.param(T + 10**9, -1.0, False, False, id="minus-one-never"),
        pytest.param(T + 60, 5.0, True, False, id="offline-never"),
    ],
)
def test_must_revalidate(now: float, after: float, offline: bool, expected: bool) -> None:
    assert freshness.must_revalidate(now, T, after, offline) is expected


@pytest.mark.parametrize(
    ("now", "window", "expected"),
    [
        pytest.param(T + TTL, 60.0, True, id="exactly-at-ttl"),
        pytest.param(T + TTL + 59.999, 60.0, True, id="just-inside-swr"),
        pytest.param(T + TTL + 60, 60.0, False, id="exactly-at-swr-end"),
        pytest.param(T + TTL + 60.001, 60.0, False, id="just-past-swr"),
        pytest.param(T + TTL, 0.0, False, id="swr-off"),
    ],
)
def test_may_serve_while_revalidating(now: float, window: float, expected: bool) -> None:
    assert freshness.may_serve_while_revalidating(now, T + TTL, window) is expected


@pytest.mark.parametrize(
    ("now", "ttl", "window", "expected"),
    [
        pytest.param(T + TTL + 86399, TTL, 86400.0, True, id="inside-window"),
        pytest.param(T + TTL + 86400, TTL, 86400.0, False, id="exactly-at-window-end"),
        pytest.param(T + TTL, TTL, 0.0, False, id="no-window-at-ttl"),
        pytest.param(T + TTL - 1, TTL, 0.0, True, id="no-window-still-fresh"),
        pytest.param(T + NEGATIVE_TTL + 5, NEGATIVE_TTL, 10.0, True, id="not-found-negative-ttl"),
        pytest.param(T + NEGATIVE_TTL + 10, NEGATIVE_TTL, 10.0, False, id="not-found-past"),
        pytest.param(T + 10**12, TTL, "forever", True, id="forever"),
    ],
)
def test_may_serve_on_error(now: float, ttl: float, window: Window, expected: bool) -> None:
    assert freshness.may_serve_on_error(now, T, ttl, window) is expected


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        pytest.param(86400.0, T + TTL + 86400, id="seconds"),
        pytest.param("forever", math.inf, id="forever"),
    ],
)
def test_stale_until(window: Window, expected: float) -> None:
    assert freshness.stale_until(T, TTL, window) == expected


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        pytest.param(TTL, T + ERROR_RETRY_SECONDS, id="pause"),
        pytest.param(10.0, T + 10.0, id="capped-by-short-ttl"),
        pytest.param(ERROR_RETRY_SECONDS, T + ERROR_RETRY_SECONDS, id="ttl-equals-pause"),
    ],
)
def test_retry_after_failure(ttl: float, expected: float) -> None:
    assert freshness.retry_after_failure(T, ttl) == expected


def test_retry_after_outage() -> None:
    assert freshness.retry_after_outage(T) == T + DATABASE_RETRY_SECONDS


@pytest.mark.parametrize(
    ("retry_at", "window", "expected"),
    [
        pytest.param(T + TTL + 30, 86400.0, T + TTL + 30, id="the-pause"),
        pytest.param(T + TTL + 30, 10.0, T + TTL + 10, id="capped-by-window"),
        pytest.param(T + TTL + 30, 0.0, T + TTL, id="no-window"),
        pytest.param(T + 10**9, "forever", T + 10**9, id="forever-the-pause"),
    ],
)
def test_stale_serve_until(retry_at: float, window: Window, expected: float) -> None:
    assert freshness.stale_serve_until(retry_at, T, TTL, window) == expected


@pytest.mark.parametrize(
    ("in_a_row", "gone_after", "expected"),
    [
        pytest.param(1, 3, False, id="first-404"),
        pytest.param(2, 3, False, id="one-short"),
        pytest.param(3, 3, True, id="exactly-gone-after"),
        pytest.param(1, 1, True, id="gone-at-once"),
    ],
)
def test_is_gone(in_a_row: int, gone_after: int, expected: bool) -> None:
    assert freshness.is_gone(in_a_row, gone_after) is expected


@pytest.mark.parametrize(
    ("received", "known", "expected"),
    [
        pytest.param(9, 10, True, id="older"),
        pytest.param(10, 10, False, id="same"),
        pytest.param(11, 10, False, id="newer"),
        pytest.param(None, 10, False, id="no-received-serial"),
        pytest.param(9, None, False, id="no-known-serial"),
    ],
)
def test_is_older(received: int | None, known: int | None, expected: bool) -> None:
    assert freshness.is_older(received, known) is expected
