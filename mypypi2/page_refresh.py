"""The refresh of one index page under its lease (the freshness policy of pages.py, continued).

2. Read the page's state row: if another worker or replica refreshed it within the TTL,
   serve the stored rows (re-using this worker's rendering when the revision has not moved).
3. Still stale: take the page's lease (queries/leases.py), so one process in the whole
   deployment asks the upstream while the others poll the state until it is saved. No
   database connection is held while the upstream answers: a slow upstream never empties
   the pool. The holder re-reads the state (the holder before it may have just saved the
   page), sends one conditional request, then saves in one short transaction:
   - 304, or a 200 with the same content: only the freshness moves (revision unchanged,
     so every rendering and ETag stays valid);
   - 200 with an older serial than ours (a stale CDN edge): ignored, ours is kept;
   - 200 with new content: the rows are replaced in one transaction and the revision bumps;
   - 404: remembered as not found for the negative TTL, but a page we hold is only
     given up after `gone-after-404s` consecutive 404s (until then it is served stale);
     a kind that never remembers a 404 (the project list) takes it as a failure, but
     serves the copy it holds stale through it, past the stale-if-error window too;
   - any failure (timeout, connection error, 5xx, a malformed page, values PostgreSQL
     refuses to store): recorded for every process for a short pause, during which nobody
     asks again; within the stale-if-error window the copy we hold is served, marked stale,
     and with nothing (usable) stored the error goes up (never as a 404).
Offline, step 3 never happens: what is stored is served, the rest is not found.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import TypeGuard

import msgspec

from mypypi2 import freshness, observe
from mypypi2.clock import Clock
from mypypi2.db import Connection, Database, is_refusal
from mypypi2.errors import DatabaseUnavailable, NotStored, UpstreamError, UpstreamNotFound
from mypypi2.models import ProjectList, ProjectPage, Validators
from mypypi2.page_kinds import Kind, M
from mypypi2.queries import PageState, leases
from mypypi2.snapshot import STALE_UPSTREAM, Snapshot
from mypypi2.upstream.client import Fetched, NotModified

log = logging.getLogger(__name__)

# A refresh's lease on its page, renewed every third of it while the upstream is asked: a
# crashed holder's page is taken over within this long.
LEASE_SECONDS = 10.0
# How often a process waiting for another one's refresh looks at the page's state.
POLL_FIRST_SECONDS = 0.01
POLL_MAX_SECONDS = 0.2
# Failures recorded longer ago than this are deleted, a few at a time, on the way.
FAILURES_KEPT_SECONDS = 3600.0
FAILURES_DELETED_AT_ONCE = 100


class _Claimed(msgspec.Struct, frozen=True):
    """This process holds the page's lease; `state` was read after taking it."""

    state: PageState | None


class PageRefresh:
    def __init__(
        self,
        database: Database,
        current: Callable[[tuple[str, str]], Snapshot | None],
        *,
        offline: bool,
        clock: Clock,
    ) -> None:
        self._db = database
        self._current = current  # this worker's snapshot of a page, by key
        self._offline = offline
        self._clock = clock

    async def snapshot(self, kind: Kind[M], revalidate: bool) -> Snapshot:
        """The page as stored once it is fresh, refreshing it or waiting for whoever does."""
        holder = uuid.uuid4()
        pause = POLL_FIRST_SECONDS
        while True:
            found = await self._look(kind, revalidate, holder)
            if isinstance(found, Snapshot):
                return found
            if found is not None:
                return await self._refresh(kind, found.state, holder)
            # Another process is asking the upstream: its answer will be in the state.
            observe.joined()
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX_SECONDS)

    async def _look(
        self, kind: Kind[M], revalidate: bool, holder: uuid.UUID
    ) -> Snapshot | _Claimed | None:
        """One short visit to the database: what to serve, or the lease (None: another
        process holds it)."""
        async with self._db.connection() as connection:
            state = await kind.state(connection)
            if self._offline:
                if state is None:
                    raise NotStored(*kind.key)
                return await self._served(connection, kind, state)
            if self._is_fresh(state, kind, revalidate):
                return await self._served(connection, kind, state)
            refresh = await leases.get_refresh(connection, *kind.key)
            if refresh is not None:
                failure = refresh.failure
                if failure is not None and self._clock() < failure.until.timestamp():
                    return await self._after_failure(connection, kind, state, failure)
                if refresh.leased:
                    return None
            if not await leases.claim(connection, *kind.key, holder, LEASE_SECONDS, self._now()):
                return None
            # Whoever held the lease before us may have saved the page just now.
            state = await kind.state(connection)
            if self._is_fresh(state, kind, revalidate):
                await leases.end_lease(connection, *kind.key, holder)
                return await self._served(connection, kind, state)
            return _Claimed(state)

    async def _after_failure(
        self,
        connection: Connection,
        kind: Kind[M],
        state: PageState | None,
        failure: leases.Failure,
    ) -> Snapshot:
        """Another process's refresh failed moments ago: answer as it did."""
        held = state if state is not None and state.found else None
        retry_at = failure.until.timestamp()
        if held is not None and failure.kind == "not-found":  # not (yet) given up
            return await self._served_stale(connection, kind, held, retry_at)
        if held is not None and self._may_serve_on_error(kind, held):
            return await self._served_stale(connection, kind, held, retry_at)
        raise failure.error()

    def _is_fresh(
        self, state: PageState | None, kind: Kind[M], revalidate: bool
    ) -> TypeGuard[PageState]:
        if state is None:
            return False
        now = self._clock()
        checked_at = state.checked_at.timestamp()
        if state.purged or (
            revalidate
            and freshness.must_revalidate(
                now, checked_at, kind.repository.no_cache_revalidate_after, self._offline
            )
        ):
            return False
        ttl = kind.ttl_for(state.found)
        return freshness.is_fresh(now, freshness.serve_until(now, checked_at, ttl, self._offline))

    async def _refresh(self, kind: Kind[M], state: PageState | None, holder: uuid.UUID) -> Snapshot:
        """Ask the upstream once, holding the page's lease but no database connection."""
        held = state if state is not None and state.found else None
        renewal = asyncio.create_task(self._renew(kind, holder))
        try:
            result = await self._fetch(kind, held)
            return await self._save(kind, held, holder, result)
        except UpstreamNotFound as exc:
            return await self._not_found(kind, held, holder, exc)
        except UpstreamError as exc:  # no usable answer, or values PostgreSQL refused
            return await self._failed(kind, held, holder, exc)
        finally:
            # On an unexpected error the lease, no longer renewed, runs out by itself.
            renewal.cancel()
            with suppress(asyncio.CancelledError):
                await renewal

    async def _renew(self, kind: Kind[M], holder: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                async with self._db.connection() as connection:
                    await leases.renew(connection, *kind.key, holder, LEASE_SECONDS)
            except DatabaseUnavailable as exc:  # the next renewal may get through
                log.debug("cannot renew the lease on %s/%s: %s", *kind.key, exc)

    async def _fetch(self, kind: Kind[M], held: PageState | None) -> Fetched[M] | NotModified:
        try:
            return await kind.fetch(_validators(held))
        except UpstreamError:
            raise
        except Exception as exc:  # a page our reader chokes on is the upstream's fault
            log.exception("cannot read %s", kind.url)
            raise UpstreamError(kind.url, f"cannot read the page: {exc!r}") from exc

    async def _save(
        self,
        kind: Kind[M],
        held: PageState | None,
        holder: uuid.UUID,
        result: Fetched[M] | NotModified,
    ) -> Snapshot:
        """Store what the upstream said and end the lease, in one short transaction; an
        UpstreamError when PostgreSQL refuses the page's values (nothing is stored)."""
        observe.answered_as("revalidated" if isinstance(result, NotModified) else "miss")
        now = self._now()
        known = _validators(held)
        async with self._db.transaction() as connection:
            try:
                if isinstance(result, NotModified):
                    await kind.mark_checked(connection, result.validators, now)
                elif known is not None and freshness.is_older(
                    result.validators.last_serial, known.last_serial
                ):
                    # A stale CDN edge answered: what we hold is newer, keep it and its
                    # validators (the serial only ever moves forward).
                    log.info("kept %s/%s: upstream sent an older serial", *kind.key)
                    await kind.mark_checked(connection, known, now)
                else:
                    await _store(connection, kind, held, result, now)
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                raise UpstreamError(kind.url, f"cannot store the page: {exc}") from exc
            await leases.end_lease(connection, *kind.key, holder)
            return await self._served_saved(connection, kind)

    async def _not_found(
        self, kind: Kind[M], held: PageState | None, holder: uuid.UUID, exc: UpstreamNotFound
    ) -> Snapshot:
        missing = kind.not_found
        async with self._db.transaction() as connection:
            if held is not None and (
                missing is None
                or not freshness.is_gone(
                    await missing.record_missing(connection), kind.repository.gone_after_404s
                )
            ):
                log.warning("serving a stale copy of %s/%s: %s", *kind.key, exc)
                retry_at = await self._record_failure(connection, kind, holder, exc)
                return await self._served_stale(connection, kind, held, retry_at)
            if missing is not None:
                await missing.save(connection, self._now())
                await leases.end_lease(connection, *kind.key, holder)
                return await self._served_saved(connection, kind)
        return await self._failed(kind, held, holder, exc)

    async def _failed(
        self, kind: Kind[M], held: PageState | None, holder: uuid.UUID, exc: UpstreamError
    ) -> Snapshot:
        async with self._db.connection() as connection:
            retry_at = await self._record_failure(connection, kind, holder, exc)
            if held is not None and self._may_serve_on_error(kind, held):
                log.warning("serving a stale copy of %s/%s: %s", *kind.key, exc)
                return await self._served_stale(connection, kind, held, retry_at)
        # Once per failure: the requests waiting for this refresh are not logged again.
        log.warning("cannot refresh %s/%s: %s", *kind.key, exc)
        raise exc

    async def _record_failure(
        self,
        connection: Connection,
        kind: Kind[M],
        holder: uuid.UUID,
        exc: UpstreamError,
    ) -> float:
        """End the lease, leaving `exc` for every process until the pause ends (returned)."""
        now = self._clock()
        retry_at = freshness.retry_after_failure(now, kind.ttl)
        failure = leases.Failure.of(exc, _datetime(retry_at))
        await leases.record_failure(connection, *kind.key, holder, failure)
        await leases.delete_old(
            connection, _datetime(now - FAILURES_KEPT_SECONDS), FAILURES_DELETED_AT_ONCE
        )
        return retry_at

    def _may_serve_on_error(self, kind: Kind[M], held: PageState) -> bool:
        """Whether the stored copy may still be served stale."""
        checked_at = held.checked_at.timestamp()
        window = kind.repository.stale_if_error
        return freshness.may_serve_on_error(
            self._clock(), checked_at, kind.ttl_for(held.found), window
        )

    async def _served(self, connection: Connection, kind: Kind[M], state: PageState) -> Snapshot:
        """The snapshot of a confirmed `state`, served until its TTL ends."""
        checked_at = state.checked_at.timestamp()
        ttl = kind.ttl_for(state.found)
        fresh_until = freshness.serve_until(self._clock(), checked_at, ttl, self._offline)
        return await kind.snapshot(connection, state, self._current(kind.key), fresh_until, None)

    async def _served_saved(self, connection: Connection, kind: Kind[M]) -> Snapshot:
        """The snapshot of the state just saved in `connection`'s transaction."""
        state = await kind.state(connection)
        assert state is not None
        return await self._served(connection, kind, state)

    async def _served_stale(
        self, connection: Connection, kind: Kind[M], held: PageState, retry_at: float
    ) -> Snapshot:
        """The snapshot of the copy we hold, marked stale, served until `retry_at`."""
        observe.answered_as("stale", "upstream")
        checked_at = held.checked_at.timestamp()
        window = kind.repository.stale_if_error
        ttl = kind.ttl_for(held.found)
        fresh_until = freshness.stale_serve_until(retry_at, checked_at, ttl, window)
        current = self._current(kind.key)
        return await kind.snapshot(connection, held, current, fresh_until, STALE_UPSTREAM)

    def _now(self) -> dt.datetime:
        return _datetime(self._clock())


async def _store(
    connection: Connection,
    kind: Kind[M],
    held: PageState | None,
    result: Fetched[M],
    now: dt.datetime,
) -> None:
    """Save a 200: its rows when its content changed, only its freshness otherwise."""
    model = msgspec.structs.replace(result.model, last_serial=result.validators.last_serial)
    content_hash = _content_hash(model)
    if held is not None and held.content_hash == content_hash:
        await kind.mark_checked(connection, result.validators, now)
    else:
        await kind.save(connection, model, result.validators, content_hash, now)


def _datetime(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _validators(held: PageState | None) -> Validators | None:
    """What the upstream said of the copy we hold, sent back to revalidate it."""
    if held is None:
        return None
    return Validators(held.etag, held.last_modified, held.last_serial)


def _content_hash(model: ProjectPage | ProjectList) -> bytes:
    # Same content, same digest: an unchanged page keeps its revision and its ETags.
    return hashlib.blake2b(msgspec.msgpack.encode(model), digest_size=16).digest()
