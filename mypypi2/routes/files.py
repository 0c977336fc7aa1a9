"""Distribution files and their PEP 658 metadata: `/{repo}/files/{project}/{filename}`."""

from __future__ import annotations

import os
import re

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mypypi2.file_headers import OCTETS, etag_of, file_headers
from mypypi2.files import METADATA_SUFFIX, Files, KnownFile, PendingFile
from mypypi2.routes.conditional import etag_matches, http_date
from mypypi2.routes.headers import RawResponse
from mypypi2.snapshot import RawHeaders
from mypypi2.storage import StoredFile

# Range units compare case-insensitively (RFC 9110 14.1).
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.IGNORECASE)
_UNSATISFIABLE = (-1, -1)


async def file(request: Request) -> Response:
    repository = request.path_params["repo"]
    project = request.path_params["project"]
    filename = request.path_params["filename"]
    files: Files = request.state.files
    if filename.endswith(METADATA_SUFFIX):
        return await _metadata(request, files, repository, project, filename)
    found = await files.find(repository, project, filename)
    if isinstance(found, KnownFile):
        answer = await _stored(request, files, repository, project, found)
        if not isinstance(answer, PendingFile):
            return answer
        found = answer  # the store lost it: fetched again
    return await _pending(request, files, repository, found)


async def _stored(
    request: Request, files: Files, repository: str, project: str, known: KnownFile
) -> Response | PendingFile:
    stored, headers = known.stored, known.headers
    etag = etag_of(stored.sha256)
    if _not_modified(request, stored, etag):
        return RawResponse(304, headers.validators)
    # A presigned URL is signed for one method (GET): HEAD is answered here, from the row.
    redirect = None if request.method == "HEAD" else await files.storage.redirect(stored.key)
    if redirect is not None:
        redirected = RedirectResponse(redirect.url, status_code=redirect.status)
        redirected.raw_headers = [*headers.validators, *redirected.raw_headers]
        return redirected
    # Ranges are decided here, the same for disk and S3: FileResponse would answer a range
    # unit it does not know with a 400, where RFC 9110 14.2 asks for the whole file.
    requested = _requested_range(request, stored, etag)
    if requested == _UNSATISFIABLE:
        return RawResponse(416, headers.unsatisfiable())
    if requested is None and known.path is not None:
        # Zero-copy (`http.response.pathsend`) and HEAD come with FileResponse.
        stat = await files.stat(repository, project, known)
        if isinstance(stat, PendingFile):
            return stat
        return _WholeFile(known.path, headers.whole, stat)
    if requested is None:
        start, end, status, raw = 0, stored.size, 200, headers.whole
    else:
        start, end = requested
        status, raw = 206, headers.part(start, end)
    if request.method == "HEAD":
        return RawResponse(status, raw)
    body = await files.open(repository, project, known, start, end)
    if isinstance(body, PendingFile):
        return body
    response = StreamingResponse(body, status_code=status)
    response.raw_headers = raw
    return response


class _WholeFile(FileResponse):
    """A FileResponse of the whole file, whatever Range says (ranges are decided before),
    with the stored file's headers: those of the warm path."""

    def __init__(self, path: str, raw_headers: RawHeaders, stat: os.stat_result) -> None:
        self.path = path
        self.status_code = 200
        self.filename = None
        self.media_type = OCTETS
        self.background = None
        self.raw_headers = raw_headers
        self.stat_result = stat

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


def _requested_range(request: Request, stored: StoredFile, etag: str) -> tuple[int, int] | None:
    header = request.headers.get("range")
    if header is None:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() not in (etag, stored.last_modified):
        return None  # the client holds other bytes: a piece of ours is no use (13.1.5)
    return _single_range(header, stored.size)


async def _pending(
    request: Request, files: Files, repository: str, pending: PendingFile
) -> Response:
    sha256 = pending.row.hashes.get("sha256")
    if sha256 is not None and etag_matches(request, etag_of(sha256)):
        return RawResponse(304, file_headers(sha256, None, None, ranges=False).validators)
    if request.method == "HEAD":
        # HEAD never costs a download: answer with what the page told us.
        return RawResponse(200, file_headers(sha256, pending.row.size, None, ranges=False).whole)
    # A Range on a file still arriving is answered with the whole file (RFC 9110 allows
    # ignoring Range); once stored, ranges are served. The response starts only once the
    # download has bytes to send: a failure before then is a clean error status.
    length, body = await files.stream(repository, pending)
    response = StreamingResponse(body)
    response.raw_headers = file_headers(sha256, length, None, ranges=False).whole
    return response


async def _metadata(
    request: Request, files: Files, repository: str, project: str, filename: str
) -> Response:
    distribution = filename.removesuffix(METADATA_SUFFIX)
    metadata = await files.metadata(repository, project, distribution)
    if etag_matches(request, etag_of(metadata.sha256)):
        return RawResponse(304, metadata.headers.validators)
    return RawResponse(200, metadata.headers.whole, metadata.body)


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
