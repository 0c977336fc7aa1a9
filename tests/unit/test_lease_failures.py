"""A recorded refresh failure stands for the error that caused it, for every process."""

from __future__ import annotations

import datetime as dt

import pytest

from mypypi2.errors import UpstreamError, UpstreamNotFound, UpstreamTimeout
from mypypi2.queries.leases import Failure

UNTIL = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
URL = "https://upstream.invalid/simple/demo/"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        pytest.param(UpstreamError(URL, "status 503"), "error", id="error"),
        pytest.param(UpstreamTimeout(URL, "read timed out"), "timeout", id="timeout"),
        pytest.param(UpstreamNotFound(URL), "not-found", id="not-found"),
    ],
)
def test_a_failure_raises_the_error_it_recorded(error: UpstreamError, kind: str) -> None:
    failure = Failure.of(error, UNTIL)
    assert (failure.until, failure.kind, failure.url, failure.reason) == (
        UNTIL,
        kind,
        URL,
        error.reason,
    )
    raised = failure.error()
    assert type(raised) is type(error)
    assert (raised.url, raised.reason, str(raised)) == (error.url, error.reason, str(error))
