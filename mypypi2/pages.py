"""Index pages use case: project pages and project lists, pulled through and stored.

Freshness policy, in the order a request meets it:
1. This worker holds a snapshot younger than the TTL: serve it; nothing else is touched.
   Just past the TTL (stale-while-revalidate), serve it too and revalidate in the
   background. A client's no-cache / max-age=0 skips both shortcuts.
2. Otherwise, in one coalesced task per page (Coalescer), read the page's state row:
   if another worker or replica refreshed it within the TTL, serve the stored rows (re-using
   this worker's rendering when the revision has not moved).
3. Still stale: take the page's advisory lock, so one process in the whole deployment asks
   the upstream while the others wait for its answer; re-read the state (the holder before
   us may have refreshed it), then send one conditional request.
   - 304, or a 200 with the same content: only the freshness moves (revision unchanged,
     so every rendering and ETag stays valid);
   - 200 with an older serial than ours (a stale CDN edge): ignored, ours is kept;
   - 200 with new content: the rows are replaced in one transaction and the revision bumps;
   - 404: remembered as not found for the negative TTL, but a page we hold is only
     given up after `gone-after-404s` consecutive 404s (until then it is served stale);
   - any failure while a copy is stored, within the stale-if-error window: that copy is
     served, marked stale, and the upstream is asked again after a short pause; with
     nothing (usable) stored the error goes up.
Offline, step 3 never happens: what is stored is served, the rest is not found.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from mypypi2 import render
from mypypi2.config import RepositoryConfig
from mypypi2.errors import (
    NotStored,
    ProjectNotFound,
    RepositoryNotFound,
    UpstreamError,
    UpstreamNotFound,
)
from mypypi2.lru import LRU
from mypypi2.models import ProjectList, ProjectPage
from mypypi2.negotiate import JSON_V1
from mypypi2.queries import Executor, PageState, Validators, locks, project_lists, projects
from mypypi2.queries.notifications import Purged
from mypypi2.snapshot import Snapshot
from mypypi2.upstream.client import Fetched, NotModified, UpstreamClient
from mypypi2.upstream.coalesce import Coalescer

log = logging.getLogger(__name__)

M = TypeVar("M", ProjectPage, ProjectList)
Clock = Callable[[], float]  # seconds since the epoch; tests pass their own
# After an upstream failure, a stale copy is served this long before the upstream is retried.
ERROR_RETRY_SECONDS = 30.0


class _Kind(Protocol[M]):
    """What differs between a project page and a project list; the policy is shared."""

    key: tuple[str, str]
    lock_key: str
    ttl: float
    repository: RepositoryConfig

    async def state(self, db: Executor) -> PageState | None: ...
    async def load(self, db: Executor) -> M | None: ...
    async def fetch(self, known: Validators | None) -> Fetched[M] | NotModified: ...
    async def save(
        self, db: Executor, model: M, validators: Validators, content_hash: bytes, now: dt.datetime
    ) -> None: ...
    async def save_not_found(self, db: Executor, now: dt.datetime) -> None: ...
    async def count_missing(self, db: Executor) -> int: ...
    async def mark_checked(
        self, db: Executor, validators: Validators, now: dt.datetime
    ) -> None: ...
    def renderer(self, model: M) -> Callable[[str], bytes]: ...


class _ProjectPageKind:
    def __init__(self, pages: Pages, repository: RepositoryConfig, name: str) -> None:
        self.key = (repository.name, name)
        self.lock_key = f"page:{repository.name}/{name}"
        self.ttl = repository.ttl
        self.repository = repository
        self._repository = repository.name
        self._name = name
        self._client = pages.client(repository.name)
        self._files_prefix = f"{pages.base_url}/{repository.name}/files/{name}/"

    async def state(self, db: Executor) -> PageState | None:
        return await projects.get_state(db, self._repository, self._name)

    async def load(self, db: Executor) -> ProjectPage | None:
        return await projects.get_page(db, self._repository, self._name)

    async def fetch(self, known: Validators | None) -> Fetched[ProjectPage] | NotModified:
        return await self._client.project_page(self._name, known)

    async def save(
        self,
        db: Executor,
        model: ProjectPage,
        validators: Validators,
        content_hash: bytes,
        now: dt.datetime,
    ) -> None:
        await projects.save_page(db, self._repository, model, validators, content_hash, now)

    async def save_not_found(self, db: Executor, now: dt.datetime) -> None:
        await projects.save_not_found(db, self._repository, self._name, now)

    async def count_missing(self, db: Executor) -> int:
        return await projects.count_missing(db, self._repository, self._name)

    async def mark_checked(self, db: Executor, validators: Validators, now: dt.datetime) -> None:
        await projects.mark_checked(db, self._repository, self._name, validators, now)

    def renderer(self, model: ProjectPage) -> Callable[[str], bytes]:
        def render_as(media_type: str) -> bytes:
            if media_type == JSON_V1:
                return render.project_json(model, self._files_prefix)
            return render.project_html(model, self._files_prefix)

        return render_as


class _ProjectListKind:
    def __init__(self, pages: Pages, repository: RepositoryConfig) -> None:
        self.key = (repository.name, "")
        self.lock_key = f"list:{repository.name}"
        self.ttl = repository.list_ttl
        self.repository = repository
        self._repository = repository.name
        self._client = pages.client(repository.name)
        self._projects_prefix = f"{pages.base_url}/{repository.name}/simple/"

    async def state(self, db: Executor) -> PageState | None:
        return await project_lists.get_state(db, self._repository)

    async def load(self, db: Executor) -> ProjectList | None:
        return await project_lists.get_list(db, self._repository)

    async def fetch(self, known: Validators | None) -> Fetched[ProjectList] | NotModified:
        return await self._client.project_list(known)

    async def save(
        self,
        db: Executor,
        model: ProjectList,
        validators: Validators,
        content_hash: bytes,
        now: dt.datetime,
    ) -> None:
        await project_lists.save_list(db, self._repository, model, validators, content_hash, now)

    async def save_not_found(self, db: Executor, now: dt.datetime) -> None:
        # An upstream without a project list is not a state we keep: the 404 goes through.
        raise UpstreamNotFound(self._repository)

    async def count_missing(self, db: Executor) -> int:
        # The list of an index that answered once does not vanish: treat a 404 as an error.
        return 0

    async def mark_checked(self, db: Executor, validators: Validators, now: dt.datetime) -> None:
        await project_lists.mark_checked(db, self._repository, validators, now)

    def renderer(self, model: ProjectList) -> Callable[[str], bytes]:
        def render_as(media_type: str) -> bytes:
            if media_type == JSON_V1:
                return render.index_json(model, self._projects_prefix)
            return render.index_html(model, self._projects_prefix)

        return render_as


class Pages:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repositories: Mapping[str, RepositoryConfig],
        clients: Mapping[str, UpstreamClient],
        *,
        base_url: str = "",
        cache_entries: int = 4096,
        offline: bool = False,
        clock: Clock = time.time,
    ) -> None:
        self._pool = pool
        self._repositories = repositories
        self._clients = clients
        self.base_url = base_url.rstrip("/")
        # This worker's snapshots, by (repository, project name or "" for the list).
        self.cache: LRU[tuple[str, str], Snapshot] = LRU(cache_entries)
        self._coalescer: Coalescer[tuple[str, str], Snapshot] = Coalescer()
        self._background: set[asyncio.Task[Snapshot]] = set()
        self._offline = offline
        self._clock = clock

    async def close(self) -> None:
        """Stop background revalidations (before the upstream sessions close)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def forget(self, purged: Purged) -> None:
        """Another process purged pages: drop this worker's snapshots of them."""
        self.cache.drop(lambda key: purged.covers(*key))

    def client(self, repository: str) -> UpstreamClient:
        return self._clients[repository]

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
            snapshot = await self._serve(_ProjectPageKind(self, config, name), revalidate)
        if not snapshot.found:
            raise ProjectNotFound(repository, name)
        return snapshot

    async def project_list(self, repository: str, *, revalidate: bool = False) -> Snapshot:
        config = self._repository(repository)
        snapshot = self._cached((repository, ""), config, revalidate)
        if snapshot is None:
            snapshot = await self._serve(_ProjectListKind(self, config), revalidate)
        return snapshot

    async def ping_database(self) -> None:
        await self._pool.fetchval("SELECT 1")

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
        if cached is None or self._clock() >= cached.fresh_until:
            return None
        if revalidate and self._forced(config, cached.checked_at):
            return None
        return cached

    async def _serve(self, kind: _Kind[M], revalidate: bool) -> Snapshot:
        cached = self.cache.get(kind.key)
        if cached is not None and not (
            revalidate and self._forced(kind.repository, cached.checked_at)
        ):
            now = self._clock()
            if now < cached.fresh_until:
                return cached
            window = kind.repository.stale_while_revalidate
            if cached.found and not cached.stale and now < cached.fresh_until + window:
                self._revalidate_in_background(kind)
                return cached
        return await self._coalescer.run(kind.key, lambda: self._resolve(kind, revalidate))

    def _revalidate_in_background(self, kind: _Kind[M]) -> None:
        task = asyncio.ensure_future(
            self._coalescer.run(kind.key, lambda: self._resolve(kind, False))
        )
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Snapshot]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background revalidation failed: %s", task.exception())

    def _forced(self, config: RepositoryConfig, checked_at: float) -> bool:
        """Whether a client's no-cache obliges us to ask the upstream now."""
        after = config.no_cache_revalidate_after
        if after < 0 or self._offline:
            return False
        return self._clock() >= checked_at + after

    async def _resolve(self, kind: _Kind[M], revalidate: bool) -> Snapshot:
        stale = False
        async with self._pool.acquire() as connection:
            state = await kind.state(connection)
            if self._offline:
                if state is None:
                    raise NotStored(*kind.key)
            elif not self._is_fresh(kind, state, revalidate):
                async with locks.held(connection, kind.lock_key):
                    # Whoever held the lock before us may have just refreshed the page.
                    state = await kind.state(connection)
                    if not self._is_fresh(kind, state, revalidate):
                        state, stale = await self._refresh(connection, kind, state)
            assert state is not None
            snapshot = await self._snapshot(connection, kind, state, stale)
        self.cache.put(kind.key, snapshot)
        return snapshot

    def _is_fresh(self, kind: _Kind[M], state: PageState | None, revalidate: bool) -> bool:
        if state is None:
            return False
        checked_at = state.checked_at.timestamp()
        if state.purged or (revalidate and self._forced(kind.repository, checked_at)):
            return False
        ttl = kind.ttl if state.found else kind.repository.negative_ttl
        return self._clock() < checked_at + ttl

    async def _refresh(
        self,
        connection: PoolConnectionProxy[asyncpg.Record],
        kind: _Kind[M],
        state: PageState | None,
    ) -> tuple[PageState, bool]:
        """Ask the upstream once; returns the new state and whether it is a stale copy."""
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        held = state if state is not None and state.found else None
        known = None
        if held is not None:
            known = Validators(held.etag, held.last_modified, held.last_serial)
        try:
            result = await kind.fetch(known)
        except UpstreamNotFound as exc:
            gone_after = kind.repository.gone_after_404s
            if held is not None and await kind.count_missing(connection) < gone_after:
                log.warning("serving a stale copy of %s/%s: %s", *kind.key, exc)
                return held, True
            await kind.save_not_found(connection, now)
        except UpstreamError as exc:
            if held is None or not self._may_serve_stale(kind, held):
                raise
            log.warning("serving a stale copy of %s/%s: %s", *kind.key, exc)
            return held, True
        else:
            if isinstance(result, NotModified):
                await kind.mark_checked(connection, result.validators, now)
            elif known is not None and _older(result.validators, known):
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
                    async with connection.transaction():
                        await kind.save(connection, model, result.validators, content_hash, now)
        refreshed = await kind.state(connection)
        assert refreshed is not None
        return refreshed, False

    def _may_serve_stale(self, kind: _Kind[M], state: PageState) -> bool:
        window = kind.repository.stale_if_error
        if window == "forever":
            return True
        return self._clock() < state.checked_at.timestamp() + kind.ttl + window

    async def _snapshot(
        self,
        connection: PoolConnectionProxy[asyncpg.Record],
        kind: _Kind[M],
        state: PageState,
        stale: bool,
    ) -> Snapshot:
        checked_at = state.checked_at.timestamp()
        ttl = kind.ttl if state.found else kind.repository.negative_ttl
        fresh_until = checked_at + ttl
        if stale:
            # Ask again soon, and never past the end of the stale-if-error window.
            fresh_until = self._clock() + min(ttl, ERROR_RETRY_SECONDS)
            window = kind.repository.stale_if_error
            if window != "forever":
                fresh_until = min(fresh_until, checked_at + ttl + window)
        elif self._offline:
            fresh_until = max(fresh_until, self._clock() + ttl)
        current = self.cache.get(kind.key)
        if current is not None and current.revision == state.revision:
            current.fresh_until = fresh_until
            current.checked_at = checked_at
            current.stale = stale
            return current
        render_as: Callable[[str], bytes] = _render_nothing
        if state.found:
            model = await kind.load(connection)
            assert model is not None
            render_as = kind.renderer(model)
        client_max_age = kind.repository.client_max_age
        return Snapshot(
            found=state.found,
            revision=state.revision,
            checked_at=checked_at,
            fresh_until=fresh_until,
            changed_at=state.changed_at,
            last_serial=state.last_serial,
            max_age=int(kind.ttl) if client_max_age is None else client_max_age,
            stale=stale,
            _render=render_as,
        )


async def purge(db: Executor, repository: str, names: list[str] | None) -> int:
    """Mark pages stale (all of the repository's, its list too, when `names` is None), so
    the next request fetches them from the upstream again; returns how many pages."""
    count = await projects.mark_stale(db, repository, names)
    if names is None:
        await project_lists.mark_stale(db, repository)
    return count


def _older(received: Validators, known: Validators) -> bool:
    if received.last_serial is None or known.last_serial is None:
        return False
    return received.last_serial < known.last_serial


def _content_hash(model: ProjectPage | ProjectList) -> bytes:
    # Same content, same digest: an unchanged page keeps its revision and its ETags.
    return hashlib.blake2b(msgspec.msgpack.encode(model), digest_size=16).digest()


def _render_nothing(media_type: str) -> bytes:
    raise AssertionError("a not-found page has no representation")
