"""UpstreamClient edge cases, with aioresponses standing in for the upstream."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aioresponses import aioresponses
from yarl import URL

from mypypi2.config import RepositoryConfig
from mypypi2.errors import MalformedPage, UpstreamError, UpstreamNotFound, UpstreamTimeout
from mypypi2.models import ProjectList, ProjectPage, Validators
from mypypi2.upstream import client as client_module
from mypypi2.upstream.client import ACCEPT, Fetched, NotModified, UpstreamClient
from mypypi2.upstream.parse import ProjectListParser, parse_project_page
from tests import fake_dns
from tests.fake_dns import FakeResolver
from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject

JSON_V1 = "application/vnd.pypi.simple.v1+json"
BASE = "http://upstream.test/simple/"
PAGE_URL = f"{BASE}demo/"
SHA256 = "ab" * 32
PAGE: dict[str, Any] = {
    "meta": {"api-version": "1.1", "_last-serial": 7},
    "name": "demo",
    "files": [
        {
            "filename": "demo-1.0.tar.gz",
            "url": "../../files/demo/demo-1.0.tar.gz",
            "hashes": {"sha256": SHA256},
        }
    ],
}
PAGE_BODY = json.dumps(PAGE).encode()
# Never connected to: names resolve from a table and aioresponses answers every request.
PUBLIC = "1.2.3.4"
LIST_BODY = json.dumps({"meta": {"api-version": "1.0"}, "projects": [{"name": "demo"}]}).encode()

MakeClient = Callable[..., UpstreamClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Clients on their real session (as app.py builds them); options go to RepositoryConfig."""
    clients: list[UpstreamClient] = []

    def make(upstream: str = BASE, **options: Any) -> UpstreamClient:
        client = UpstreamClient.open(RepositoryConfig(name="pypi", upstream=upstream, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


class _FinishedWriter:
    output_size = 0


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); hand it the writer of an already sent request."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _FinishedWriter())
        super().__init__(method, url, **kwargs)


class Upstream(aioresponses):
    def reply(self, url: str, **kwargs: Any) -> None:
        """Answer the next GET of `url` (aioresponses' `get`, with a compatible response)."""
        self.get(url, response_class=_Response, **kwargs)


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    """The upstream's name looks public; aioresponses answers every request (no socket)."""
    return fake_dns.install(monkeypatch, {"upstream.test": [PUBLIC]})


@pytest.fixture
def mock_upstream() -> Iterator[Upstream]:
    mocked = Upstream()
    with mocked:
        yield mocked


def sent_headers(mock_upstream: Upstream, url: str = PAGE_URL, index: int = 0) -> dict[str, str]:
    """The headers of the `index`th GET of `url`, as aioresponses recorded them."""
    call = mock_upstream.requests[("GET", URL(url))][index]
    return {key.lower(): value for key, value in dict(call.kwargs["headers"]).items()}


async def fetch_page(
    client: UpstreamClient, known: Validators | None = None
) -> Fetched[ProjectPage]:
    result = await client.project_page("demo", known)
    assert isinstance(result, Fetched)
    return result


# -- requests ---------------------------------------------------------------------------------


async def test_first_request_asks_json_first_without_validators(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    fetched = await fetch_page(make_client())

    headers = sent_headers(mock_upstream)
    assert headers["accept"] == ACCEPT
    assert ACCEPT.startswith(JSON_V1)
    assert "if-none-match" not in headers
    assert "if-modified-since" not in headers
    assert [f.filename for f in fetched.model.files] == ["demo-1.0.tar.gz"]
    assert fetched.model.files[0].url == "http://upstream.test/files/demo/demo-1.0.tar.gz"


async def test_revalidation_sends_known_validators(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, status=304)
    known = Validators('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", 41)

    await make_client().project_page("demo", known)

    headers = sent_headers(mock_upstream)
    assert headers["if-none-match"] == '"abc"'
    assert headers["if-modified-since"] == "Mon, 01 Jan 2024 00:00:00 GMT"


async def test_extra_headers_are_sent(make_client: MakeClient, mock_upstream: Upstream) -> None:
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    client = make_client(headers={"X-Token": "t0ken", "User-Agent": "ci"})

    await fetch_page(client)

    headers = sent_headers(mock_upstream)
    assert headers["x-token"] == "t0ken"
    assert headers["user-agent"] == "ci"
    assert headers["accept"] == ACCEPT


async def test_basic_auth_and_extra_headers_are_sent(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    client = make_client(username="reader", password="s3cret", headers={"X-Token": "t0ken"})

    await fetch_page(client)

    headers = sent_headers(mock_upstream)
    assert headers["authorization"] == "Basic " + base64.b64encode(b"reader:s3cret").decode()
    assert headers["x-token"] == "t0ken"
    assert headers["accept"] == ACCEPT


async def test_basic_auth_without_password_sends_an_empty_one(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(BASE, body=LIST_BODY, content_type=JSON_V1)

    await make_client(username="token-only").project_list(None)

    headers = sent_headers(mock_upstream, BASE)
    assert headers["authorization"] == "Basic " + base64.b64encode(b"token-only:").decode()


# -- validators -------------------------------------------------------------------------------


async def test_304_without_headers_keeps_known_validators(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, status=304)
    known = Validators('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", 41)

    result = await make_client().project_page("demo", known)

    assert result == NotModified(known)


async def test_304_with_new_headers_updates_only_those(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, status=304, headers={"ETag": '"def"', "X-PyPI-Last-Serial": "42"})
    known = Validators('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", 41)

    result = await make_client().project_page("demo", known)

    assert result == NotModified(Validators('"def"', "Mon, 01 Jan 2024 00:00:00 GMT", 42))


async def test_304_for_the_project_list(make_client: MakeClient, mock_upstream: Upstream) -> None:
    mock_upstream.reply(BASE, status=304)
    known = Validators(etag='"list"')

    assert await make_client().project_list(known) == NotModified(known)


async def test_200_validators_and_last_serial_header(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(
        PAGE_URL,
        body=PAGE_BODY,
        content_type=JSON_V1,
        headers={
            "ETag": '"v2"',
            "Last-Modified": "Tue, 02 Jan 2024 00:00:00 GMT",
            "X-PyPI-Last-Serial": "1234",
        },
    )

    fetched = await fetch_page(make_client(), Validators('"v1"', None, 5))

    assert fetched.validators == Validators('"v2"', "Tue, 02 Jan 2024 00:00:00 GMT", 1234)


@pytest.mark.parametrize("header", [None, "", "not-a-number", "-3"])
async def test_last_serial_falls_back_to_the_page_when_header_is_absent_or_bad(
    make_client: MakeClient, mock_upstream: Upstream, header: str | None
) -> None:
    headers = {} if header is None else {"X-PyPI-Last-Serial": header}
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1, headers=headers)

    fetched = await fetch_page(make_client())

    assert fetched.validators.last_serial == 7  # meta._last-serial
    assert fetched.validators.etag is None


async def test_200_does_not_inherit_known_validators(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    # A full answer without an ETag has none: re-sending the old one would be wrong.
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    fetched = await fetch_page(make_client(), Validators('"old"', "yesterday", 3))

    assert fetched.validators.etag is None
    assert fetched.validators.last_modified is None


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
async def test_404_and_410_are_not_found(
    make_client: MakeClient, mock_upstream: Upstream, status: int
) -> None:
    mock_upstream.reply(PAGE_URL, status=status, body=b"no such project")

    with pytest.raises(UpstreamNotFound) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.url == PAGE_URL


async def test_404_for_the_project_list_is_not_found(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(BASE, status=404)

    with pytest.raises(UpstreamNotFound):
        await make_client().project_list(None)


@pytest.mark.parametrize("status", [500, 502, 503, 403, 401, 429])
async def test_other_statuses_are_upstream_errors(
    make_client: MakeClient, mock_upstream: Upstream, status: int
) -> None:
    mock_upstream.reply(PAGE_URL, status=status)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert type(raised.value) is UpstreamError
    assert f"HTTP {status}" in raised.value.reason


async def test_304_without_a_conditional_request_is_an_error(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    # We asked for a page; "not modified" of nothing is not an answer.
    mock_upstream.reply(PAGE_URL, status=304)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert "HTTP 304" in raised.value.reason


@pytest.mark.parametrize(
    "exception",
    [TimeoutError(), aiohttp.ServerTimeoutError("read"), aiohttp.ConnectionTimeoutError()],
    ids=["timeout", "server-timeout", "connect-timeout"],
)
async def test_timeouts_are_upstream_timeouts(
    make_client: MakeClient, mock_upstream: Upstream, exception: Exception
) -> None:
    mock_upstream.reply(PAGE_URL, exception=exception)

    with pytest.raises(UpstreamTimeout) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.__cause__ is exception
    assert "timed out" in str(raised.value)


@pytest.mark.parametrize(
    "exception",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("connection refused"),
        aiohttp.ClientPayloadError("truncated"),
    ],
    ids=["disconnected", "refused", "payload"],
)
async def test_connection_failures_are_upstream_errors(
    make_client: MakeClient, mock_upstream: Upstream, exception: Exception
) -> None:
    mock_upstream.reply(PAGE_URL, exception=exception)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert not isinstance(raised.value, UpstreamTimeout | UpstreamNotFound)
    assert raised.value.__cause__ is exception
    assert type(exception).__name__ in raised.value.reason


async def test_content_length_over_the_limit_is_rejected_before_reading(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    # A small, valid body behind a huge announced length: only the header can fail it.
    mock_upstream.reply(
        PAGE_URL, body=PAGE_BODY, content_type=JSON_V1, headers={"Content-Length": "5000000"}
    )

    with pytest.raises(UpstreamError) as raised:
        await make_client(max_page_bytes=len(PAGE_BODY)).project_page("demo", None)

    assert raised.value.reason == f"page of 5000000 bytes is over {len(PAGE_BODY)}"


async def test_body_over_the_limit_without_content_length_is_rejected(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    with pytest.raises(UpstreamError) as raised:
        await make_client(max_page_bytes=len(PAGE_BODY) - 1).project_page("demo", None)

    assert raised.value.reason == f"page is over the limit of {len(PAGE_BODY) - 1} bytes"


async def test_body_exactly_at_the_limit_is_accepted(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(
        PAGE_URL,
        body=PAGE_BODY,
        content_type=JSON_V1,
        headers={"Content-Length": str(len(PAGE_BODY))},
    )

    fetched = await fetch_page(make_client(max_page_bytes=len(PAGE_BODY)))

    assert fetched.model.name == "demo"


async def test_project_list_has_its_own_limit(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(BASE, body=LIST_BODY, content_type=JSON_V1)
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    client = make_client(max_page_bytes=10_000_000, max_list_bytes=10)

    with pytest.raises(UpstreamError, match="over the limit of 10 bytes"):
        await client.project_list(None)
    await fetch_page(client)


async def test_malformed_page_is_an_upstream_error_chained_to_the_parse_error(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, body=b'{"meta": ', content_type=JSON_V1)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.reason.startswith("malformed page: invalid JSON page")
    assert isinstance(raised.value.__cause__, MalformedPage)


async def test_large_page_is_parsed_off_the_event_loop_with_the_same_result(
    make_client: MakeClient, mock_upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioresponses cannot feed a body of the real threshold's size; lower the threshold.
    threads: list[threading.Thread] = []

    def parse(*args: Any) -> ProjectPage:
        threads.append(threading.current_thread())
        return parse_project_page(*args)

    monkeypatch.setattr(client_module, "_PARSE_IN_THREAD_ABOVE", len(PAGE_BODY))
    monkeypatch.setattr(client_module, "parse_project_page", parse)
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY + b" ", content_type=JSON_V1)
    client = make_client()

    small = await fetch_page(client)
    large = await fetch_page(client)

    assert threads[0] is threading.main_thread()
    assert threads[1] is not threading.main_thread()
    assert large == small


# -- untrusted validators ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", ["²", "١٢", str(2**63), str(2**64), "12a", "1e3", "+5", "٣"], ids=repr
)
async def test_last_serial_header_needs_ascii_digits_that_fit_a_bigint(
    make_client: MakeClient, mock_upstream: Upstream, header: str
) -> None:
    # "²".isdigit() is true and int("²") raises; 2**63 overflows PostgreSQL's bigint.
    mock_upstream.reply(
        PAGE_URL, body=PAGE_BODY, content_type=JSON_V1, headers={"X-PyPI-Last-Serial": header}
    )

    fetched = await fetch_page(make_client())

    assert fetched.validators.last_serial == 7  # meta._last-serial


async def test_the_largest_bigint_serial_is_kept(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    serial = str(2**63 - 1)
    mock_upstream.reply(
        PAGE_URL, body=PAGE_BODY, content_type=JSON_V1, headers={"X-PyPI-Last-Serial": serial}
    )

    fetched = await fetch_page(make_client())

    assert fetched.validators.last_serial == 2**63 - 1


async def test_a_page_serial_out_of_bigint_range_is_dropped(
    make_client: MakeClient, mock_upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever the parser lets through, what reaches a bigint column must fit one.
    def parse(*args: Any) -> ProjectPage:
        page = parse_project_page(*args)
        return msgspec.structs.replace(page, last_serial=2**63)

    monkeypatch.setattr(client_module, "parse_project_page", parse)
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    fetched = await fetch_page(make_client())

    assert fetched.validators.last_serial is None


UNUSABLE_VALIDATORS = ['"' + "x" * 1100 + '"', '"café"', '"tab\there"', ""]


@pytest.mark.parametrize("value", UNUSABLE_VALIDATORS, ids=["long", "non-ascii", "tab", "empty"])
async def test_unusable_etag_and_last_modified_are_dropped(
    make_client: MakeClient, mock_upstream: Upstream, value: str
) -> None:
    mock_upstream.reply(
        PAGE_URL,
        body=PAGE_BODY,
        content_type=JSON_V1,
        headers={"ETag": value, "Last-Modified": value},
    )

    fetched = await fetch_page(make_client())

    assert (fetched.validators.etag, fetched.validators.last_modified) == (None, None)


async def test_unusable_validators_on_a_304_keep_the_known_ones(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(
        PAGE_URL, status=304, headers={"ETag": '"café"', "Last-Modified": "x" * 2000}
    )
    known = Validators('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", 41)

    assert await make_client().project_page("demo", known) == NotModified(known)


async def test_unusable_known_validators_are_not_sent(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    # A row stored before validators were checked: no header injection, no conditional GET.
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    await fetch_page(make_client(), Validators('"a"\r\nX-Injected: 1', "caf\u00e9", 3))

    headers = sent_headers(mock_upstream)
    assert "if-none-match" not in headers
    assert "if-modified-since" not in headers


# -- anything a parser raises -----------------------------------------------------------------


PARSER_FAILURES = [
    ValueError("bad value"),
    RecursionError("maximum recursion depth exceeded"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    OverflowError("int too large"),
    KeyError("missing"),
    AssertionError("internal"),
]


@pytest.mark.parametrize("exception", PARSER_FAILURES, ids=lambda e: type(e).__name__)
async def test_any_page_parser_failure_is_an_upstream_error(
    make_client: MakeClient,
    mock_upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
    exception: Exception,
) -> None:
    def parse(*args: Any) -> ProjectPage:
        raise exception

    monkeypatch.setattr(client_module, "parse_project_page", parse)
    mock_upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert type(raised.value) is UpstreamError
    assert raised.value.__cause__ is exception
    assert raised.value.reason.startswith(f"unreadable page: {type(exception).__name__}")


@pytest.mark.parametrize("stage", ["init", "feed", "close"])
async def test_any_project_list_parser_failure_is_an_upstream_error(
    make_client: MakeClient, mock_upstream: Upstream, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    class Exploding:
        def __init__(self, content_type: str) -> None:
            self._explode("init")

        def feed(self, chunk: bytes) -> None:
            self._explode("feed")

        def close(self) -> ProjectList:
            self._explode("close")
            raise AssertionError("unreachable")

        @staticmethod
        def _explode(at: str) -> None:
            if at == stage:
                raise RecursionError(f"deep in {at}")

    monkeypatch.setattr(client_module, "ProjectListParser", Exploding)
    mock_upstream.reply(BASE, body=LIST_BODY, content_type=JSON_V1)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_list(None)

    assert type(raised.value) is UpstreamError
    assert raised.value.reason == f"unreadable page: RecursionError: deep in {stage}"


async def test_project_list_is_fed_to_its_parser_piece_by_piece(
    make_client: MakeClient, mock_upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed: list[int] = []

    class Recording(ProjectListParser):
        def feed(self, chunk: bytes) -> None:
            fed.append(len(chunk))
            super().feed(chunk)

    monkeypatch.setattr(client_module, "ProjectListParser", Recording)
    names = [f"project-{i}" for i in range(20_000)]
    body = json.dumps(
        {"meta": {"api-version": "1.0"}, "projects": [{"name": n} for n in names]}
    ).encode()
    mock_upstream.reply(BASE, body=gzip.compress(body), content_type=JSON_V1, headers=GZIP)

    fetched = await make_client().project_list(None)

    assert isinstance(fetched, Fetched)
    assert list(fetched.model.names) == names
    assert sum(fed) == len(body)
    assert len(fed) > 1 and max(fed) <= client_module._CHUNK


# -- content coding ---------------------------------------------------------------------------


GZIP = {"Content-Encoding": "gzip"}


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _raw_deflate),
        ("gzip", lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:])),  # two members
        ("identity", lambda b: b),
    ],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "gzip-two-members", "identity"],
)
async def test_compressed_pages_are_decoded(
    make_client: MakeClient,
    mock_upstream: Upstream,
    coding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    mock_upstream.reply(
        PAGE_URL,
        body=encode(PAGE_BODY),
        content_type=JSON_V1,
        headers={"Content-Encoding": coding},
    )

    fetched = await fetch_page(make_client())

    assert [f.filename for f in fetched.model.files] == ["demo-1.0.tar.gz"]
    assert sent_headers(mock_upstream)["accept-encoding"] == "gzip, deflate"


async def test_a_gzip_bomb_page_is_refused_at_the_expanded_limit(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    bomb = gzip.compress(b" " * 5_000_000)  # about 5 KB
    mock_upstream.reply(PAGE_URL, body=bomb, content_type=JSON_V1, headers=GZIP)

    with pytest.raises(UpstreamError) as raised:
        await make_client(max_page_bytes=1_000_000).project_page("demo", None)

    assert raised.value.reason == "gzip page expands past the limit of 1000000 bytes"


async def test_a_gzip_bomb_project_list_is_refused_at_the_expanded_limit(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    bomb = gzip.compress(b"<html>" + b" " * 5_000_000)
    mock_upstream.reply(BASE, body=bomb, content_type="text/html", headers=GZIP)

    with pytest.raises(UpstreamError) as raised:
        await make_client(max_list_bytes=1_000_000).project_list(None)

    assert raised.value.reason == "gzip page expands past the limit of 1000000 bytes"


async def test_a_gzip_bomb_metadata_file_is_refused(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    url = "http://upstream.test/files/demo/demo-1.0.tar.gz.metadata"
    mock_upstream.reply(url, body=gzip.compress(b"Metadata-Version: 2.1\n" * 100_000), headers=GZIP)
    mock_upstream.reply(url, body=gzip.compress(b"Metadata-Version: 2.1\n"), headers=GZIP)
    client = make_client()

    with pytest.raises(UpstreamError, match="expands past the limit of 100000 bytes"):
        await client.small_file(url, 100_000)
    assert await client.small_file(url, 100_000) == b"Metadata-Version: 2.1\n"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not gzip", "bad gzip body: "),
        (gzip.compress(PAGE_BODY)[:20], "gzip body ends before its compressed stream does"),
        (gzip.compress(PAGE_BODY) + b"trailing junk", "bad gzip body: "),
    ],
    ids=["not-gzip", "truncated", "trailing-junk"],
)
async def test_undecodable_gzip_is_an_upstream_error(
    make_client: MakeClient, mock_upstream: Upstream, body: bytes, reason: str
) -> None:
    mock_upstream.reply(PAGE_URL, body=body, content_type=JSON_V1, headers=GZIP)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert type(raised.value) is UpstreamError
    assert raised.value.reason.startswith(reason)


async def test_a_content_coding_we_did_not_ask_for_is_refused(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(
        PAGE_URL, body=b"\x0b\x02", content_type=JSON_V1, headers={"Content-Encoding": "br"}
    )

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.reason == "unsupported Content-Encoding 'br'"


def test_expanding_never_yields_a_piece_larger_than_a_chunk() -> None:
    data = bytes(range(256)) * 4000  # ~1 MB, compresses to a few KB
    expander = client_module._Expander("gzip")

    pieces = list(expander.expand(gzip.compress(data)))

    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= client_module._CHUNK
    assert expander.complete


async def test_a_file_is_asked_for_without_content_coding(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    url = "http://upstream.test/files/demo/demo-1.0.tar.gz"
    mock_upstream.reply(url, body=b"sdist bytes")

    async with make_client().file(url) as body:
        received = b"".join([chunk async for chunk in body.chunks])

    assert received == b"sdist bytes"
    assert sent_headers(mock_upstream, url)["accept-encoding"] == "identity"


# -- redirects and credentials ----------------------------------------------------------------


async def test_credentials_follow_redirects_on_the_upstream_origin_only(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    moved, elsewhere = f"{BASE}demo-moved/", "http://mirror.test/files/demo/demo-1.0.tar.gz"
    mock_upstream.reply(PAGE_URL, status=301, headers={"Location": "/simple/demo-moved/"})
    mock_upstream.reply(moved, body=PAGE_BODY, content_type=JSON_V1)
    mock_upstream.reply(elsewhere, body=b"x")
    client = make_client(username="reader", password="s3cret", headers={"X-Token": "t0ken"})

    fetched = await fetch_page(client)
    async with client.file(elsewhere) as body:
        assert b"".join([chunk async for chunk in body.chunks]) == b"x"

    for url in (PAGE_URL, moved):
        assert sent_headers(mock_upstream, url)["x-token"] == "t0ken"
        assert "authorization" in sent_headers(mock_upstream, url)
    at_mirror = sent_headers(mock_upstream, elsewhere)
    assert "x-token" not in at_mirror and "authorization" not in at_mirror
    # Relative file URLs are resolved against where the page really came from.
    assert fetched.model.files[0].url == "http://upstream.test/files/demo/demo-1.0.tar.gz"


async def test_a_page_redirected_to_another_origin_is_not_found(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mirror = "http://mirror.test/simple/demo/"
    mock_upstream.reply(PAGE_URL, status=303, headers={"Location": mirror})
    mock_upstream.reply(mirror, body=PAGE_BODY, content_type=JSON_V1)
    client = make_client(headers={"X-Token": "t0ken"})

    with pytest.raises(UpstreamNotFound):
        await fetch_page(client)

    assert ("GET", URL(mirror)) not in mock_upstream.requests


@pytest.mark.parametrize(
    "elsewhere",
    ["https://upstream.test/files/f.whl", "http://upstream.test:8080/files/f.whl"],
    ids=["other-scheme", "other-port"],
)
async def test_a_file_redirected_to_another_origin_gets_no_credentials(
    make_client: MakeClient, mock_upstream: Upstream, elsewhere: str
) -> None:
    url = "http://upstream.test/files/f.whl"
    mock_upstream.reply(url, status=302, headers={"Location": elsewhere})
    mock_upstream.reply(elsewhere, body=b"wheel")
    client = make_client(username="reader", password="s3cret", headers={"X-Token": "t0ken"})

    async with client.file(url) as body:
        assert b"".join([chunk async for chunk in body.chunks]) == b"wheel"

    assert "x-token" in sent_headers(mock_upstream, url)
    assert "x-token" not in sent_headers(mock_upstream, elsewhere)
    assert "authorization" not in sent_headers(mock_upstream, elsewhere)


async def test_redirects_end_after_a_few_hops(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.get(
        PAGE_URL,
        status=302,
        headers={"Location": PAGE_URL},
        response_class=_Response,
        repeat=True,
    )

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.reason == f"refused: more than {client_module.MAX_REDIRECTS} redirects"
    assert len(mock_upstream.requests[("GET", URL(PAGE_URL))]) == client_module.MAX_REDIRECTS + 1


async def test_a_redirect_to_another_scheme_is_refused(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, status=302, headers={"Location": "file:///etc/passwd"})

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.reason == "refused: not an http(s) URL: file:///etc/passwd"


async def test_credentials_in_the_upstream_url_are_basic_auth_and_never_shown(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, status=503)
    client = make_client(upstream="http://read%40er:s3cret@upstream.test/simple/")

    with pytest.raises(UpstreamError) as raised:
        await client.project_page("demo", None)

    expected = "Basic " + base64.b64encode(b"read@er:s3cret").decode()
    assert sent_headers(mock_upstream)["authorization"] == expected
    assert raised.value.url == PAGE_URL
    assert "s3cret" not in str(raised.value)


async def test_urls_in_errors_are_redacted(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    # A page may link files with userinfo; neither the URL nor aiohttp's text may show it.
    url = "http://user:pa55@upstream.test/files/f.whl"
    mock_upstream.reply(url, exception=aiohttp.ClientConnectionError(f"cannot reach {url}"))

    with pytest.raises(UpstreamError) as raised:
        async with make_client().file(url):
            pass

    assert raised.value.url == "http://user:<redacted>@upstream.test/files/f.whl"
    assert "pa55" not in str(raised.value)


# -- the host policy --------------------------------------------------------------------------


def requested(mock_upstream: Upstream) -> list[str]:
    return [str(url) for _method, url in mock_upstream.requests]


async def test_file_hosts_refuses_any_other_host_before_sending_anything(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    listed, own = "http://files.test/f.metadata", "http://upstream.test/f.metadata"
    mock_upstream.reply(listed, body=b"listed")
    mock_upstream.reply(own, body=b"own")
    client = make_client(file_hosts=["files.test"])

    with pytest.raises(UpstreamError) as raised:
        await client.small_file("http://elsewhere.test/f.metadata", 100)

    assert raised.value.reason == "refused: host elsewhere.test is not in file-hosts"
    assert requested(mock_upstream) == []
    assert await client.small_file(listed, 100) == b"listed"
    assert await client.small_file(own, 100) == b"own"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "http://169.254.169.254/latest/meta-data/",
            "refused: host 169.254.169.254 is a link-local address (169.254.169.254)",
        ),
        ("http://127.0.0.1:5432/", "refused: host 127.0.0.1 is a loopback address (127.0.0.1)"),
        ("http://[::ffff:10.0.0.1]/x", "refused: host ::ffff:10.0.0.1 is a private address"),
        ("http://0.0.0.0:8000/x", "refused: host 0.0.0.0 is a unspecified address (0.0.0.0)"),
    ],
    ids=["metadata-service", "loopback", "mapped-private", "unspecified"],
)
async def test_a_public_upstream_may_not_send_us_to_inner_addresses(
    make_client: MakeClient, mock_upstream: Upstream, url: str, reason: str
) -> None:
    with pytest.raises(UpstreamError) as raised:
        async with make_client().file(url):
            pass

    assert raised.value.reason.startswith(reason)
    assert requested(mock_upstream) == []


async def test_a_redirect_to_an_inner_address_is_refused(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    mock_upstream.reply(PAGE_URL, status=302, headers={"Location": "http://127.0.0.1:6379/"})

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.reason.startswith("refused: host 127.0.0.1 is a loopback address")
    assert requested(mock_upstream) == [PAGE_URL]


async def test_an_upstream_on_loopback_may_link_to_loopback(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    url = "http://127.0.0.2:8081/files/f.metadata"
    mock_upstream.reply(url, body=b"metadata")

    client = make_client(upstream="http://127.0.0.1:8080/simple/")

    assert await client.small_file(url, 100) == b"metadata"


# -- timeouts ---------------------------------------------------------------------------------


async def test_a_download_has_its_own_overall_deadline(
    make_client: MakeClient, mock_upstream: Upstream
) -> None:
    url = "http://upstream.test/files/f.whl"
    mock_upstream.reply(url, body=b"wheel")

    async with make_client(download_timeout=900.0, read_timeout=20.0).file(url):
        pass

    timeout = mock_upstream.requests[("GET", URL(url))][0].kwargs["timeout"]
    # What was left of download-timeout when the request went out, however long that took:
    # still far above total-timeout, the deadline of a page.
    page_deadline = RepositoryConfig(name="pypi", upstream=BASE).total_timeout
    assert page_deadline < timeout.total <= 900.0
    assert timeout.sock_read == 20.0


async def test_the_session_and_the_client_judge_by_one_host_policy(
    upstream: LocalUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upstream is a name on loopback: once the session's resolver has looked it up, a
    # file URL with a loopback IP literal (checked by the client, not by a resolver) is
    # allowed on what that lookup learned, without resolving the upstream a second time.
    resolver = fake_dns.install(monkeypatch, {"upstream.example": ["127.0.0.1"]})
    upstream.add(UpstreamProject("demo", [UpstreamFile("demo-1.0.tar.gz", b"demo")]))
    base = f"http://upstream.example:{upstream.port}/simple/"
    client = UpstreamClient.open(RepositoryConfig(name="pypi", upstream=base))
    try:
        fetched = await client.project_page("demo", None)
        async with client.file(f"{upstream.url}../files/demo/demo-1.0.tar.gz") as body:
            received = b"".join([chunk async for chunk in body.chunks])
    finally:
        await client.close()

    assert isinstance(fetched, Fetched)
    assert received == b"demo"
    assert resolver.asked == ["upstream.example"]
