"""Distribution files and their PEP 658 metadata: `/{repo}/files/{project}/{filename}`."""

from __future__ import annotations

import os
import re

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mypypi2.files import METADATA_SUFFIX, Files, KnownFile, PendingFile
from mypypi2.routes.conditional import etag_matches, http_date
from mypypi2.storage import StoredFile

# A filename's content never changes (the index forbids re-uploads, and we keep serving the
# bytes we stored first), so clients and proxies may keep a file forever. The warm path
# (warm.py) sends these too.
IMMUTABLE = "public, max-age=31536000, immutable"
OCTETS = "application/octet-stream"
# Range units compare case-insensitively (RFC 9110 14.1).
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.IGNORECASE)
_UNSATISFIABLE = (-1, -1)


def etag_of(sha256: str) -> str:
    """The ETag of bytes with this digest, in every answer that carries them (warm.py too):
    a file or metadata body pending, stored or redirected to is validated the same way."""
    return f'"{sha256}"'


async def file(request: Request) -> Response:
    repository = request.path_params["repo"]
    project = request.path_params["project"]
    filename = request.path_params["filename"]
    files: Files = request.state.files
    if filename.endswith(METADATA_SUFFIX):
        return await _metadata(request, files, repository, project, filename)
    found = await files.find(repository, project, filename)
    if isinstance(found, KnownFile):
        response = await _stored(request, files, found)
        if response is not None:
            return response
        found = await files.lost(repository, project, found.stored)
    return await _pending(request, files, repository, found)


async def _stored(request: Request, files: Files, known: KnownFile) -> Response | None:
    """The stored file's answer; None when the store turns out to have lost it."""
    stored, path = known.stored, known.path
    headers = {"ETag": etag_of(stored.sha256), "Cache-Control": IMMUTABLE}
    if stored.last_modified is not None:
        headers["Last-Modified"] = stored.last_modified
    if _not_modified(request, stored, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    # A presigned URL is signed for one method (GET): HEAD is answered here, from the row.
    redirect = None if request.method == "HEAD" else await files.storage.redirect(stored.key)
    if redirect is not None:
        return RedirectResponse(redirect.url, status_code=redirect.status, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    # Ranges are decided here, the same for disk and S3: FileResponse would answer a range
    # unit it does not know with a 400, where RFC 9110 14.2 asks for the whole file.
    requested = _requested_range(request, stored, headers)
    if requested == _UNSATISFIABLE:
        headers["Content-Range"] = f"bytes */{stored.size}"
        return Response(status_code=416, headers=headers)
    if requested is None and path is not None:
        # Zero-copy (`http.response.pathsend`) and HEAD come with FileResponse. The stat is
        # ours: FileResponse would hop to a thread for it, which costs more than the stat of
        # a file the page cache holds.
        try:
            stat = os.stat(path)
        except FileNotFoundError:  # removed behind our back (a cleanup job, an operator)
            return None
        return _WholeFile(path, headers=headers, media_type=OCTETS, stat_result=stat)
    start, end, status = 0, stored.size, 200
    if requested is not None:
        start, end = requested
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=OCTETS)
    body = await files.open_stored(stored, start, end)
    if body is None:
        return None
    return StreamingResponse(body, status_code=status, headers=headers, media_type=OCTETS)


class _WholeFile(FileResponse):
    """A FileResponse of the whole file, whatever Range says: ranges are decided before."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name != b"range"]
        await super().__call__({**scope, "headers": headers}, receive, send)


def _not_modified(request: Request, stored: StoredFile, etag: str) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if "if-none-match" in request.headers:
        return etag_matches(request, etag)
    since = request.headers.get("if-modified-since")
    if since is None or stored.stored_at is None:
        return False
    date = http_date(since)
    return date is not None and stored.stored_at <= date


def _requested_range(
    request: Request, stored: StoredFile, headers: dict[str, str]
) -> tuple[int, int] | None:
    header = request.headers.get("range")
    if header is None:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() not in (headers["ETag"], stored.last_modified):
        return None  # the client holds other bytes: a piece of ours is no use (13.1.5)
    return _single_range(header, stored.size)


async def _pending(
    request: Request, files: Files, repository: str, pending: PendingFile
) -> Response:
    headers = {"Cache-Control": IMMUTABLE}
    sha256 = pending.row.hashes.get("sha256")
    if sha256 is not None:
        headers["ETag"] = etag_of(sha256)
        if etag_matches(request, headers["ETag"]):
            return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        # HEAD never costs a download: answer with what the page told us.
        if pending.row.size is not None:
            headers["Content-Length"] = str(pending.row.size)
        return Response(headers=headers, media_type=OCTETS)
    # A Range on a file still arriving is answered with the whole file (RFC 9110 allows
    # ignoring Range); once stored, ranges are served. The response starts only once the
    # download has bytes to send: a failure before then is a clean error status.
    length, body = await files.stream(repository, pending)
    if length is not None:
        headers["Content-Length"] = str(length)
    return StreamingResponse(body, headers=headers, media_type=OCTETS)


async def _metadata(
    request: Request, files: Files, repository: str, project: str, filename: str
) -> Response:
    distribution = filename.removesuffix(METADATA_SUFFIX)
    metadata = await files.metadata(repository, project, distribution)
    headers = {"ETag": etag_of(metadata.sha256), "Cache-Control": IMMUTABLE}
    if etag_matches(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(metadata.body, headers=headers, media_type=OCTETS)


def _single_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None to send everything (RFC 9110 14.2).

    Another unit, several ranges, or an invalid one (`bytes=5-2`) are ignored: the whole
    file is always a valid answer. Only a valid range past the end is unsatisfiable."""
    match = _SINGLE_RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _UNSATISFIABLE
        return max(size - suffix, 0), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return _UNSATISFIABLE
    return start, min(int(last) + 1, size) if last else size


routes = [Route("/{repo}/files/{project}/{filename}", file, methods=["GET", "HEAD"])]
