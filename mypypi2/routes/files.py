"""Distribution files and their PEP 658 metadata: `/{repo}/files/{project}/{filename}`."""

from __future__ import annotations

import os
import re

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from mypypi2.errors import FileNotFound
from mypypi2.files import METADATA_SUFFIX, Files, PendingFile
from mypypi2.routes.conditional import etag_matches
from mypypi2.storage import StoredFile

# A filename's content never changes (the index forbids re-uploads), so clients and
# proxies may keep a file forever.
_IMMUTABLE = "public, max-age=31536000, immutable"
_OCTETS = "application/octet-stream"
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_UNSATISFIABLE = (-1, -1)


async def file(request: Request) -> Response:
    repository = request.path_params["repo"]
    project = request.path_params["project"]
    filename = request.path_params["filename"]
    files: Files = request.state.files
    if filename.endswith(METADATA_SUFFIX):
        return await _metadata(request, files, repository, project, filename)
    found = await files.find(repository, project, filename)
    if isinstance(found, StoredFile):
        return await _stored(request, files, found)
    return await _pending(request, files, repository, found)


async def _stored(request: Request, files: Files, stored: StoredFile) -> Response:
    headers = {"ETag": f'"{stored.sha256}"', "Cache-Control": _IMMUTABLE}
    if etag_matches(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    storage = files.storage
    # A presigned URL is signed for one method (GET): HEAD is answered here, from the row.
    redirect = None if request.method == "HEAD" else await storage.redirect(stored.key)
    if redirect is not None:
        return RedirectResponse(redirect.url, status_code=redirect.status, headers=headers)
    path = storage.local_path(stored.key)
    if path is not None:
        # Range, HEAD and zero-copy (`http.response.pathsend`) come with FileResponse. The
        # stat is ours: FileResponse would hop to a thread for it, which costs more than
        # the stat of a file the page cache holds.
        try:
            stat = os.stat(path)
        except FileNotFoundError as exc:  # removed behind our back (a purge, an operator)
            repository, project = request.path_params["repo"], request.path_params["project"]
            raise FileNotFound(repository, project, stored.filename) from exc
        return FileResponse(path, headers=headers, media_type=_OCTETS, stat_result=stat)
    return _stream_through(request, files, stored, headers)


def _stream_through(
    request: Request, files: Files, stored: StoredFile, headers: dict[str, str]
) -> Response:
    headers["Accept-Ranges"] = "bytes"
    start, end, status = 0, stored.size, 200
    requested = _single_range(request.headers.get("range"), stored.size)
    if requested == _UNSATISFIABLE:
        headers["Content-Range"] = f"bytes */{stored.size}"
        return Response(status_code=416, headers=headers)
    if requested is not None:
        start, end = requested
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=_OCTETS)
    body = files.storage.stream(stored.key, start, end)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=_OCTETS)


async def _pending(
    request: Request, files: Files, repository: str, pending: PendingFile
) -> Response:
    headers = {"Cache-Control": _IMMUTABLE}
    sha256 = pending.row.hashes.get("sha256")
    if sha256 is not None:
        headers["ETag"] = f'"{sha256}"'
        if etag_matches(request, headers["ETag"]):
            return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        # HEAD never costs a download: answer with what the page told us.
        if pending.row.size is not None:
            headers["Content-Length"] = str(pending.row.size)
        return Response(headers=headers, media_type=_OCTETS)
    # A Range on a file still arriving is answered with the whole file (RFC 9110 allows
    # ignoring Range); once stored, ranges are served.
    length, body = await files.stream(repository, pending)
    if length is not None:
        headers["Content-Length"] = str(length)
    return StreamingResponse(body, headers=headers, media_type=_OCTETS)


async def _metadata(
    request: Request, files: Files, repository: str, project: str, filename: str
) -> Response:
    distribution = filename.removesuffix(METADATA_SUFFIX)
    metadata = await files.metadata(repository, project, distribution)
    headers = {"ETag": f'"{metadata.sha256}"', "Cache-Control": _IMMUTABLE}
    if etag_matches(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(metadata.body, headers=headers, media_type=_OCTETS)


def _single_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None to send everything (RFC 9110 14.2)."""
    if header is None:
        return None
    match = _SINGLE_RANGE.match(header.strip())
    if match is None:
        return None  # multiple or malformed ranges: the whole file is a valid answer
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _UNSATISFIABLE
        return max(size - suffix, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        return _UNSATISFIABLE
    return start, end


routes = [Route("/{repo}/files/{project}/{filename}", file, methods=["GET", "HEAD"])]
