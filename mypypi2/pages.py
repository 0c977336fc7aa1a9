"""Index pages use case: project pages and project lists, pulled through and stored.

Freshness policy, in the order a request meets it:
1. This worker holds a snapshot younger than the TTL: serve it; nothing else is touched.
   Just past the TTL (stale-while-revalidate), serve it too and revalidate in the
   background. A client's no-cache / max-age=0 skips both shortcuts.
2. Otherwise, in one coalesced task per page (Coalescer), read the page's state row:
   if another worker or replica refreshed it within the TTL, serve the stored rows (re-using
   this worker's rendering when the revision has not moved).
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
   - any failure (timeout, connection error, 5xx, a malformed page, values PostgreSQL
     refuses to store): recorded for every process for a short pause, during which nobody
     asks again; within the stale-if-error window the copy we hold is served, marked stale,
     and with nothing (usable) stored the error goes up (never as a 404).
Offline, step 3 never happens: what is stored is served, the rest is not found.
While PostgreSQL is unreachable, the snapshot a worker holds is served marked stale (within
the same window); a page it does not hold is DatabaseUnavailable (503), at once.
Every decision on time is a pure function of freshness.py; this module orchestrates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Mapping
from contextlib import suppress
from typing import TypeGuard

import msgspec

from mypypi2 import freshness
from mypypi2.clock import Clock
from mypypi2.config import RepositoryConfig
from mypypi2.db import Connection, Database, is_refusal
from mypypi2.errors import (
    DatabaseUnavailable,
    NotStored,
    ProjectNotFound,
    RepositoryNotFound,
    UpstreamError,
    UpstreamNotFound,
)
from mypypi2.lru import LRU
from mypypi2.models import ProjectList, ProjectPage, Validators
from mypypi2.page_kinds import Kind, M, ProjectListKind, ProjectPageKind
from mypypi2.queries import Executor, PageState, leases, project_lists, projects
from mypypi2.queries.notifications import Purged
from mypypi2.snapshot import STALE_DATABASE, STALE_UPSTREAM, Snapshot
from mypypi2.upstream.client import Fetched, NotModified, UpstreamClient
from mypypi2.upstream.coalesce import Coalescer

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


class Pages:
    def __init__(
        self,
        database: Database,
        repositories: Mapping[str, RepositoryConfig],
        clients: Mapping[str, UpstreamClient],
        *,
        base_url: str = "",
        cache_entries: int = 4096,
        offline: bool = False,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._repositories = repositories
        self._clients = clients
        self.base_url = base_url.rstrip("/")
        # This worker's snapshots, by (repository, project name or "" for the list).
        self.cache: LRU[tuple[str, str], Snapshot] = LRU(cache_entries)
        self._coalescer: Coalescer[tuple[str, str], Snapshot] = Coalescer()
        self._background: set[asyncio.Task[None]] = set()
        self._offline = offline
        self._clock = clock
        self._database_down = False  # logged once per outage

    async def close(self) -> None:
        """Stop background revalidations (before the upstream sessions close)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def forget(self, purged: Purged) -> None:
        """Another process purged pages: drop this worker's snapshots of them."""
        self.cache.drop(lambda key: purged.covers(*key))

    def expire_all(self) -> None:
        """Purges may have been missed (the database connection was lost): read every page's
        state again before serving it, keeping the snapshots to serve if that fails."""
        for snapshot in self.cache.values():
            snapshot.fresh_until = -float("inf")

    def _repository(self, name: str) -> RepositoryConfig:
        repository = self._repositories.get(name)
        if repository is None:
            raise RepositoryNotFound(name)
        return repository

    async def project(self, repository: str, name: str, *, revalidate: bool = False) -> Snapshot:
        """The page of normalized project `name`; ProjectNotFound when the upstream has none.

        `revalidate`: the client asked for a revalidated answer (no-cache / max-age=0).
        """
        config = self._repository(repository)
        snapshot = self._cached((repository, name), config, revalidate)
        if snapshot is None:
            kind = ProjectPageKind(config, name, self._clients[repository], self.base_url)
            snapshot = await self._serve(kind, revalidate)
        if not snapshot.found:
            raise ProjectNotFound(repository, name)
        return snapshot

    async def project_list(self, repository: str, *, revalidate: bool = False) -> Snapshot:
        config = self._repository(repository)
        snapshot = self._cached((repository, ""), config, revalidate)
        if snapshot is None:
            kind = ProjectListKind(config, self._clients[repository], self.base_url)
            snapshot = await self._serve(kind, revalidate)
        return snapshot

    async def ping_database(self) -> None:
        await self._db.ping()

    def has_repository(self, name: str) -> bool:
        """Whether `name` is a configured repository (routes check it before redirecting)."""
        return name in self._repositories

    def warm(self, repository: str, name: str) -> Snapshot | None:
        """This worker's fresh snapshot of a page that exists, or None (then ask `project`
        or `project_list`, with `name` ""). Never waits, never touches the database."""
        config = self._repositories.get(repository)
        if config is None:
            return None
        snapshot = self._cached((repository, name), config, False)
        return snapshot if snapshot is not None and snapshot.found else None

    def _cached(
        self, key: tuple[str, str], config: RepositoryConfig, revalidate: bool
    ) -> Snapshot | None:
        """This worker's snapshot when it may be served as it is (the warm path)."""
        cached = self.cache.get(key)
        if cached is None or not freshness.is_fresh(self._clock(), cached.fresh_until):
            return None
        if revalidate and self._forced(config, cached.checked_at):
            return None
        return cached

    async def _serve(self, kind: Kind[M], revalidate: bool) -> Snapshot:
        """A page `_cached` could not answer: just past its TTL, from this worker's
        snapshot while it is revalidated in the background; otherwise through the state."""
        cached = self.cache.get(kind.key)
        if (
            cached is not None
            and cached.found
            and cached.stale is None
            and freshness.may_serve_while_revalidating(
                self._clock(), cached.fresh_until, kind.repository.stale_while_revalidate
            )
            and not (revalidate and self._forced(kind.repository, cached.checked_at))
        ):
            self._revalidate_in_background(kind)
            return cached
        try:
            return await self._coalescer.run(kind.key, lambda: self._resolve(kind, revalidate))
        except DatabaseUnavailable as exc:
            return self._through_outage(kind, exc)

    def _through_outage(self, kind: Kind[M], exc: DatabaseUnavailable) -> Snapshot:
        """The snapshot this worker holds, marked stale, while the database is unreachable."""
        if not self._database_down:
            self._database_down = True
            log.warning("serving held pages stale, failing the others: %s", exc)
        held = self.cache.get(kind.key)
        if held is None:
            raise exc
        now = self._clock()
        window = kind.repository.stale_if_error
        if not freshness.may_serve_on_error(now, held.checked_at, kind.ttl_for(held.found), window):
            raise exc
        if not freshness.is_fresh(now, held.fresh_until):
            held.stale = STALE_DATABASE
            held.fresh_until = freshness.retry_after_outage(now)
        return held

    def _revalidate_in_background(self, kind: Kind[M]) -> None:
        task = asyncio.ensure_future(self._revalidate(kind))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _revalidate(self, kind: Kind[M]) -> None:
        try:
            await self._coalescer.run(kind.key, lambda: self._resolve(kind, False))
        except DatabaseUnavailable as exc:
            with suppress(DatabaseUnavailable):
                self._through_outage(kind, exc)
        except Exception as exc:  # a background task has nobody to answer: log it
            log.warning("background revalidation of %s/%s failed: %s", *kind.key, exc)

    def _forced(self, config: RepositoryConfig, checked_at: float) -> bool:
        """Whether a client's no-cache obliges us to ask the upstream now."""
        return freshness.must_revalidate(
            self._clock(), checked_at, config.no_cache_revalidate_after, self._offline
        )

    async def _resolve(self, kind: Kind[M], revalidate: bool) -> Snapshot:
        holder = uuid.uuid4()
        pause = POLL_FIRST_SECONDS
        while True:
            found = await self._look(kind, revalidate, holder)
            if isinstance(found, Snapshot):
                snapshot = found
                break
            if found is not None:
                snapshot = await self._refresh(kind, found.state, holder)
                break
            # Another process is asking the upstream: its answer will be in the state.
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX_SECONDS)
        if self._database_down:
            self._database_down = False
            log.warning("the database answers again")
        self.cache.put(kind.key, snapshot)
        return snapshot

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
                return await self._snapshot(connection, kind, state)
            if self._is_fresh(state, kind, revalidate):
                return await self._snapshot(connection, kind, state)
            refresh = await leases.get_refresh(connection, *kind.key)
            if refresh is not None:
                failure = refresh.failure
                if failure is not None and self._clock() < failure.until.timestamp():
                    return await self._after_failure(connection, kind, state, failure)
                if refresh.leased:
                    return None
            if not await leases.claim(
                connection, *kind.key, holder, LEASE_SECONDS, self._datetime()
            ):
                return None
            # Whoever held the lease before us may have saved the page just now.
            state = await kind.state(connection)
            if self._is_fresh(state, kind, revalidate):
                await leases.end_lease(connection, *kind.key, holder)
                return await self._snapshot(connection, kind, state)
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
        if held is not None and failure.kind == "not-found":  # fewer 404s than gone-after
            return await self._snapshot(connection, kind, held, STALE_UPSTREAM, retry_at)
        if held is not None and self._may_serve_on_error(kind, held):
            return await self._snapshot(connection, kind, held, STALE_UPSTREAM, retry_at)
        raise failure.error()

    def _is_fresh(
        self, state: PageState | None, kind: Kind[M], revalidate: bool
    ) -> TypeGuard[PageState]:
        if state is None:
            return False
        checked_at = state.checked_at.timestamp()
        if state.purged or (revalidate and self._forced(kind.repository, checked_at)):
            return False
        now = self._clock()
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
        now = self._datetime()
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
                    model = msgspec.structs.replace(
                        result.model, last_serial=result.validators.last_serial
                    )
                    content_hash = _content_hash(model)
                    if held is not None and held.content_hash == content_hash:
                        await kind.mark_checked(connection, result.validators, now)
                    else:
                        await kind.save(connection, model, result.validators, content_hash, now)
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                log.warning("cannot store %s/%s: %r", *kind.key, exc)
                raise UpstreamError(kind.url, f"cannot store the page: {exc}") from exc
            await leases.end_lease(connection, *kind.key, holder)
            state = await kind.state(connection)
            assert state is not None
            return await self._snapshot(connection, kind, state)

    async def _not_found(
        self, kind: Kind[M], held: PageState | None, holder: uuid.UUID, exc: UpstreamNotFound
    ) -> Snapshot:
        missing = kind.not_found
        async with self._db.transaction() as connection:
            if held is not None and (
                missing is None
                or not freshness.is_gone(
                    await missing.count_missing(connection), kind.repository.gone_after_404s
                )
            ):
                log.warning("serving a stale copy of %s/%s: %s", *kind.key, exc)
                retry_at = await self._record_failure(connection, kind, holder, exc)
                return await self._snapshot(connection, kind, held, STALE_UPSTREAM, retry_at)
            if missing is not None:
                await missing.save(connection, self._datetime())
                await leases.end_lease(connection, *kind.key, holder)
                state = await kind.state(connection)
                assert state is not None
                return await self._snapshot(connection, kind, state)
        return await self._failed(kind, held, holder, exc)

    async def _failed(
        self, kind: Kind[M], held: PageState | None, holder: uuid.UUID, exc: UpstreamError
    ) -> Snapshot:
        async with self._db.connection() as connection:
            retry_at = await self._record_failure(connection, kind, holder, exc)
            if held is not None and self._may_serve_on_error(kind, held):
                log.warning("serving a stale copy of %s/%s: %s", *kind.key, exc)
                return await self._snapshot(connection, kind, held, STALE_UPSTREAM, retry_at)
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

    def _datetime(self) -> dt.datetime:
        return _datetime(self._clock())

    def _fresh_until(
        self, kind: Kind[M], found: bool, checked_at: float, stale: str | None, retry_at: float
    ) -> float:
        """Until when a snapshot is served without reading the page's state again."""
        ttl = kind.ttl_for(found)
        if stale is not None:
            window = kind.repository.stale_if_error
            return freshness.stale_serve_until(retry_at, checked_at, ttl, window)
        return freshness.serve_until(self._clock(), checked_at, ttl, self._offline)

    async def _snapshot(
        self,
        connection: Connection,
        kind: Kind[M],
        state: PageState,
        stale: str | None = None,
        retry_at: float = 0.0,
    ) -> Snapshot:
        """This worker's snapshot of `state`; a `stale` one is served until `retry_at`."""
        checked_at = state.checked_at.timestamp()
        fresh_until = self._fresh_until(kind, state.found, checked_at, stale, retry_at)
        return await kind.snapshot(connection, state, self.cache.get(kind.key), fresh_until, stale)


async def purge(db: Executor, repository: str, names: list[str] | None) -> int:
    """Mark pages stale (all of the repository's, its list too, when `names` is None), so
    the next request fetches them from the upstream again; returns how many pages."""
    count = await projects.mark_stale(db, repository, names)
    if names is None:
        await project_lists.mark_stale(db, repository)
    await leases.delete_failures(db, repository, names)
    return count


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
