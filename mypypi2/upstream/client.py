"""The HTTP client of one upstream index: conditional GETs that return parsed pages, and files.

Failures are translated where they happen: 404/410 -> UpstreamNotFound, timeouts ->
UpstreamTimeout, anything else unusable (status, connection, size, body, a page the parser
cannot read, a host the policy refuses) -> UpstreamError, chained to the cause. The URL an
error names is redacted: its text reaches clients in 502 bodies and the logs.

Everything an upstream sends is untrusted:
- bodies are bounded twice, as received and as expanded: we ask for gzip but decompress
  ourselves in bounded pieces, so a small compressed "bomb" is refused at the limit;
- the project list (tens of MB) streams through its parser and is never held whole;
- validators are kept only when PostgreSQL and our own responses can carry them: printable
  ASCII of sane length, a serial of ASCII digits that fits a bigint;
- redirects are followed here, hop by hop: each hop is checked against the host policy
  (`hosts.py`), and credentials only ever go to the upstream's own origin.

Every request is reported to the worker's observer as one `observe.UpstreamRecord` (its
result, time and bytes received), once its body is read or it failed. Failures are not
logged here: the use case that meets one logs it once, whoever waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Generic, TypeVar
from urllib.parse import urldefrag, urljoin, urlsplit

import aiohttp
import msgspec
import yarl

from mypypi2.config import RepositoryConfig
from mypypi2.errors import MalformedPage, UpstreamError, UpstreamNotFound, UpstreamTimeout
from mypypi2.models import ProjectList, ProjectPage, Validators
from mypypi2.observe import Observer, RequestKind, UpstreamRecord, UpstreamResult
from mypypi2.upstream.hosts import GuardedResolver, HostPolicy, HostRefused, is_ip_literal
from mypypi2.upstream.parse import ProjectListParser, parse_project_page
from mypypi2.upstream.parse_rules import serial_from
from mypypi2.urls import origin, redact_text, redact_url, split_userinfo

log = logging.getLogger(__name__)

T = TypeVar("T")
# What `_get` fetches: both carry the serial the upstream put into the page (PEP 691 meta).
_Model = TypeVar("_Model", ProjectPage, ProjectList)

# JSON first: it carries sizes and upload times that HTML cannot (PEP 700).
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
# The codings we can undo ourselves with a bound on the output (zlib's max_length).
ACCEPT_ENCODING = "gzip, deflate"
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
# Parsing a large page (a project list runs to tens of MB) would stall every other request.
_PARSE_IN_THREAD_ABOVE = 512 * 1024
# An ETag or Last-Modified is a few dozen characters; past this it is not a validator.
_MAX_VALIDATOR_LENGTH = 1024
_MAX_REASON_LENGTH = 300


class Fetched(msgspec.Struct, Generic[T], frozen=True):
    model: T
    validators: Validators


class NotModified(msgspec.Struct, frozen=True):
    """The upstream answered 304: what we hold is still current."""

    validators: Validators


class _Exchange:
    """What one upstream request got so far: the final status and body bytes received."""

    __slots__ = ("received", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.received = 0


class UpstreamBody(msgspec.Struct, frozen=True):
    """A file response being received: its announced length and its chunks."""

    content_length: int | None
    chunks: AsyncIterator[bytes]


# What turns a page response into a model: (response, content type, final URL, the
# exchange counting its bytes) -> model.
_Consume = Callable[[aiohttp.ClientResponse, str, str, "_Exchange"], Awaitable[_Model]]


class UpstreamClient:
    def __init__(
        self,
        repository: RepositoryConfig,
        session: aiohttp.ClientSession,
        policy: HostPolicy,
        observer: Observer,
    ) -> None:
        self._repository = repository
        self._session = session
        self._observer = observer
        # Userinfo in the upstream URL is basic auth, sent like `username`/`password`, and
        # never part of a URL we request, log or put into an error.
        self._base, userinfo = split_userinfo(repository.upstream.rstrip("/") + "/")
        self._origin = origin(self._base)
        # The one the session's resolver holds (see `open`): what it learns of the upstream's
        # addresses, the IP literals checked here are judged by too.
        self._policy = policy
        self._credentials = dict(repository.headers)
        username, password = repository.username, repository.password
        if username is None and userinfo is not None:
            username, password = userinfo
        if username is not None:
            self._credentials["Authorization"] = aiohttp.encode_basic_auth(username, password or "")

    @classmethod
    def open(cls, repository: RepositoryConfig, observer: Observer | None = None) -> UpstreamClient:
        """A client on a session (connection pool) of its own, used for everything sent to
        this upstream, with one host policy for its resolver and its own checks; `close`
        ends both. Its requests are reported to `observer` (by default, to nobody)."""
        policy = HostPolicy.for_repository(repository)
        return cls(repository, _session(repository, policy), policy, observer or Observer())

    async def close(self) -> None:
        await self._session.close()
        await self._policy.close()

    @asynccontextmanager
    async def file(self, url: str) -> AsyncIterator[UpstreamBody]:
        """GET a distribution file; errors while reading the body are translated too."""
        # The bytes hashed must be the bytes published: no content coding.
        headers = {"Accept-Encoding": "identity"}
        repository = self._repository.name
        self._observer.download_started(repository)
        try:
            with self._observed("file") as exchange, _translated(url):
                timeout = self._repository.download_timeout
                async with self._open(url, timeout, headers) as response:
                    exchange.status = response.status
                    _raise_for_status(response, url)
                    chunks = _counted(response.content.iter_chunked(_CHUNK), exchange)
                    yield UpstreamBody(response.content_length, chunks)
        finally:
            self._observer.download_ended(repository)

    async def small_file(self, url: str, limit: int) -> bytes:
        """GET a small file whole (a PEP 658 .metadata), refusing more than `limit` bytes."""
        headers = {"Accept-Encoding": ACCEPT_ENCODING}
        with self._observed("metadata") as exchange, _translated(url):
            async with self._open(url, self._repository.total_timeout, headers) as response:
                exchange.status = response.status
                _raise_for_status(response, url)
                pieces = _expanded(response, url, limit, exchange)
                return b"".join([piece async for piece in pieces])

    async def project_page(
        self, project: str, known: Validators | None
    ) -> Fetched[ProjectPage] | NotModified:
        url = f"{self._base}{project}/"
        limit = self._repository.max_page_bytes

        async def consume(
            response: aiohttp.ClientResponse, content_type: str, final_url: str, exchange: _Exchange
        ) -> ProjectPage:
            body = b"".join([piece async for piece in _expanded(response, url, limit, exchange)])
            return await _parse(
                url, len(body), lambda: parse_project_page(body, content_type, final_url, project)
            )

        return await self._get(url, known, consume, "page")

    async def project_list(self, known: Validators | None) -> Fetched[ProjectList] | NotModified:
        url = self._base
        limit = self._repository.max_list_bytes

        async def consume(
            response: aiohttp.ClientResponse,
            content_type: str,
            _final_url: str,
            exchange: _Exchange,
        ) -> ProjectList:
            # Fed as it arrives: the list is never held whole, compressed or expanded.
            with _parsing(url):
                parser = ProjectListParser(content_type)
            fed = 0
            async for piece in _expanded(response, url, limit, exchange):
                await _parse(url, fed, partial(parser.feed, piece))
                fed += len(piece)
            return await _parse(url, fed, parser.close)

        return await self._get(url, known, consume, "list")

    async def _get(
        self, url: str, known: Validators | None, consume: _Consume[_Model], kind: RequestKind
    ) -> Fetched[_Model] | NotModified:
        headers = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
        etag = _validator(known.etag if known is not None else None)
        if etag is not None:
            headers["If-None-Match"] = etag
        last_modified = _validator(known.last_modified if known is not None else None)
        if last_modified is not None:
            headers["If-Modified-Since"] = last_modified
        with self._observed(kind) as exchange, _translated(url):
            async with self._open(
                url, self._repository.total_timeout, headers, pages=True
            ) as response:
                exchange.status = response.status
                if response.status == 304 and known is not None:
                    return NotModified(_validators(response, known))
                _raise_for_status(response, url)
                validators = _validators(response, Validators())
                content_type = response.headers.get("Content-Type", "")
                model = await consume(response, content_type, str(response.url), exchange)
        serial = validators.last_serial
        if serial is None:
            serial = serial_from(model.last_serial)
        return Fetched(model, msgspec.structs.replace(validators, last_serial=serial))

    @asynccontextmanager
    async def _open(
        self, url: str, total: float, headers: Mapping[str, str], *, pages: bool = False
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET `url`, following redirects ourselves within one deadline of `total` seconds.

        Every hop is checked against the host policy before it is sent, and carries the
        configured credentials only when it is on the upstream's own origin. `pages`: an
        index page that redirects to another origin is "not here" (pypiserver sends unknown
        projects to its fallback index that way); following it would let another index's
        files into this repository, the dependency confusion groups exist to prevent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        for _hop in range(MAX_REDIRECTS + 1):
            await self._check_target(url)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            async with self._session.get(
                url,
                headers=self._headers(url, headers),
                allow_redirects=False,
                timeout=_timeout(self._repository, remaining),
            ) as response:
                location = response.headers.get("Location")
                if response.status not in _REDIRECT_STATUSES or location is None:
                    yield response
                    return
                target = _redirect_target(url, location)
                if pages and origin(target) != self._origin:
                    await self._check_target(target)  # an unusable target is refused as such
                    log.warning(
                        "%s redirects to another origin (%s): treated as not found",
                        redact_url(url),
                        redact_url(target),
                    )
                    raise UpstreamNotFound(redact_url(url))
                url = target
        raise HostRefused(f"refused: more than {MAX_REDIRECTS} redirects")

    @contextmanager
    def _observed(self, kind: RequestKind) -> Iterator[_Exchange]:
        """Report the request made inside as one UpstreamRecord (errors as translated)."""
        exchange = _Exchange()
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield exchange
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._observer.upstream(
                UpstreamRecord(
                    self._repository.name,
                    kind,
                    _result(exchange.status, failure),
                    time.perf_counter() - started,
                    exchange.received,
                    None if failure is None else str(failure) or type(failure).__name__,
                )
            )

    async def _check_target(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            yarl.URL(url)  # what aiohttp will make of it; surrogates fail here
        except (ValueError, UnicodeError) as exc:
            raise HostRefused(f"refused: invalid URL ({exc})") from exc
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise HostRefused(f"refused: not an http(s) URL: {redact_url(url)}")
        self._policy.check_host(host)
        if is_ip_literal(host):  # names are checked as they resolve (GuardedResolver)
            await self._policy.check_address(host, host)

    def _headers(self, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        # Credentials of a private index go to that index only: never to the file host
        # (often a CDN) its pages link to, nor along a redirect to another origin.
        if origin(url) == self._origin:
            return {**self._credentials, **headers}
        return dict(headers)


def _session(repository: RepositoryConfig, policy: HostPolicy) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=_timeout(repository, repository.total_timeout),
        connector=aiohttp.TCPConnector(
            limit=64, limit_per_host=64, resolver=GuardedResolver(policy)
        ),
        raise_for_status=False,
        # Decoded by `_expanded`, counting what a compressed body expands to.
        auto_decompress=False,
    )


def _timeout(repository: RepositoryConfig, total: float) -> aiohttp.ClientTimeout:
    # `total` bounds a whole response, body included; `sock_read` bounds each silence.
    return aiohttp.ClientTimeout(
        total=total, connect=repository.connect_timeout, sock_read=repository.read_timeout
    )


def _redirect_target(url: str, location: str) -> str:
    try:
        target = urljoin(url, location.strip())
    except ValueError as exc:
        raise HostRefused(f"refused: redirect to an invalid URL ({exc})") from exc
    return urldefrag(target).url


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """Connection-level failures as our errors, naming `url` without its secrets."""
    shown = redact_url(url)
    try:
        yield
    except HostRefused as exc:
        raise UpstreamError(shown, exc.reason) from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(shown, "timed out") from exc
    except aiohttp.ClientError as exc:
        if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, HostRefused):
            raise UpstreamError(shown, exc.os_error.reason) from exc
        raise UpstreamError(shown, _reason(f"{type(exc).__name__}: {exc}")) from exc


async def _parse(url: str, size: int, parse: Callable[[], T]) -> T:
    """`parse()` of what `url` sent, off the event loop once `size` bytes make it slow."""
    with _parsing(url):
        if size > _PARSE_IN_THREAD_ABOVE:
            return await asyncio.to_thread(parse)
        return parse()


@contextmanager
def _parsing(url: str) -> Iterator[None]:
    """Whatever a parser raises on an upstream's bytes is that upstream's bad answer."""
    try:
        yield
    except MalformedPage as exc:
        raise UpstreamError(redact_url(url), _reason(f"malformed page: {exc.reason}")) from exc
    except Exception as exc:  # ValueError, RecursionError, UnicodeError, OverflowError, ...
        reason = _reason(f"unreadable page: {type(exc).__name__}: {exc}")
        raise UpstreamError(redact_url(url), reason) from exc


def _reason(text: str) -> str:
    text = redact_text(text)
    if len(text) > _MAX_REASON_LENGTH:
        return text[: _MAX_REASON_LENGTH - 3] + "..."
    return text


def _raise_for_status(response: aiohttp.ClientResponse, url: str) -> None:
    if response.status in (404, 410):
        raise UpstreamNotFound(redact_url(url))
    if response.status != 200:
        reason = f"HTTP {response.status} {response.reason or ''}".strip()
        raise UpstreamError(redact_url(url), _reason(reason))


async def _expanded(
    response: aiohttp.ClientResponse, url: str, limit: int, exchange: _Exchange
) -> AsyncIterator[bytes]:
    """The body with its content coding undone; over `limit` bytes received or expanded,
    or undecodable, it is an UpstreamError. `exchange` counts the bytes received."""
    shown = redact_url(url)
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamError(shown, f"page of {response.content_length} bytes is over {limit}")
    coding = response.headers.get("Content-Encoding", "").strip().lower()
    if coding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise UpstreamError(shown, _reason(f"unsupported Content-Encoding {coding!r}"))
    expander = _Expander(coding)
    received = expanded = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        received += len(chunk)
        exchange.received = received
        if received > limit:
            raise UpstreamError(shown, f"page is over the limit of {limit} bytes")
        try:
            for piece in expander.expand(chunk):
                expanded += len(piece)
                if expanded > limit:
                    raise UpstreamError(
                        shown, f"{coding} page expands past the limit of {limit} bytes"
                    )
                yield piece
        except zlib.error as exc:
            raise UpstreamError(shown, _reason(f"bad {coding} body: {exc}")) from exc
    if not expander.complete:
        raise UpstreamError(shown, f"{coding} body ends before its compressed stream does")


async def _counted(chunks: AsyncIterator[bytes], exchange: _Exchange) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        exchange.received += len(chunk)
        yield chunk


def _result(status: int | None, failure: BaseException | None) -> UpstreamResult:
    """What an upstream request came to, from its final status and how it failed."""
    if failure is None:
        return "304" if status == 304 else "200"
    if isinstance(failure, UpstreamTimeout):
        return "timeout"
    if isinstance(failure, UpstreamNotFound):
        return "404"
    if status is not None and status >= 500:
        return "5xx"
    cause = failure.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError) and isinstance(cause.os_error, HostRefused):
        return "other"  # refused by the host policy, never sent
    if isinstance(cause, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return "connect-error"  # refused, reset, or cut short mid-body
    if status == 200 and isinstance(failure, UpstreamError):
        return "malformed"  # a body that is unusable: unreadable, too large, not the page's
    return "other"


class _Expander:
    """Undoes gzip or deflate in pieces of at most _CHUNK bytes, so what a body expands to
    is counted before it is held."""

    def __init__(self, coding: str) -> None:
        self._coding = coding if coding not in ("", "identity") else None
        self._inflater: zlib._Decompress | None = None

    @property
    def complete(self) -> bool:
        return self._inflater is None

    def expand(self, data: bytes) -> Iterator[bytes]:
        if self._coding is None:
            if data:
                yield data
            return
        while True:
            if self._inflater is None:
                if not data:
                    return
                self._inflater = zlib.decompressobj(self._window_bits(data))
            piece = self._inflater.decompress(data, _CHUNK)
            if piece:
                yield piece
            if self._inflater.eof:
                # A gzip body may hold several members (RFC 1952); anything else after the
                # end of a stream fails as the start of the next one.
                data = self._inflater.unused_data
                self._inflater = None
                continue
            data = self._inflater.unconsumed_tail
            if not data and len(piece) < _CHUNK:  # input used up, no output pending
                return

    def _window_bits(self, data: bytes) -> int:
        if self._coding != "deflate":
            return 16 + zlib.MAX_WBITS  # gzip header and trailer
        # "deflate" is zlib-wrapped (RFC 9110), but some servers send a raw deflate stream.
        return zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS


def _validator(value: str | None) -> str | None:
    """An ETag or Last-Modified we can store and send back: printable ASCII, not too long.

    Headers are decoded as UTF-8 with surrogate escapes: invalid bytes would reach
    PostgreSQL as text it refuses. Without a validator we simply ask unconditionally."""
    if value and len(value) < _MAX_VALIDATOR_LENGTH and value.isascii() and value.isprintable():
        return value
    return None


def _validators(response: aiohttp.ClientResponse, known: Validators) -> Validators:
    """The response's validators; a 304 may omit some (or send unusable ones), then the
    known ones stay."""
    etag = _validator(response.headers.get("ETag"))
    last_modified = _validator(response.headers.get("Last-Modified"))
    serial = serial_from(response.headers.get("X-PyPI-Last-Serial", "").strip())
    return Validators(
        etag=etag if etag is not None else known.etag,
        last_modified=last_modified if last_modified is not None else known.last_modified,
        last_serial=serial if serial is not None else known.last_serial,
    )
