"""The Simple Repository API: `/{repo}/simple/` and `/{repo}/simple/{project}/`."""

from __future__ import annotations

import os
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mypypi2 import names
from mypypi2.errors import ProjectNotFound, RepositoryNotFound
from mypypi2.negotiate import HTML_V1, JSON_V1, negotiate
from mypypi2.pages import Pages
from mypypi2.routes.headers import PathResponse, RawResponse, StreamedResponse, page_answer
from mypypi2.snapshot import Snapshot, StoredBody

# The PEP 691 path variants: the segments after `simple/` that are not project names.
_FORMAT_SEGMENTS = frozenset({"v1+json", "v1+html"})


async def project_list(request: Request) -> Response:
    return await _project_list(request, None)


async def project_list_json(request: Request) -> Response:
    return await _project_list(request, JSON_V1)


async def project_list_html(request: Request) -> Response:
    return await _project_list(request, HTML_V1)


async def project_page(request: Request) -> Response:
    return await _project_page(request, None)


async def project_page_json(request: Request) -> Response:
    return await _project_page(request, JSON_V1)


async def project_page_html(request: Request) -> Response:
    return await _project_page(request, HTML_V1)


async def add_slash(request: Request) -> Response:
    # Only to a URL that can exist: pip caches a 308 for good.
    repository = _repository(request)
    project = request.path_params.get("project")
    if (
        project is not None
        and project not in _FORMAT_SEGMENTS
        and names.canonical_name(project) is None
    ):
        raise ProjectNotFound(repository, project)
    return _redirect(request, request.url.path + "/", 308)


async def _project_list(request: Request, forced: str | None) -> Response:
    repository = _repository(request)
    media_type = forced or _negotiate(request)
    revalidate = _wants_revalidation(request)
    snapshot = await _pages(request).project_list(repository, revalidate=revalidate)
    return await _page_response(request, snapshot, media_type)


async def _project_page(request: Request, forced: str | None) -> Response:
    repository = _repository(request)
    requested = request.path_params["project"]
    name = names.canonical_name(requested)
    if name is None:
        raise ProjectNotFound(repository, requested)
    if name != requested:
        # PEP 503: one canonical URL per project. pip caches 301s, so only ever for names.
        prefix = request.url.path[: -len(requested) - 1]
        return _redirect(request, f"{prefix}{name}/", 301)
    media_type = forced or _negotiate(request)
    revalidate = _wants_revalidation(request)
    snapshot = await _pages(request).project(repository, name, revalidate=revalidate)
    return await _page_response(request, snapshot, media_type)


def _pages(request: Request) -> Pages:
    pages: Pages = request.state.pages
    return pages


def _repository(request: Request) -> str:
    """The repository segment when it names a configured one; RepositoryNotFound (404)
    otherwise, checked before any redirect: clients keep 301s and 308s for good."""
    repository: str = request.path_params["repo"]
    if not _pages(request).has_repository(repository):
        raise RepositoryNotFound(repository)
    return repository


def _negotiate(request: Request) -> str:
    return negotiate(request.headers.get("accept"), _format_param(request.url.query))


def _format_param(query: str) -> str | None:
    # Read raw: form decoding would turn the "+" of "v1+json" into a space, and PEP 691
    # writes `?format=application/vnd.pypi.simple.v1+json` unescaped.
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "format":
            return unquote(value)
    return None


def _redirect(request: Request, path: str, status: int) -> Response:
    query = request.url.query
    location = _pages(request).base_url + path + (f"?{query}" if query else "")
    return RedirectResponse(location, status_code=status)


def _wants_revalidation(request: Request) -> bool:
    """`Cache-Control: no-cache` or `max-age=0` (older pips on every page, uv --refresh)."""
    header = request.headers.get("cache-control")
    if not header:
        return False
    directives = {d.strip().lower().replace(" ", "") for d in header.split(",")}
    return "no-cache" in directives or "max-age=0" in directives


async def _page_response(request: Request, snapshot: Snapshot, media_type: str) -> Response:
    headers = request.headers
    status, raw_headers, body = await page_answer(
        snapshot,
        media_type,
        headers.get("accept-encoding"),
        headers.get("if-none-match"),
        headers.get("if-modified-since"),
    )
    if not isinstance(body, StoredBody):
        return RawResponse(status, raw_headers, body)
    # A lost object is found out here, before any byte: StoredObjectMissing (503), and the
    # next request makes the renderings again.
    pathsend = "http.response.pathsend" in request.scope.get("extensions", {})
    if pathsend and body.path is not None and os.path.isfile(body.path):  # noqa: ASYNC240
        return PathResponse(status, raw_headers, body.path)
    return StreamedResponse(status, raw_headers, await _pages(request).open_stored(body))


# PEP 691 path variants (`v1+json/`, `v1+html/`) force a format whatever Accept says; no
# project name contains "+", so they never shadow a project.
routes = [
    Route("/{repo}/simple/", project_list),
    Route("/{repo}/simple", add_slash),
    Route("/{repo}/simple/v1+json/", project_list_json),
    Route("/{repo}/simple/v1+html/", project_list_html),
    Route("/{repo}/simple/v1+json/{project}/", project_page_json),
    Route("/{repo}/simple/v1+html/{project}/", project_page_html),
    Route("/{repo}/simple/{project}/", project_page),
    Route("/{repo}/simple/{project}", add_slash),
]
