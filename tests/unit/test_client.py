"""UpstreamClient edge cases, with aioresponses standing in for the upstream."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from mypypi2.config import RepositoryConfig
from mypypi2.errors import MalformedPage, UpstreamError, UpstreamNotFound, UpstreamTimeout
from mypypi2.models import ProjectPage
from mypypi2.queries import Validators
from mypypi2.upstream import client as client_module
from mypypi2.upstream.client import ACCEPT, Fetched, NotModified, UpstreamClient
from mypypi2.upstream.parse import parse_project_page

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
LIST_BODY = json.dumps({"meta": {"api-version": "1.0"}, "projects": [{"name": "demo"}]}).encode()

MakeClient = Callable[..., UpstreamClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Clients on their real session (as app.py builds them); options go to RepositoryConfig."""
    sessions: list[aiohttp.ClientSession] = []

    def make(**options: Any) -> UpstreamClient:
        repository = RepositoryConfig(name="pypi", upstream=BASE, **options)
        session = UpstreamClient.open_session(repository)
        sessions.append(session)
        return UpstreamClient(repository, session)

    yield make
    for session in sessions:
        await session.close()


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


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    mocked = Upstream()
    with mocked:
        yield mocked


def sent_headers(upstream: Upstream, url: str = PAGE_URL, index: int = 0) -> dict[str, str]:
    """The headers of the `index`th GET of `url`, as aioresponses recorded them."""
    call = upstream.requests[("GET", URL(url))][index]
    return {key.lower(): value for key, value in dict(call.kwargs["headers"]).items()}


async def fetch_page(
    client: UpstreamClient, known: Validators | None = None
) -> Fetched[ProjectPage]:
    result = await client.project_page("demo", known)
    assert isinstance(result, Fetched)
    return result


# -- requests ---------------------------------------------------------------------------------


async def test_first_request_asks_json_first_without_validators(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    fetched = await fetch_page(make_client())

    headers = sent_headers(upstream)
    assert headers["accept"] == ACCEPT
    assert ACCEPT.startswith(JSON_V1)
    assert "if-none-match" not in headers
    assert "if-modified-since" not in headers
    assert [f.filename for f in fetched.model.files] == ["demo-1.0.tar.gz"]
    assert fetched.model.files[0].url == "http://upstream.test/files/demo/demo-1.0.tar.gz"


async def test_revalidation_sends_known_validators(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(PAGE_URL, status=304)
    known = Validators('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", 41)

    await make_client().project_page("demo", known)

    headers = sent_headers(upstream)
    assert headers["if-none-match"] == '"abc"'
    assert headers["if-modified-since"] == "Mon, 01 Jan 2024 00:00:00 GMT"


async def test_extra_headers_are_sent(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    client = make_client(headers={"X-Token": "t0ken", "User-Agent": "ci"})

    await fetch_page(client)

    headers = sent_headers(upstream)
    assert headers["x-token"] == "t0ken"
    assert headers["user-agent"] == "ci"
    assert headers["accept"] == ACCEPT


async def test_basic_auth_and_extra_headers_are_sent(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    client = make_client(username="reader", password="s3cret", headers={"X-Token": "t0ken"})

    await fetch_page(client)

    headers = sent_headers(upstream)
    assert headers["authorization"] == "Basic " + base64.b64encode(b"reader:s3cret").decode()
    assert headers["x-token"] == "t0ken"
    assert headers["accept"] == ACCEPT


async def test_basic_auth_without_password_sends_an_empty_one(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(BASE, body=LIST_BODY, content_type=JSON_V1)

    await make_client(username="token-only").project_list(None)

    headers = sent_headers(upstream, BASE)
    assert headers["authorization"] == "Basic " + base64.b64encode(b"token-only:").decode()


# -- validators -------------------------------------------------------------------------------


async def test_304_without_headers_keeps_known_validators(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(PAGE_URL, status=304)
    known = Validators('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", 41)

    result = await make_client().project_page("demo", known)

    assert result == NotModified(known)


async def test_304_with_new_headers_updates_only_those(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(PAGE_URL, status=304, headers={"ETag": '"def"', "X-PyPI-Last-Serial": "42"})
    known = Validators('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", 41)

    result = await make_client().project_page("demo", known)

    assert result == NotModified(Validators('"def"', "Mon, 01 Jan 2024 00:00:00 GMT", 42))


async def test_304_for_the_project_list(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.reply(BASE, status=304)
    known = Validators(etag='"list"')

    assert await make_client().project_list(known) == NotModified(known)


async def test_200_validators_and_last_serial_header(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(
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
    make_client: MakeClient, upstream: Upstream, header: str | None
) -> None:
    headers = {} if header is None else {"X-PyPI-Last-Serial": header}
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1, headers=headers)

    fetched = await fetch_page(make_client())

    assert fetched.validators.last_serial == 7  # meta._last-serial
    assert fetched.validators.etag is None


async def test_200_does_not_inherit_known_validators(
    make_client: MakeClient, upstream: Upstream
) -> None:
    # A full answer without an ETag has none: re-sending the old one would be wrong.
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    fetched = await fetch_page(make_client(), Validators('"old"', "yesterday", 3))

    assert fetched.validators.etag is None
    assert fetched.validators.last_modified is None


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
async def test_404_and_410_are_not_found(
    make_client: MakeClient, upstream: Upstream, status: int
) -> None:
    upstream.reply(PAGE_URL, status=status, body=b"no such project")

    with pytest.raises(UpstreamNotFound) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.url == PAGE_URL


async def test_404_for_the_project_list_is_not_found(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(BASE, status=404)

    with pytest.raises(UpstreamNotFound):
        await make_client().project_list(None)


@pytest.mark.parametrize("status", [500, 502, 503, 403, 401, 429])
async def test_other_statuses_are_upstream_errors(
    make_client: MakeClient, upstream: Upstream, status: int
) -> None:
    upstream.reply(PAGE_URL, status=status)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert type(raised.value) is UpstreamError
    assert f"HTTP {status}" in raised.value.reason


async def test_304_without_a_conditional_request_is_an_error(
    make_client: MakeClient, upstream: Upstream
) -> None:
    # We asked for a page; "not modified" of nothing is not an answer.
    upstream.reply(PAGE_URL, status=304)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert "HTTP 304" in raised.value.reason


@pytest.mark.parametrize(
    "exception",
    [TimeoutError(), aiohttp.ServerTimeoutError("read"), aiohttp.ConnectionTimeoutError()],
    ids=["timeout", "server-timeout", "connect-timeout"],
)
async def test_timeouts_are_upstream_timeouts(
    make_client: MakeClient, upstream: Upstream, exception: Exception
) -> None:
    upstream.reply(PAGE_URL, exception=exception)

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
    make_client: MakeClient, upstream: Upstream, exception: Exception
) -> None:
    upstream.reply(PAGE_URL, exception=exception)

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert not isinstance(raised.value, UpstreamTimeout | UpstreamNotFound)
    assert raised.value.__cause__ is exception
    assert type(exception).__name__ in raised.value.reason


async def test_content_length_over_the_limit_is_rejected_before_reading(
    make_client: MakeClient, upstream: Upstream
) -> None:
    # A small, valid body behind a huge announced length: only the header can fail it.
    upstream.reply(
        PAGE_URL, body=PAGE_BODY, content_type=JSON_V1, headers={"Content-Length": "5000000"}
    )

    with pytest.raises(UpstreamError) as raised:
        await make_client(max_page_bytes=len(PAGE_BODY)).project_page("demo", None)

    assert raised.value.reason == f"page of 5000000 bytes is over {len(PAGE_BODY)}"


async def test_body_over_the_limit_without_content_length_is_rejected(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)

    with pytest.raises(UpstreamError) as raised:
        await make_client(max_page_bytes=len(PAGE_BODY) - 1).project_page("demo", None)

    assert raised.value.reason == f"page is over the limit of {len(PAGE_BODY) - 1} bytes"


async def test_body_exactly_at_the_limit_is_accepted(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(
        PAGE_URL,
        body=PAGE_BODY,
        content_type=JSON_V1,
        headers={"Content-Length": str(len(PAGE_BODY))},
    )

    fetched = await fetch_page(make_client(max_page_bytes=len(PAGE_BODY)))

    assert fetched.model.name == "demo"


async def test_project_list_has_its_own_limit(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.reply(BASE, body=LIST_BODY, content_type=JSON_V1)
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    client = make_client(max_page_bytes=10_000_000, max_list_bytes=10)

    with pytest.raises(UpstreamError, match="over the limit of 10 bytes"):
        await client.project_list(None)
    await fetch_page(client)


async def test_malformed_page_is_an_upstream_error_chained_to_the_parse_error(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.reply(PAGE_URL, body=b"<html><a>no href</a></html>", content_type="text/html")

    with pytest.raises(UpstreamError) as raised:
        await make_client().project_page("demo", None)

    assert raised.value.reason == "malformed page: anchor without href"
    assert isinstance(raised.value.__cause__, MalformedPage)


async def test_large_page_is_parsed_off_the_event_loop_with_the_same_result(
    make_client: MakeClient, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioresponses cannot feed a body of the real threshold's size; lower the threshold.
    threads: list[threading.Thread] = []

    def parse(*args: Any) -> ProjectPage:
        threads.append(threading.current_thread())
        return parse_project_page(*args)

    monkeypatch.setattr(client_module, "_PARSE_IN_THREAD_ABOVE", len(PAGE_BODY))
    monkeypatch.setattr(client_module, "parse_project_page", parse)
    upstream.reply(PAGE_URL, body=PAGE_BODY, content_type=JSON_V1)
    upstream.reply(PAGE_URL, body=PAGE_BODY + b" ", content_type=JSON_V1)
    client = make_client()

    small = await fetch_page(client)
    large = await fetch_page(client)

    assert threads[0] is threading.main_thread()
    assert threads[1] is not threading.main_thread()
    assert large == small
