"""The HTTP client of one upstream index: conditional GETs that return parsed pages.

Failures are translated where they happen: 404/410 -> UpstreamNotFound, timeouts ->
UpstreamTimeout, anything else unusable (status, connection, size, body) -> UpstreamError,
always chained to the cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec

from mypypi2.config import RepositoryConfig
from mypypi2.errors import MalformedPage, UpstreamError, UpstreamNotFound, UpstreamTimeout
from mypypi2.models import ProjectList, ProjectPage
from mypypi2.queries import Validators
from mypypi2.upstream.parse import parse_project_list, parse_project_page

T = TypeVar("T")

# JSON first: it carries sizes and upload times that HTML cannot (PEP 700).
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
_CHUNK = 64 * 1024
# Parsing a large page (a project list runs to tens of MB) would stall every other request.
_PARSE_IN_THREAD_ABOVE = 512 * 1024


class Fetched(msgspec.Struct, Generic[T], frozen=True):
    model: T
    validators: Validators


class NotModified(msgspec.Struct, frozen=True):
    """The upstream answered 304: what we hold is still current."""

    validators: Validators


class UpstreamBody(msgspec.Struct, frozen=True):
    """A file response being received: its announced length and its chunks."""

    content_length: int | None
    chunks: AsyncIterator[bytes]


class UpstreamClient:
    def __init__(self, repository: RepositoryConfig, session: aiohttp.ClientSession) -> None:
        self._repository = repository
        self._session = session
        self._base = repository.upstream.rstrip("/") + "/"
        self._origin = _origin(self._base)
        self._credentials = dict(repository.headers)
        if repository.username is not None:
            self._credentials["Authorization"] = aiohttp.encode_basic_auth(
                repository.username, repository.password or ""
            )
        # Files may take long; only silence and connecting are bounded, never the total.
        self._file_timeout = aiohttp.ClientTimeout(
            total=None, connect=repository.connect_timeout, sock_read=repository.read_timeout
        )

    @staticmethod
    def open_session(repository: RepositoryConfig) -> aiohttp.ClientSession:
        """The one session (connection pool) used for everything sent to this upstream."""
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=repository.total_timeout,
                connect=repository.connect_timeout,
                sock_read=repository.read_timeout,
            ),
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=64),
            raise_for_status=False,
        )

    def _headers(self, url: str, **headers: str) -> dict[str, str]:
        # Credentials of a private index go to that index only, never to the file host
        # (often a CDN) its pages link to.
        if _origin(url) == self._origin:
            return {**self._credentials, **headers}
        return headers

    @asynccontextmanager
    async def file(self, url: str) -> AsyncIterator[UpstreamBody]:
        """GET a distribution file; errors while reading the body are translated too."""
        try:
            async with self._session.get(
                url,
                headers=self._headers(url, **{"Accept-Encoding": "identity"}),
                timeout=self._file_timeout,
                auto_decompress=False,  # the bytes hashed must be the bytes published
            ) as response:
                _raise_for_status(response, url)
                yield UpstreamBody(response.content_length, response.content.iter_chunked(_CHUNK))
        except TimeoutError as exc:
            raise UpstreamTimeout(url, "timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(url, f"{type(exc).__name__}: {exc}") from exc

    async def small_file(self, url: str, limit: int) -> bytes:
        """GET a small file whole (a PEP 658 .metadata), refusing more than `limit` bytes."""
        try:
            async with self._session.get(url, headers=self._headers(url)) as response:
                _raise_for_status(response, url)
                return await _read_limited(response, url, limit)
        except TimeoutError as exc:
            raise UpstreamTimeout(url, "timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(url, f"{type(exc).__name__}: {exc}") from exc

    async def project_page(
        self, project: str, known: Validators | None
    ) -> Fetched[ProjectPage] | NotModified:
        url = f"{self._base}{project}/"
        return await self._get(
            url,
            known,
            self._repository.max_page_bytes,
            lambda body, type_, final_url: parse_project_page(body, type_, final_url, project),
        )

    async def project_list(self, known: Validators | None) -> Fetched[ProjectList] | NotModified:
        return await self._get(
            self._base,
            known,
            self._repository.max_list_bytes,
            lambda body, type_, _: parse_project_list(body, type_),
        )

    async def _get(
        self,
        url: str,
        known: Validators | None,
        limit: int,
        parse: Callable[[bytes, str, str], T],
    ) -> Fetched[T] | NotModified:
        headers = self._headers(url, Accept=ACCEPT)
        if known is not None and known.etag:
            headers["If-None-Match"] = known.etag
        if known is not None and known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        try:
            async with self._session.get(url, headers=headers) as response:
                if response.status == 304 and known is not None:
                    return NotModified(_validators(response, known))
                _raise_for_status(response, url)
                body = await _read_limited(response, url, limit)
                content_type = response.headers.get("Content-Type", "")
                final_url = str(response.url)
                validators = _validators(response, Validators())
        except TimeoutError as exc:
            raise UpstreamTimeout(url, "timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(url, f"{type(exc).__name__}: {exc}") from exc
        try:
            if len(body) > _PARSE_IN_THREAD_ABOVE:
                model = await asyncio.to_thread(parse, body, content_type, final_url)
            else:
                model = parse(body, content_type, final_url)
        except MalformedPage as exc:
            raise UpstreamError(url, f"malformed page: {exc.reason}") from exc
        serial = validators.last_serial
        if serial is None:
            serial = getattr(model, "last_serial", None)
        return Fetched(model, msgspec.structs.replace(validators, last_serial=serial))


def _raise_for_status(response: aiohttp.ClientResponse, url: str) -> None:
    if response.status in (404, 410):
        raise UpstreamNotFound(url)
    if response.status != 200:
        raise UpstreamError(url, f"HTTP {response.status} {response.reason or ''}".strip())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, parts.hostname or "", parts.port or default_port


async def _read_limited(response: aiohttp.ClientResponse, url: str, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamError(url, f"page of {response.content_length} bytes is over {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise UpstreamError(url, f"page is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _validators(response: aiohttp.ClientResponse, known: Validators) -> Validators:
    """The response's validators; a 304 may omit some, then the known ones stay."""
    serial_header = response.headers.get("X-PyPI-Last-Serial", "")
    return Validators(
        etag=response.headers.get("ETag", known.etag),
        last_modified=response.headers.get("Last-Modified", known.last_modified),
        last_serial=int(serial_header) if serial_header.isdigit() else known.last_serial,
    )
