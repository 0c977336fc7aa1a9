"""A real upstream index on a loopback socket, for integration tests.

It serves the Simple API in the format each project asks for (PEP 691 JSON or PEP 503
HTML), counts every request (and records its headers), answers `If-None-Match` with 304,
and can be told to misbehave per path: delay, stall until released, fail with a status, send
a raw body of any type (optionally chunked, with extra headers), redirect, send raw bytes as
the whole answer, drop the connection before answering or in the middle of the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

JSON_V1 = "application/vnd.pypi.simple.v1+json"


@dataclass
class UpstreamFile:
    filename: str
    content: bytes = b"not really a distribution"
    requires_python: str | None = None
    yanked: str | bool = False
    metadata: bytes | None = None
    upload_time: str | None = None
    provenance: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class UpstreamProject:
    name: str  # as displayed
    files: list[UpstreamFile] = field(default_factory=list)
    format: str = "json"  # "json" or "html"
    status: str | None = None
    status_reason: str | None = None
    serial: int = 1


@dataclass
class Fault:
    """How to misbehave for one path: delay, then a status and/or a raw body.

    With neither a body nor a non-200 status the normal answer follows the delay or gate.
    Delays, gates and stalls all end early when the upstream stops.
    """

    delay: float = 0.0
    status: int = 200
    body: bytes | None = None
    content_type: str = "text/html"
    times: int | None = None  # None: forever; N: the next N requests only
    gate: asyncio.Event | None = None  # answer only once this is set
    stall: bool = False  # never answer (until the upstream stops)
    reset: bool = False  # drop the connection without answering
    chunked: bool = False  # send `body` without Content-Length (chunked encoding)
    # Send the headers, with the full Content-Length, and only this many bytes of `body`
    # (of the file, for file paths), then drop the connection.
    truncate: int | None = None
    # Files only: send the real content in pieces of `slow_chunk` bytes, sleeping
    # `slow_delay` seconds between them.
    slow_chunk: int | None = None
    slow_delay: float = 0.0
    # Files only: send content of the right length with one byte changed (a bad hash).
    corrupt: bool = False
    # Files only: send this many extra bytes, then the content, with no Content-Length:
    # chunked when `chunked`, else delimited by closing the connection. The body is longer
    # than the page's size and wrong from its first byte.
    overlong: int | None = None
    # Answer with a redirect to this URL (with `status` when it is a 3xx, else 302).
    redirect_to: str | None = None
    # Extra headers sent with `body` (Content-Encoding, ETag, X-PyPI-Last-Serial, ...).
    headers: dict[str, str] = field(default_factory=dict)
    # Write these bytes as the whole answer (status line, headers, body: anything, not even
    # valid UTF-8), then close the connection.
    raw: bytes | None = None


@dataclass
class RecordedRequest:
    path: str
    headers: CIMultiDictProxy[str]
    # The answer's status and headers; None until sent (or when the connection dropped).
    status: int | None = None
    response_headers: CIMultiDictProxy[str] | None = None


_RECORDED = web.RequestKey("recorded", RecordedRequest)


class LocalUpstream:
    def __init__(self) -> None:
        self.projects: dict[str, UpstreamProject] = {}
        self.hits: Counter[str] = Counter()
        self.faults: dict[str, Fault] = {}
        self.requests: list[RecordedRequest] = []
        # File paths whose body was sent completely.
        self.completed: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def add(self, project: UpstreamProject) -> UpstreamProject:
        self.projects[_normalize(project.name)] = project
        return project

    def fail(self, path: str, fault: Fault) -> None:
        """`path` as requested, e.g. "/simple/foo/"."""
        self.faults[path] = fault

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Every request received for `path`, oldest first."""
        return [r for r in self.requests if r.path == path]

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/simple/", self._index)
        app.router.add_get("/simple/{project}/", self._project)
        app.router.add_get("/files/{project}/{filename}", self._file)
        app.on_response_prepare.append(self._record_status)
        self._released = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = sockets[0][1]

    async def stop(self) -> None:
        # Release stalled handlers first: the runner waits for every handler to finish.
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _record(self, request: web.Request) -> None:
        self.hits[request.path] += 1
        recorded = RecordedRequest(request.path, CIMultiDictProxy(CIMultiDict(request.headers)))
        self.requests.append(recorded)
        request[_RECORDED] = recorded

    async def _record_status(self, request: web.Request, response: web.StreamResponse) -> None:
        recorded = request.get(_RECORDED)
        dropped = request.transport is None or request.transport.is_closing()
        if recorded is not None and not dropped:
            recorded.status = response.status
            recorded.response_headers = CIMultiDictProxy(CIMultiDict(response.headers))

    async def _wait(self, awaitable: Any) -> None:
        """Wait for `awaitable`, or until the upstream stops."""
        released = asyncio.ensure_future(self._released.wait())
        waited = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait({released, waited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (released, waited):
                task.cancel()

    async def _faulted(self, request: web.Request) -> web.StreamResponse | None:
        fault = self.faults.get(request.path)
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[request.path]
        if fault.delay:
            await self._wait(asyncio.sleep(fault.delay))
        if fault.gate is not None:
            await self._wait(fault.gate.wait())
        if fault.stall:
            await self._wait(self._released.wait())
        if fault.reset:
            return _drop(request)
        if fault.raw is not None:
            return _send_raw(request, fault.raw)
        if fault.redirect_to is not None:
            status = fault.status if 300 <= fault.status < 400 else 302
            return web.Response(status=status, headers={"Location": fault.redirect_to})
        if fault.body is None and fault.status == 200:
            return None
        body = fault.body if fault.body is not None else b"upstream trouble"
        headers = {"Content-Type": fault.content_type, **fault.headers}
        if fault.chunked or fault.truncate is not None:
            response = web.StreamResponse(status=fault.status, headers=headers)
            if fault.chunked:
                response.enable_chunked_encoding()
            else:
                response.content_length = len(body)
            await response.prepare(request)
            if fault.truncate is not None:
                await response.write(body[: fault.truncate])
                _drop(request)
                return response
            await response.write(body)
            await response.write_eof()
            return response
        return web.Response(status=fault.status, body=body, headers=headers)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        faulted = await self._faulted(request)
        if faulted is not None:
            return faulted
        names = [p.name for p in self.projects.values()]
        if JSON_V1 in request.headers.get("Accept", ""):
            body = json.dumps(
                {"meta": {"api-version": "1.0"}, "projects": [{"name": n} for n in names]}
            ).encode()
            return self._answer(request, body, JSON_V1)
        links = "".join(f'<a href="{_normalize(n)}/">{html.escape(n)}</a>\n' for n in names)
        body = f"<!DOCTYPE html><html><body>{links}</body></html>".encode()
        return self._answer(request, body, "text/html")

    async def _project(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        faulted = await self._faulted(request)
        if faulted is not None:
            return faulted
        project = self.projects.get(request.match_info["project"])
        if project is None:
            return web.Response(status=404, text="no such project")
        if project.format == "json":
            body = json.dumps(_json_page(project)).encode()
            return self._answer(request, body, JSON_V1, project.serial)
        return self._answer(request, _html_page(project), "text/html", project.serial)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        content = self._file_content(request)
        fault = self.faults.get(request.path)
        if fault is not None and content is not None and _is_file_fault(fault):
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[request.path]
            return await self._send_file(request, content, fault)
        faulted = await self._faulted(request)
        if faulted is not None:
            return faulted
        if content is None:
            return web.Response(status=404)
        response = web.Response(body=content, content_type="application/octet-stream")
        self.completed[request.path] += 1
        return response

    def _file_content(self, request: web.Request) -> bytes | None:
        project = self.projects.get(request.match_info["project"])
        filename = request.match_info["filename"]
        for file in project.files if project else []:
            if file.filename == filename:
                return file.content
            if file.metadata is not None and f"{file.filename}.metadata" == filename:
                return file.metadata
        return None

    async def _send_file(
        self, request: web.Request, content: bytes, fault: Fault
    ) -> web.StreamResponse:
        if fault.overlong is not None:
            return await self._send_overlong(request, bytes(fault.overlong) + content, fault)
        if fault.corrupt:
            content = content[:-1] + bytes([content[-1] ^ 0xFF])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(content)
        await response.prepare(request)
        sent = content if fault.truncate is None else content[: fault.truncate]
        step = fault.slow_chunk or len(sent) or 1
        for offset in range(0, len(sent), step):
            await response.write(sent[offset : offset + step])
            if fault.slow_delay:
                await self._wait(asyncio.sleep(fault.slow_delay))
        if fault.truncate is not None:
            return _drop(request)
        await response.write_eof()
        self.completed[request.path] += 1
        return response

    async def _send_overlong(
        self, request: web.Request, sent: bytes, fault: Fault
    ) -> web.StreamResponse:
        """`sent` with no length announced, in pieces of `slow_chunk` bytes."""
        step = fault.slow_chunk or len(sent)
        pieces = [sent[offset : offset + step] for offset in range(0, len(sent), step)]
        if fault.chunked:
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in pieces:
                await response.write(piece)
                await self._wait(asyncio.sleep(fault.slow_delay))
            await response.write_eof()
            return response
        # aiohttp chunks any HTTP/1.1 body without a length: write the answer ourselves.
        transport = request.transport
        assert transport is not None
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
        transport.write(b"Connection: close\r\n\r\n")
        for piece in pieces:
            transport.write(piece)
            await self._wait(asyncio.sleep(fault.slow_delay))
        transport.close()
        return web.Response()

    def _answer(
        self, request: web.Request, body: bytes, content_type: str, serial: int | None = None
    ) -> web.Response:
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        headers = {"ETag": etag, "Content-Type": content_type}
        if serial is not None:
            headers["X-PyPI-Last-Serial"] = str(serial)
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers)


def _is_file_fault(fault: Fault) -> bool:
    return (
        fault.corrupt
        or fault.overlong is not None
        or fault.slow_chunk is not None
        or (fault.truncate is not None and fault.body is None)
    )


def _drop(request: web.Request) -> web.Response:
    """Close the connection under the handler: the client sees the server disconnect."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


def _send_raw(request: web.Request, raw: bytes) -> web.Response:
    """Send `raw` as it is, bypassing aiohttp's response, and close the connection."""
    assert request.transport is not None
    request.transport.write(raw)
    request.transport.close()
    return web.Response()


def _normalize(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _file_url(project: UpstreamProject, file: UpstreamFile) -> str:
    return f"../../files/{_normalize(project.name)}/{quote(file.filename)}"


def _json_page(project: UpstreamProject) -> dict[str, Any]:
    files = []
    for file in project.files:
        entry: dict[str, Any] = {
            "filename": file.filename,
            "url": _file_url(project, file),
            "hashes": {"sha256": file.sha256},
            "requires-python": file.requires_python,
            "yanked": file.yanked,
            "size": len(file.content),
        }
        if file.metadata is not None:
            entry["core-metadata"] = {"sha256": hashlib.sha256(file.metadata).hexdigest()}
        if file.upload_time is not None:
            entry["upload-time"] = file.upload_time
        if file.provenance is not None:
            entry["provenance"] = file.provenance
        files.append(entry)
    page: dict[str, Any] = {
        "meta": {"api-version": "1.1", "_last-serial": project.serial},
        "name": _normalize(project.name),
        "files": files,
        "versions": [],
    }
    if project.status is not None:
        page["project-status"] = {"status": project.status}
        if project.status_reason is not None:
            page["project-status"]["reason"] = project.status_reason
    return page


def _html_page(project: UpstreamProject) -> bytes:
    anchors = []
    for file in project.files:
        href = f"{_file_url(project, file)}#sha256={file.sha256}"
        attributes = [f'href="{html.escape(href)}"']
        if file.requires_python is not None:
            attributes.append(f'data-requires-python="{html.escape(file.requires_python)}"')
        if file.yanked is not False:
            reason = "" if file.yanked is True else str(file.yanked)
            attributes.append(f'data-yanked="{html.escape(reason)}"')
        if file.metadata is not None:
            digest = hashlib.sha256(file.metadata).hexdigest()
            attributes.append(f'data-dist-info-metadata="sha256={digest}"')
        if file.provenance is not None:
            attributes.append(f'data-provenance="{html.escape(file.provenance)}"')
        anchors.append(f"<a {' '.join(attributes)}>{html.escape(file.filename)}</a><br/>")
    head = '<meta name="pypi:repository-version" content="1.0">'
    if project.status is not None:
        head += f'<meta name="pypi:project-status" content="{html.escape(project.status)}">'
        if project.status_reason is not None:
            reason = html.escape(project.status_reason)
            head += f'<meta name="pypi:project-status-reason" content="{reason}">'
    body = "\n".join(anchors)
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>".encode()
