"""Index pages use case: project pages and project lists, pulled through and stored.

Freshness policy, in the order a request meets it:
1. This worker holds a snapshot younger than the TTL: serve it; nothing else is touched.
   Just past the TTL (stale-while-revalidate), serve it too and revalidate in the
   background. A client's no-cache / max-age=0 skips both shortcuts.
2. Otherwise, in one coalesced task per page (Coalescer), page_refresh.py reads the page's
   state row and, when it is stale too, refreshes the page under its lease (steps 2 and 3
   in its docstring).
While PostgreSQL is unreachable, the snapshot a worker holds is served marked stale (within
the stale-if-error window); a page it does not hold is DatabaseUnavailable (503), at once.
Every decision on time is a pure function of freshness.py; this module orchestrates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from functools import partial

from mypypi2 import freshness, observe
from mypypi2.clock import Clock
from mypypi2.config import RepositoryConfig
from mypypi2.db import Database
from mypypi2.errors import (
    DatabaseUnavailable,
    ProjectNotFound,
    RepositoryNotFound,
    StoredObjectMissing,
)
from mypypi2.lru import LRU
from mypypi2.page_kinds import Kind, M, ProjectListKind, ProjectPageKind
from mypypi2.page_refresh import PageRefresh
from mypypi2.queries import Executor, leases, page_renderings, project_lists, projects
from mypypi2.queries.notifications import Purged
from mypypi2.shared_renderings import SharedRenderings
from mypypi2.snapshot import STALE_DATABASE, Snapshot, StoredBody
from mypypi2.upstream.client import UpstreamClient
from mypypi2.upstream.coalesce import Coalescer

log = logging.getLogger(__name__)


class Pages:
    def __init__(
        self,
        database: Database,
        repositories: Mapping[str, RepositoryConfig],
        clients: Mapping[str, UpstreamClient],
        *,
        base_url: str = "",
        cache_entries: int = 4096,
        memory: int | None = None,
        shared: SharedRenderings | None = None,
        offline: bool = False,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._repositories = repositories
        self._clients = clients
        self.base_url = base_url.rstrip("/")
        # This worker's snapshots, by (repository, project name or "" for the list), within
        # `memory` bytes of renderings held (a large page's are in the store: `shared`).
        self.cache: LRU[tuple[str, str], Snapshot] = LRU(
            cache_entries, budget=memory, weigh=Snapshot.held_bytes
        )
        self._shared = shared
        self._coalescer: Coalescer[tuple[str, str], Snapshot] = Coalescer()
        self._refresh = PageRefresh(database, self.cache.get, offline=offline, clock=clock)
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
            client = self._clients[repository]
            kind = ProjectPageKind(config, name, client, self.base_url, self._shared)
            snapshot = await self._serve(kind, revalidate)
        if not snapshot.found:
            raise ProjectNotFound(repository, name)
        return snapshot

    async def project_list(self, repository: str, *, revalidate: bool = False) -> Snapshot:
        config = self._repository(repository)
        snapshot = self._cached((repository, ""), config, revalidate)
        if snapshot is None:
            client = self._clients[repository]
            kind = ProjectListKind(config, client, self.base_url, self._shared)
            snapshot = await self._serve(kind, revalidate)
        return snapshot

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
        if cached.stale is not None:  # still within the pause after a failure
            observe.answered_as(
                "stale", "database" if cached.stale == STALE_DATABASE else "upstream"
            )
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
        observe.answered_as("stale", "database")
        return held

    def _revalidate_in_background(self, kind: Kind[M]) -> None:
        task = asyncio.ensure_future(self._revalidate(kind))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _revalidate(self, kind: Kind[M]) -> None:
        observe.current.set(None)  # started by a request that was answered without it
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
        snapshot = await self._refresh.snapshot(kind, revalidate)
        if self._database_down:
            self._database_down = False
            log.warning("the database answers again")
        self.cache.put(kind.key, snapshot)
        snapshot.on_growth = partial(self.cache.reweigh, kind.key)
        return snapshot

    async def open_stored(self, body: StoredBody) -> AsyncIterator[bytes]:
        """The chunks of a large page's rendering. When the store lost it, the snapshot is
        forgotten and its renderings made again by the next request; StoredObjectMissing."""
        assert self._shared is not None  # only a snapshot with shared renderings has one
        try:
            return await self._shared.open(body)
        except StoredObjectMissing:
            self.cache.pop(body.page)
            async with self._db.connection() as connection:
                await page_renderings.delete_key(connection, body.key)
            raise


async def purge(db: Executor, repository: str, names: list[str] | None) -> int:
    """Mark pages stale (all of the repository's, its list too, when `names` is None), so
    the next request fetches them from the upstream again; returns how many pages."""
    count = await projects.mark_stale(db, repository, names)
    if names is None:
        await project_lists.mark_stale(db, repository)
    await leases.delete_failures(db, repository, names)
    return count
