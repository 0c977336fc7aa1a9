"""What differs between a project page and a project list; the policy is shared.

Each kind knows its rows (queries), its upstream request and its renderings. Neither
holds a connection: pages.py hands one in for a few statements at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol, TypeVar

from mypypi2 import render
from mypypi2.config import RepositoryConfig
from mypypi2.models import ProjectList, ProjectPage, Validators
from mypypi2.negotiate import JSON_V1
from mypypi2.queries import Executor, PageState, project_lists, projects
from mypypi2.upstream.client import Fetched, NotModified, UpstreamClient
from mypypi2.urls import redact_url, split_userinfo

M = TypeVar("M", ProjectPage, ProjectList)
# Not-found rows whose negative TTL ended longer ago than this are deleted, a few at a time
# whenever a new one is written.
NOT_FOUND_KEPT_SECONDS = 3600.0
NOT_FOUND_DELETED_AT_ONCE = 100


class Kind(Protocol[M]):
    key: tuple[str, str]  # (repository, project name or "" for the list)
    url: str  # what the upstream is asked, as errors show it (no secrets)
    ttl: float
    repository: RepositoryConfig

    async def state(self, db: Executor) -> PageState | None: ...
    async def load(self, db: Executor) -> M | None: ...
    async def fetch(self, known: Validators | None) -> Fetched[M] | NotModified: ...
    async def save(
        self, db: Executor, model: M, validators: Validators, content_hash: bytes, now: dt.datetime
    ) -> None: ...
    async def save_not_found(self, db: Executor, now: dt.datetime) -> bool:
        """Remember an upstream 404; False when this kind never remembers one."""
        ...

    async def record_missing(self, db: Executor) -> int:
        """Count one more upstream 404 for the page we hold; how many in a row now."""
        ...

    async def mark_checked(
        self, db: Executor, validators: Validators, now: dt.datetime
    ) -> None: ...
    def renderer(self, model: M) -> Callable[[str], bytes]: ...


class ProjectPageKind:
    def __init__(
        self, repository: RepositoryConfig, name: str, client: UpstreamClient, base_url: str
    ) -> None:
        self.key = (repository.name, name)
        self.url = _shown_url(repository, f"{name}/")
        self.ttl = repository.ttl
        self.repository = repository
        self._repository = repository.name
        self._name = name
        self._client = client
        self._files_prefix = f"{base_url}/{repository.name}/files/{name}/"

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

    async def save_not_found(self, db: Executor, now: dt.datetime) -> bool:
        await projects.save_not_found(db, self._repository, self._name, now)
        kept = self.repository.negative_ttl + NOT_FOUND_KEPT_SECONDS
        await projects.delete_expired_not_found(
            db, self._repository, now - dt.timedelta(seconds=kept), NOT_FOUND_DELETED_AT_ONCE
        )
        return True

    async def record_missing(self, db: Executor) -> int:
        return await projects.record_missing(db, self._repository, self._name)

    async def mark_checked(self, db: Executor, validators: Validators, now: dt.datetime) -> None:
        await projects.mark_checked(db, self._repository, self._name, validators, now)

    def renderer(self, model: ProjectPage) -> Callable[[str], bytes]:
        def render_as(media_type: str) -> bytes:
            if media_type == JSON_V1:
                return render.project_json(model, self._files_prefix)
            return render.project_html(model, self._files_prefix)

        return render_as


class ProjectListKind:
    def __init__(self, repository: RepositoryConfig, client: UpstreamClient, base_url: str) -> None:
        self.key = (repository.name, "")
        self.url = _shown_url(repository, "")
        self.ttl = repository.list_ttl
        self.repository = repository
        self._repository = repository.name
        self._client = client
        self._projects_prefix = f"{base_url}/{repository.name}/simple/"

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

    async def save_not_found(self, db: Executor, now: dt.datetime) -> bool:
        # An upstream without a project list is not a state we keep: the 404 goes through.
        return False

    async def record_missing(self, db: Executor) -> int:
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


def _shown_url(repository: RepositoryConfig, path: str) -> str:
    """The URL asked for `path`, as the upstream client shows it in its own errors: an error
    body goes to every client, and the upstream URL's userinfo is a credential."""
    base, _userinfo = split_userinfo(repository.upstream.rstrip("/") + "/")
    return redact_url(base + path)
