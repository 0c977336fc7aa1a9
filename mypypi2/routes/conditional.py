"""Conditional requests (RFC 9110 section 13), shared by every route and the warm path.

Header values arrive as any string a client can send: nothing here raises on one.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from email.utils import parsedate_tz

from starlette.requests import Request

from mypypi2.snapshot import Representation, names_any

# The longest HTTP-date (RFC 850 form, a long weekday) is 36 characters; anything much
# longer is not one, and is neither parsed nor memoized.
_MAX_DATE_LENGTH = 64


def etag_matches(request: Request, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (weak comparison, as 13.1.2 asks for GET)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    return names_any(header, (etag,))


def page_not_modified(
    representation: Representation,
    changed_at: dt.datetime,
    if_none_match: str | None,
    if_modified_since: str | None,
) -> bool:
    """Whether a GET of a page representation last changed at `changed_at` (its
    Last-Modified) is answered 304 (RFC 9110 §13.2.2).

    If-None-Match decides when present, If-Modified-Since is then not looked at (§13.1.3:
    entity tags are the more accurate validator).
    """
    if if_none_match is not None:
        return representation.matches(if_none_match)
    if if_modified_since is None:
        return False
    since = http_date(if_modified_since)
    # Last-Modified is sent in whole seconds, so compare in whole seconds: a client echoing
    # it back must get its 304.
    return since is not None and int(changed_at.timestamp()) <= since


def http_date(value: str) -> int | None:
    """Epoch seconds of an HTTP-date (RFC 9110 §5.6.7, any of its three forms), or None.

    Lenient about the form (whatever the email date parser reads), strict about the
    fields: a year past 9999 or a 25th hour is no date, and an invalid date is ignored.
    Memoized: clients echo our own Last-Modified.
    """
    if len(value) > _MAX_DATE_LENGTH:
        return None
    return _http_date(value)


@functools.lru_cache(maxsize=256)
def _http_date(value: str) -> int | None:
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    if not (1 <= year <= 9999 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    # No zone (the asctime form) means GMT in HTTP, not local time as in mktime_tz.
    return calendar.timegm((year, month, day, hour, minute, second)) - (parsed[9] or 0)
