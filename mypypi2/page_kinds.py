"""What differs between a project page and a project list; the policy is shared.

A kind is bound to one page: it knows the page's rows (queries), its upstream request and
its renderings, and makes this worker's Snapshot of a stored state. It holds no connection:
page_refresh.py hands one in for a few statements at a time.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from mypypi2 import freshness, render, shared_renderings
from mypypi2.config import RepositoryConfig
from mypypi2.models import ProjectList, ProjectPage, Validators
from mypypi2.negotiate import HTML_V1, JSON_V1, TEXT_HTML
from mypypi2.queries import Executor, PageState, page_renderings, project_lists, projects
from mypypi2.queries.page_renderings import Rendering
from mypypi2.shared_renderings import SharedRenderings
from mypypi2.snapshot import Snapshot, StoredBody
from mypypi2.upstream.client import Fetched, NotModified, UpstreamClient
from mypypi2.urls import redact_url, split_userinfo

M = TypeVar("M", ProjectPage, ProjectList)
# Not-found rows whose negative TTL ended longer ago than this are deleted, a few at a time
# whenever a new one is written.
NOT_FOUND_KEPT_SECONDS = 3600.0
NOT_FOUND_DELETED_AT_ONCE = 100
# The media types a large page is rendered in, all at once, grouped by body (renderers tell
# JSON from anything else).
MEDIA_TYPES = ((JSON_V1,), (HTML_V1, TEXT_HTML))
# Renderings of a page's older content are deleted this long after a newer one is made: a
# worker serves an older revision only until it reads the page's state again (its TTL), or
# through a database outage.
RENDERINGS_KEPT_SECONDS = 86400.0


class NotFoundRows(Protocol):
    """How a kind remembers the upstream's 404s of its page."""

    async def record_missing(self, db: Executor) -> int:
        """Record one more upstream 404 for the page we hold; how many in a row now."""
        ...

    async def save(self, db: Executor, now: dt.datetime) -> None:
        """Remember the page as not found (for the negative TTL)."""
        ...


class Kind(ABC, Generic[M]):
    """One page, as the refresh sees it; a subclass says where its rows and upstream are."""

    # How this kind remembers 404s; None: it never does (ProjectListKind says what then).
    not_found: NotFoundRows | None

    def __init__(
        self,
        repository: RepositoryConfig,
        name: str,
        path: str,
        ttl: float,
        prefix: str,
        shared: SharedRenderings | None,
    ) -> None:
        self.key = (repository.name, name)  # name: "" for the list
        self.url = _shown_url(repository, path)  # what the upstream is asked, as errors show it
        self.ttl = ttl  # of a page found
        self.repository = repository
        self.prefix = prefix  # of the URLs its renderings link to
        self._shared = shared  # where large renderings go; None: every one is held

    def ttl_for(self, found: bool) -> float:
        """The TTL of a stored state: a 404 is remembered for the negative TTL."""
        return freshness.ttl_for(found, self.ttl, self.repository.negative_ttl)

    @abstractmethod
    async def state(self, db: Executor) -> PageState | None: ...
    @abstractmethod
    async def load(self, db: Executor) -> M | None: ...
    @abstractmethod
    async def fetch(self, known: Validators | None) -> Fetched[M] | NotModified: ...
    @abstractmethod
    async def save(
        self, db: Executor, model: M, validators: Validators, content_hash: bytes, now: dt.datetime
    ) -> None: ...
    @abstractmethod
    async def mark_checked(
        self, db: Executor, validators: Validators, now: dt.datetime
    ) -> None: ...
    @abstractmethod
    def renderer(self, model: M) -> Callable[[str], bytes]: ...
    @abstractmethod
    def estimated_size(self, model: M) -> int:
        """About the size of the larger rendering of `model` (it decides where it is kept)."""

    def chunks(self, model: M) -> Callable[[str], Iterable[bytes]]:
        """The renderer of `model` for the store: pieces, joined the same bytes."""
        render = self.renderer(model)
        return lambda media_type: (render(media_type),)

    async def snapshot(
        self,
        db: Executor,
        state: PageState,
        current: Snapshot | None,
        fresh_until: float,
        stale: str | None,
    ) -> Snapshot:
        """This worker's snapshot of `state`: its `current` one, renderings and all, when it
        is of the same revision; a new one otherwise."""
        checked_at = state.checked_at.timestamp()
        if (
            current is not None
            and current.revision == state.revision
            # A deleted not-found row starts its revisions again: the time tells them apart.
            and current.changed_at == state.changed_at
        ):
            current.fresh_until = fresh_until
            current.checked_at = checked_at
            current.stale = stale
            return current
        client_max_age = self.repository.client_max_age
        snapshot = Snapshot(
            found=state.found,
            revision=state.revision,
            checked_at=checked_at,
            fresh_until=fresh_until,
            changed_at=state.changed_at,
            last_serial=state.last_serial,
            max_age=int(self.ttl) if client_max_age is None else client_max_age,
            stale=stale,
            _render=_render_nothing,
        )
        if state.found:
            await self._fill(db, state, snapshot)
        return snapshot

    async def _fill(self, db: Executor, state: PageState, snapshot: Snapshot) -> None:
        """Give `snapshot` its renderings: the stored ones of a large page (made now, when
        nobody did yet), or a renderer of the rows for this worker to hold."""
        shared, content_hash = self._shared, state.content_hash
        if shared is not None and content_hash is not None:
            stored = await page_renderings.get(db, *self.key, content_hash, self.prefix)
            if stored:
                _keep_stored(snapshot, shared, self.key, stored)
                return
        model = await self.load(db)
        assert model is not None
        if shared is None or content_hash is None or shared.above > self.estimated_size(model):
            snapshot._render = self.renderer(model)
            return
        folder = shared_renderings.folder(*self.key, content_hash, self.prefix)
        made = await shared.make(folder, MEDIA_TYPES, self.chunks(model))
        del model
        now = dt.datetime.now(dt.UTC)
        await page_renderings.save(db, *self.key, content_hash, self.prefix, made, now)
        superseded = await page_renderings.delete_superseded(
            db, *self.key, content_hash, now - dt.timedelta(seconds=RENDERINGS_KEPT_SECONDS)
        )
        await shared.delete(superseded)
        _keep_stored(snapshot, shared, self.key, made)


class ProjectPageKind(Kind[ProjectPage]):
    def __init__(
        self,
        repository: RepositoryConfig,
        name: str,
        client: UpstreamClient,
        base_url: str,
        shared: SharedRenderings | None = None,
    ) -> None:
        files_prefix = f"{base_url}/{repository.name}/files/{name}/"
        super().__init__(repository, name, f"{name}/", repository.ttl, files_prefix, shared)
        self.not_found = _MissingProject(repository, name)
        self._name = name
        self._client = client

    async def state(self, db: Executor) -> PageState | None:
        return await projects.get_state(db, self.repository.name, self._name)

    async def load(self, db: Executor) -> ProjectPage | None:
        return await projects.get_page(db, self.repository.name, self._name)

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
        await projects.save_page(db, self.repository.name, model, validators, content_hash, now)

    async def mark_checked(self, db: Executor, validators: Validators, now: dt.datetime) -> None:
        await projects.mark_checked(db, self.repository.name, self._name, validators, now)

    def renderer(self, model: ProjectPage) -> Callable[[str], bytes]:
        def render_as(media_type: str) -> bytes:
            if media_type == JSON_V1:
                return render.project_json(model, self.prefix)
            return render.project_html(model, self.prefix)

        return render_as

    def estimated_size(self, model: ProjectPage) -> int:
        return render.project_size(model, self.prefix)


class _MissingProject:
    """A project page's 404s: counted against a page we hold, remembered without one."""

    def __init__(self, repository: RepositoryConfig, name: str) -> None:
        self._repository = repository
        self._name = name

    async def record_missing(self, db: Executor) -> int:
        return await projects.record_missing(db, self._repository.name, self._name)

    async def save(self, db: Executor, now: dt.datetime) -> None:
        repository = self._repository.name
        await projects.save_not_found(db, repository, self._name, now)
        kept = self._repository.negative_ttl + NOT_FOUND_KEPT_SECONDS
        await projects.delete_expired_not_found(
            db, repository, now - dt.timedelta(seconds=kept), NOT_FOUND_DELETED_AT_ONCE
        )


class ProjectListKind(Kind[ProjectList]):
    # An index that answered once does not lose its list: a 404 is an error, and the list
    # we hold is served stale through it; without one, the 404 goes through.
    not_found = None

    def __init__(
        self,
        repository: RepositoryConfig,
        client: UpstreamClient,
        base_url: str,
        shared: SharedRenderings | None = None,
    ) -> None:
        projects_prefix = f"{base_url}/{repository.name}/simple/"
        super().__init__(repository, "", "", repository.list_ttl, projects_prefix, shared)
        self._client = client

    async def state(self, db: Executor) -> PageState | None:
        return await project_lists.get_state(db, self.repository.name)

    async def load(self, db: Executor) -> ProjectList | None:
        return await project_lists.get_list(db, self.repository.name)

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
        await project_lists.save_list(
            db, self.repository.name, model, validators, content_hash, now
        )

    async def mark_checked(self, db: Executor, validators: Validators, now: dt.datetime) -> None:
        await project_lists.mark_checked(db, self.repository.name, validators, now)

    def renderer(self, model: ProjectList) -> Callable[[str], bytes]:
        def render_as(media_type: str) -> bytes:
            if media_type == JSON_V1:
                return render.index_json(model, self.prefix)
            return render.index_html(model, self.prefix)

        return render_as

    def estimated_size(self, model: ProjectList) -> int:
        return render.index_size(model, self.prefix)

    def chunks(self, model: ProjectList) -> Callable[[str], Iterable[bytes]]:
        def render_as(media_type: str) -> Iterable[bytes]:
            if media_type == JSON_V1:
                return render.index_json_chunks(model, self.prefix)
            return render.index_html_chunks(model, self.prefix)

        return render_as


def _shown_url(repository: RepositoryConfig, path: str) -> str:
    """The URL asked for `path`, as the upstream client shows it in its own errors: an error
    body goes to every client, and the upstream URL's userinfo is a credential."""
    base, _userinfo = split_userinfo(repository.upstream.rstrip("/") + "/")
    return redact_url(base + path)


def _keep_stored(
    snapshot: Snapshot, shared: SharedRenderings, key: tuple[str, str], stored: list[Rendering]
) -> None:
    by_media: dict[str, dict[str | None, StoredBody]] = {}
    etags: dict[str, str] = {}
    for rendering in stored:
        forms = by_media.setdefault(rendering.media_type, {})
        forms[rendering.encoding or None] = shared.body(key, rendering)
        etags[rendering.media_type] = rendering.etag
    for media_type, forms in by_media.items():
        snapshot.keep_stored(media_type, etags[media_type], forms)


def _render_nothing(media_type: str) -> bytes:
    raise AssertionError("a not-found page has no representation")
