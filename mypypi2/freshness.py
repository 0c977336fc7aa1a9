"""When an index page may be served as held, and when the upstream must be asked (pure).

Plain numbers in, plain answers out: no I/O, no clock (the caller passes `now`, seconds
since the epoch), no database. pages.py and page_refresh.py orchestrate; every decision
they take on time is one of these functions, so the whole policy can be read, and tested,
as a table.

A copy "confirmed at `checked_at`" is the last time the upstream (or, offline, the store)
vouched for it; `ttl` is the one that applies to it (see `ttl`).
"""

from __future__ import annotations

from typing import Literal

# After an upstream failure, nobody asks that page's upstream again for this long (capped
# by the TTL): a stale copy is served meanwhile, or the recorded error answered.
ERROR_RETRY_SECONDS = 30.0
# While the database is unreachable, a held snapshot is served this long between attempts.
DATABASE_RETRY_SECONDS = 1.0
FOREVER: Literal["forever"] = "forever"

Window = float | Literal["forever"]


def ttl_for(found: bool, found_ttl: float, negative_ttl: float) -> float:
    """How long a page is served without asking: a 404 is remembered for the negative TTL."""
    return found_ttl if found else negative_ttl


def is_fresh(now: float, fresh_until: float) -> bool:
    """Whether a copy is served as held (at exactly `fresh_until` it is not)."""
    return now < fresh_until


def serve_until(now: float, checked_at: float, ttl: float, offline: bool) -> float:
    """Until when a confirmed copy is served without looking at the store again. Offline
    nothing can confirm it, so what is stored is served a TTL at a time."""
    fresh_until = checked_at + ttl
    return max(fresh_until, now + ttl) if offline else fresh_until


def must_revalidate(now: float, checked_at: float, revalidate_after: float, offline: bool) -> bool:
    """Whether a client's no-cache / max-age=0 obliges us to ask the upstream now: only when
    our copy was confirmed at least `revalidate_after` seconds ago (-1: never; offline:
    there is nobody to ask)."""
    if revalidate_after < 0 or offline:
        return False
    return now >= checked_at + revalidate_after


def may_serve_while_revalidating(now: float, fresh_until: float, window: float) -> bool:
    """Whether a copy just past its freshness is served while it is revalidated in the
    background (stale-while-revalidate)."""
    return now < fresh_until + window


def stale_until(checked_at: float, ttl: float, window: Window) -> float:
    """The end of the stale-if-error window of a copy confirmed at `checked_at`."""
    if window == FOREVER:
        return float("inf")
    return checked_at + ttl + window


def may_serve_on_error(now: float, checked_at: float, ttl: float, window: Window) -> bool:
    """Whether a copy may be served, marked stale, when it cannot be refreshed."""
    return now < stale_until(checked_at, ttl, window)


def retry_after_failure(now: float, ttl: float) -> float:
    """After a failure at `now`, when the upstream is asked again (never later than a TTL)."""
    return now + min(ttl, ERROR_RETRY_SECONDS)


def retry_after_outage(now: float) -> float:
    """While the database is unreachable, until when a held copy is served between attempts."""
    return now + DATABASE_RETRY_SECONDS


def stale_serve_until(retry_at: float, checked_at: float, ttl: float, window: Window) -> float:
    """Until when a copy served stale after a failure is served before asking again: the
    pause, and never past the end of the stale-if-error window."""
    return min(retry_at, stale_until(checked_at, ttl, window))


def is_gone(not_found_in_a_row: int, gone_after: int) -> bool:
    """Whether the upstream's 404s, this many in a row, make us give up a page we hold."""
    return not_found_in_a_row >= gone_after


def is_older(received_serial: int | None, known_serial: int | None) -> bool:
    """Whether the upstream sent an older serial than ours (a stale CDN edge): the serial
    only ever moves forward, so ours is kept. Without both serials, nothing is older."""
    if received_serial is None or known_serial is None:
        return False
    return received_serial < known_serial
