"""Index pages use case: project pages and project lists, pulled through and stored.

Freshness policy, in the order a request meets it:
1. This worker holds a rendering younger than the TTL: serve it; nothing else is touched.
2. Otherwise, in one coalesced task per page (Coalescer), read the page's state row:
   if another worker or replica refreshed it within the TTL, serve the stored rows (re-using
   this worker's rendering when the revision has not moved).
3. Still stale: take the page's advisory lock, so one process in the whole deployment asks
   the upstream while the others wait for its answer; re-read the state (the holder before
   us may have refreshed it), then send one conditional request.
   - 304, or a 200 with the same content: only the freshness moves (revision unchanged,
     so every rendering and ETag stays valid);
   - 200 with new content: the rows are replaced in one transaction and the revision bumps;
   - 404: remembered as not found for the negative TTL;
   - any failure while a copy is stored: that copy is served (stale-if-error) and the
     upstream is asked again after a short pause; with nothing stored the error goes up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from mypypi2 import render
from mypypi2.config import RepositoryConfig
from mypypi2.errors import ProjectNotFound, RepositoryNotFound, UpstreamError, UpstreamNotFound
from mypypi2.models import ProjectList, ProjectPage
from mypypi2.negotiate import JSON_V1
from mypypi2.queries import Executor, PageState, Validators, locks, project_lists, projects
from mypypi2.upstream.client import Fetched, NotModified, UpstreamClient
from mypypi2.upstream.coalesce import Coalescer

log = logging.getLogger(__name__)

M = TypeVar("M", ProjectPage, ProjectList)
Clock = Callable[[], float]  # seconds since the epoch; tests pass their own
# After an upstream failure, a stale copy is served this long before the upstream is retried.
ERROR_RETRY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Representation:
    body: bytes
    etag: str


@dataclass(eq=False, slots=True)
class Snapshot:
    """One stored page as this worker serves it; each representation is rendered once."""

    found: bool
    revision: int
    fresh_until: float
    changed_at: dt.datetime
    last_serial: int | None
    max_age: int
    stale: bool
    _render: Callable[[str], bytes]
    _representations: dict[str, Representation] = field(default_factory=dict)

    def representation(self, media_type: str) -> Representation:
        found = self._representations.get(media_type)
        if found is None:
            body = self._render(media_type)
            # Each media type is its own representation with its own validator (RFC 9110).
            digest = hashlib.blake2b(media_type.encode() + body, digest_size=16).hexdigest()
            found = Representation(body, f'"{digest}"')
            self._representations[media_type] = found
        return found


class _Kind(Protocol[M]):
    """What differs between a project page and a project list; the policy is shared."""

    key: tuple[str, str]
    lock_key: str
    ttl: float
    negative_ttl: float

    async def state(self, db: Executor) -> PageState | None: ...
    async def load(self, db: Executor) -> M | None: ...
    async def fetch(self, known: Validators | None) -> Fetched[M] | NotModified: ...
    async def save(
        self, db: Executor, model: M, validators: Validators, content_hash: bytes, now: dt.datetime
    ) -> None: ...
    async def save_not_found(self, db: Executor, now: dt.datetime) -> None: ...
    async def mark_checked(
        self, db: Executor, validators: Validators, now: dt.datetime
    ) -> None: ...
    def renderer(self, model: M) -> Callable[[str], bytes]: ...


class _ProjectPageKind:
    def __init__(self, pages: Pages, repository: RepositoryConfig, name: str) -> None:
        self.key = (repository.name, name)
        self.lock_key = f"page:{repository.name}/{name}"
        self.ttl = repository.ttl
        self.negative_ttl = repository.negative_ttl
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
        self.negative_ttl = repository.negative_ttl
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

    async def mark_checked(self, db: Executor, validators: Validators, now: dt.datetime) -> None:
        await project_lists.mark_checked(db, self._repository, validators, now)

    def renderer(self, model: ProjectList) -> Callable[[str], bytes]:
        def render_as(media_type: str) -> bytes:
            if media_type == JSON_V1:
                return render.index_json(model, self._projects_prefix)
            return render.index_html(model, self._projects_prefix)

        return render_as


class _SnapshotCache:
    """Least-recently-used renderings of this worker; never the truth, only a shortcut."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], Snapshot] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Snapshot | None:
        snapshot = self._entries.get(key)
        if snapshot is not None:
            self._entries.move_to_end(key)
        return snapshot

    def put(self, key: tuple[str, str], snapshot: Snapshot) -> None:
        self._entries[key] = snapshot
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


class Pages:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repositories: Mapping[str, RepositoryConfig],
        clients: Mapping[str, UpstreamClient],
        *,
        base_url: str = "",
        cache_entries: int = 4096,
        clock: Clock = time.time,
    ) -> None:
        self._pool = pool
        self._repositories = repositories
        self._clients = clients
        self.base_url = base_url.rstrip("/")
        self._cache = _SnapshotCache(cache_entries)
        self._coalescer: Coalescer[tuple[str, str], Snapshot] = Coalescer()
        self._clock = clock

    def client(self, repository: str) -> UpstreamClient:
        return self._clients[repository]

    def _repository(self, name: str) -> RepositoryConfig:
        repository = self._repositories.get(name)
        if repository is None:
            raise RepositoryNotFound(name)
        return repository

    async def project(self, repository: str, name: str) -> Snapshot:
        """The page of normalized project `name`; ProjectNotFound when the upstream has none."""
        kind = _ProjectPageKind(self, self._repository(repository), name)
        snapshot = await self._serve(kind)
        if not snapshot.found:
            raise ProjectNotFound(repository, name)
        return snapshot

    async def ping_database(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def project_list(self, repository: str) -> Snapshot:
        return await self._serve(_ProjectListKind(self, self._repository(repository)))

    async def _serve(self, kind: _Kind[M]) -> Snapshot:
        cached = self._cache.get(kind.key)
        if cached is not None and self._clock() < cached.fresh_until:
            return cached
        return await self._coalescer.run(kind.key, lambda: self._resolve(kind))

    async def _resolve(self, kind: _Kind[M]) -> Snapshot:
        stale = False
        async with self._pool.acquire() as connection:
            state = await kind.state(connection)
            if not self._is_fresh(kind, state):
                async with locks.held(connection, kind.lock_key):
                    # Whoever held the lock before us may have just refreshed the page.
                    state = await kind.state(connection)
                    if not self._is_fresh(kind, state):
                        state, stale = await self._refresh(connection, kind, state)
            assert state is not None
            snapshot = await self._snapshot(connection, kind, state, stale)
        self._cache.put(kind.key, snapshot)
        return snapshot

    def _is_fresh(self, kind: _Kind[M], state: PageState | None) -> bool:
        if state is None:
            return False
        ttl = kind.ttl if state.found else kind.negative_ttl
        return self._clock() < state.checked_at.timestamp() + ttl

    async def _refresh(
        self,
        connection: PoolConnectionProxy[asyncpg.Record],
        kind: _Kind[M],
        state: PageState | None,
    ) -> tuple[PageState, bool]:
        """Ask the upstream once; returns the new state and whether it is a stale copy."""
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        known = None
        if state is not None and state.found:
            known = Validators(state.etag, state.last_modified, state.last_serial)
        try:
            result = await kind.fetch(known)
        except UpstreamNotFound:
            await kind.save_not_found(connection, now)
        except UpstreamError as exc:
            if state is None or not state.found:
                raise
            log.warning("serving a stale copy of %s/%s: %s", *kind.key, exc)
            return state, True
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
                if state is not None and state.found and state.content_hash == content_hash:
                    await kind.mark_checked(connection, result.validators, now)
                else:
                    async with connection.transaction():
                        await kind.save(connection, model, result.validators, content_hash, now)
        refreshed = await kind.state(connection)
        assert refreshed is not None
        return refreshed, False

    async def _snapshot(
        self,
        connection: PoolConnectionProxy[asyncpg.Record],
        kind: _Kind[M],
        state: PageState,
        stale: bool,
    ) -> Snapshot:
        ttl = kind.ttl if state.found else kind.negative_ttl
        fresh_until = state.checked_at.timestamp() + ttl
        if stale:
            fresh_until = self._clock() + min(ttl, ERROR_RETRY_SECONDS)
        current = self._cache.get(kind.key)
        if current is not None and current.revision == state.revision:
            current.fresh_until = fresh_until
            current.stale = stale
            return current
        render_as: Callable[[str], bytes] = _render_nothing
        if state.found:
            model = await kind.load(connection)
            assert model is not None
            render_as = kind.renderer(model)
        return Snapshot(
            found=state.found,
            revision=state.revision,
            fresh_until=fresh_until,
            changed_at=state.changed_at,
            last_serial=state.last_serial,
            max_age=int(kind.ttl),
            stale=stale,
            _render=render_as,
        )


def _older(received: Validators, known: Validators) -> bool:
    if received.last_serial is None or known.last_serial is None:
        return False
    return received.last_serial < known.last_serial


def _content_hash(model: ProjectPage | ProjectList) -> bytes:
    # Same content, same digest: an unchanged page keeps its revision and its ETags.
    return hashlib.blake2b(msgspec.msgpack.encode(model), digest_size=16).digest()


def _render_nothing(media_type: str) -> bytes:
    raise AssertionError("a not-found page has no representation")
