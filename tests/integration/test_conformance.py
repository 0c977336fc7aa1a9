"""The Simple Repository API as clients see it, through a real server, for an HTML-only
upstream and a JSON upstream alike (SPEC-CHECKLIST: names, negotiation, HTML, JSON)."""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pypi_simple
import pytest

from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import RunningCache, StartCache, repository
from tests.support.http import JSON_V1, Answer
from tests.support.http import get as http_get

HTML_V1 = "application/vnd.pypi.simple.v1+html"
PIP_ACCEPT = f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.01"

METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.1\n"
DEMO_FILES = [
    UpstreamFile("demo-1.0.tar.gz", b"sdist one", requires_python=">=3.8,<4"),
    UpstreamFile(
        "demo-1.1-py3-none-any.whl",
        b"wheel one-one",
        requires_python=">=3.9",
        metadata=METADATA,
        upload_time="2024-05-06T07:08:09.123456Z",
        provenance="https://upstream.example/provenance/demo-1.1",
    ),
    UpstreamFile("demo-1.2.tar.gz", b"yanked sdist", yanked="broken build"),
    UpstreamFile("demo-1.3.tar.gz", b"yanked no reason", yanked=True),
]


@pytest.fixture(params=["json", "html"])
def upstream_format(request: pytest.FixtureRequest) -> str:
    format_: str = request.param
    return format_


@pytest.fixture
async def conformance_cache(
    start_cache: StartCache, upstream: LocalUpstream, upstream_format: str
) -> AsyncIterator[RunningCache]:
    upstream.add(UpstreamProject("Demo", DEMO_FILES, format=upstream_format, serial=42))
    upstream.add(UpstreamProject("Foo.Bar_baz", [UpstreamFile("foo_bar_baz-0.1.tar.gz")]))
    upstream.add(UpstreamProject("a-b", [UpstreamFile("a_b-3.0.tar.gz")]))
    yield await start_cache()


async def get(
    http: aiohttp.ClientSession, url: str, accept: str | None = None, **headers: str
) -> Answer:
    """The answer itself, redirects not followed; no Accept unless asked."""
    return await http_get(http, url, accept, headers, follow_redirects=False)


# -- names and URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "canonical"),
    [("Foo.Bar_baz", "foo-bar-baz"), ("a--b", "a-b"), ("DEMO", "demo"), ("a_b", "a-b")],
)
async def test_non_normalized_name_redirects_permanently_with_query(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, asked: str, canonical: str
) -> None:
    status, headers, _ = await get(
        http, f"{conformance_cache.url}/pypi/simple/{asked}/?format={JSON_V1}"
    )
    assert status == 301
    assert headers["Location"] == f"/pypi/simple/{canonical}/?format={JSON_V1}"


async def test_redirect_of_forced_format_path_keeps_the_format(
    conformance_cache: RunningCache, http: aiohttp.ClientSession
) -> None:
    status, headers, _ = await get(http, f"{conformance_cache.url}/pypi/simple/v1+json/Demo/")
    assert status == 301
    assert headers["Location"] == "/pypi/simple/v1+json/demo/"


@pytest.mark.parametrize("path", ["/pypi/simple/demo", "/pypi/simple"])
async def test_missing_trailing_slash_redirects_to_the_slashed_url(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, path: str
) -> None:
    status, headers, _ = await get(http, f"{conformance_cache.url}{path}?x=1")
    assert status == 308
    assert headers["Location"] == f"{path}/?x=1"


async def test_unknown_project_is_404_not_5xx(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, upstream: LocalUpstream
) -> None:
    status, _, body = await get(http, f"{conformance_cache.url}/pypi/simple/no-such-project/")
    assert status == 404
    assert b"no-such-project" in body
    assert upstream.hits["/simple/no-such-project/"] == 1


@pytest.mark.parametrize("name", ["..", "-leading", "trailing-", "sp%20ace", "%2e%2e"])
async def test_invalid_project_names_are_404_without_asking_upstream(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, upstream: LocalUpstream, name: str
) -> None:
    status, _, _ = await get(http, f"{conformance_cache.url}/pypi/simple/{name}/")
    assert status == 404
    assert not [path for path in upstream.hits if path != "/simple/"]


async def test_unknown_repository_is_404(
    conformance_cache: RunningCache, http: aiohttp.ClientSession
) -> None:
    for path in ("/nope/simple/", "/nope/simple/demo/"):
        status, _, _ = await get(http, f"{conformance_cache.url}{path}")
        assert status == 404


async def test_project_list_in_both_formats(
    conformance_cache: RunningCache, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await get(http, f"{conformance_cache.url}/pypi/simple/", "text/html")
    assert status == 200
    assert headers["Content-Type"].split(";")[0] == "text/html"
    anchors = re.findall(r'<a href="([^"]+)">([^<]+)</a>', body.decode())
    assert anchors == [
        ("/pypi/simple/demo/", "Demo"),
        ("/pypi/simple/foo-bar-baz/", "Foo.Bar_baz"),
        ("/pypi/simple/a-b/", "a-b"),
    ]
    status, headers, body = await get(http, f"{conformance_cache.url}/pypi/simple/", PIP_ACCEPT)
    assert status == 200
    assert headers["Content-Type"] == JSON_V1
    listing = json.loads(body)
    assert listing["meta"]["api-version"].startswith("1.")
    assert [p["name"] for p in listing["projects"]] == ["Demo", "Foo.Bar_baz", "a-b"]


# -- content negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PIP_ACCEPT, JSON_V1),
        (UV_ACCEPT, JSON_V1),
        (None, "text/html"),
        ("*/*", "text/html"),
        ("application/*", HTML_V1),
        (f"{JSON_V1};q=0.5, text/html;q=0.5", "text/html"),
        (f"{JSON_V1};q=0, text/html;q=0.1", "text/html"),
        ("application/vnd.pypi.simple.latest+json", JSON_V1),
        ("application/vnd.pypi.simple.latest+html", HTML_V1),
        (HTML_V1, HTML_V1),
    ],
)
async def test_accept_header_picks_the_representation(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, accept: str | None, expected: str
) -> None:
    status, headers, _ = await get(http, f"{conformance_cache.url}/pypi/simple/demo/", accept)
    assert status == 200
    assert headers["Content-Type"].split(";")[0] == expected
    assert "Accept" in headers["Vary"]


@pytest.mark.parametrize("accept", ["application/json", f"{JSON_V1};q=0, text/html;q=0"])
async def test_nothing_acceptable_is_406(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, accept: str
) -> None:
    status, _, _ = await get(http, f"{conformance_cache.url}/pypi/simple/demo/", accept)
    assert status == 406


async def test_format_query_overrides_accept(
    conformance_cache: RunningCache, http: aiohttp.ClientSession
) -> None:
    url = f"{conformance_cache.url}/pypi/simple/demo/?format={JSON_V1}"
    status, headers, _ = await get(http, url, "text/html")
    assert (status, headers["Content-Type"]) == (200, JSON_V1)
    status, _, _ = await get(
        http, f"{conformance_cache.url}/pypi/simple/demo/?format=application/json"
    )
    assert status == 406


@pytest.mark.parametrize(("variant", "expected"), [("v1+json", JSON_V1), ("v1+html", HTML_V1)])
async def test_path_variants_force_the_format(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, variant: str, expected: str
) -> None:
    for path in (f"/pypi/simple/{variant}/demo/", f"/pypi/simple/{variant}/"):
        status, headers, _ = await get(http, f"{conformance_cache.url}{path}", "text/html")
        assert status == 200
        assert headers["Content-Type"].split(";")[0] == expected


async def test_etag_per_representation_and_304(
    conformance_cache: RunningCache, http: aiohttp.ClientSession
) -> None:
    url = f"{conformance_cache.url}/pypi/simple/demo/"
    _, json_headers, _ = await get(http, url, JSON_V1)
    _, html_headers, _ = await get(http, url, "text/html")
    assert json_headers["ETag"] != html_headers["ETag"]
    for headers in (json_headers, html_headers):
        assert headers["Date"]
        assert headers["X-PyPI-Last-Serial"] == "42"
    status, headers, body = await get(http, url, JSON_V1, **{"If-None-Match": json_headers["ETag"]})
    assert (status, body) == (304, b"")
    assert headers["ETag"] == json_headers["ETag"]
    assert "Accept" in headers["Vary"]
    # The JSON validator does not validate the HTML representation.
    status, _, _ = await get(http, url, "text/html", **{"If-None-Match": json_headers["ETag"]})
    assert status == 200


# -- page content ------------------------------------------------------------------------------


async def test_html_page_follows_pep_503(
    conformance_cache: RunningCache, http: aiohttp.ClientSession
) -> None:
    status, _, raw = await get(http, f"{conformance_cache.url}/pypi/simple/demo/", "text/html")
    assert status == 200
    page = raw.decode()
    assert re.search(r'<meta name="pypi:repository-version" content="1\.\d+">', page)
    anchors = re.findall(r"<a ([^>]*)>([^<]*)</a>", page)
    assert [text for _, text in anchors] == [f.filename for f in DEMO_FILES]
    by_name = {text: attributes for attributes, text in anchors}
    for file in DEMO_FILES:
        attributes = by_name[file.filename]
        href = re.search(r'href="([^"]+)"', attributes)
        assert href is not None
        assert href.group(1) == f"/pypi/files/demo/{file.filename}#sha256={file.sha256}"
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in by_name["demo-1.0.tar.gz"]
    assert 'data-yanked="broken build"' in by_name["demo-1.2.tar.gz"]
    assert 'data-yanked=""' in by_name["demo-1.3.tar.gz"]
    assert "data-yanked" not in by_name["demo-1.0.tar.gz"]
    metadata_hash = hashlib.sha256(METADATA).hexdigest()
    wheel = by_name["demo-1.1-py3-none-any.whl"]
    assert f'data-core-metadata="sha256={metadata_hash}"' in wheel
    assert f'data-dist-info-metadata="sha256={metadata_hash}"' in wheel
    assert 'data-provenance="https://upstream.example/provenance/demo-1.1"' in wheel
    assert "sha1" not in page
    assert '="false"' not in page
    assert "data-core-metadata" not in by_name["demo-1.0.tar.gz"]


async def test_json_page_follows_pep_691_and_700(
    conformance_cache: RunningCache, http: aiohttp.ClientSession, upstream_format: str
) -> None:
    status, _, raw = await get(http, f"{conformance_cache.url}/pypi/simple/demo/", JSON_V1)
    assert status == 200
    page = json.loads(raw)
    assert page["name"] == "demo"
    assert set(page["versions"]) == {"1.0", "1.1", "1.2", "1.3"}
    files = {f["filename"]: f for f in page["files"]}
    assert list(files) == [f.filename for f in DEMO_FILES]
    metadata_hash = hashlib.sha256(METADATA).hexdigest()
    for file in DEMO_FILES:
        entry = files[file.filename]
        assert entry["url"] == f"/pypi/files/demo/{file.filename}"
        assert entry["hashes"] == {"sha256": file.sha256}
        assert entry["requires-python"] == file.requires_python
        assert entry["core-metadata"] == entry["dist-info-metadata"]
        expected_metadata = {"sha256": metadata_hash} if file.metadata else False
        assert entry["core-metadata"] == expected_metadata
        assert entry["yanked"] == file.yanked
    wheel = files["demo-1.1-py3-none-any.whl"]
    if upstream_format == "json":
        # Only a JSON upstream can tell sizes and upload times (PEP 700): pass them through.
        assert page["meta"]["api-version"] == "1.4"
        assert [files[f.filename]["size"] for f in DEMO_FILES] == [
            len(f.content) for f in DEMO_FILES
        ]
        assert wheel["upload-time"] == "2024-05-06T07:08:09.123456Z"
    else:
        # No sizes known: claiming 1.1 would promise a key we cannot give.
        assert page["meta"]["api-version"] == "1.0"
        assert all("size" not in entry for entry in files.values())
    assert wheel["provenance"] == "https://upstream.example/provenance/demo-1.1"


async def test_html_and_json_agree_and_round_trip_through_pypi_simple(
    conformance_cache: RunningCache, http: aiohttp.ClientSession
) -> None:
    url = f"{conformance_cache.url}/pypi/simple/demo/"
    _, _, html_body = await get(http, url, "text/html")
    _, _, json_body = await get(http, url, JSON_V1)
    from_html = pypi_simple.ProjectPage.from_html("demo", html_body.decode(), base_url=url)
    from_json = pypi_simple.ProjectPage.from_json_data(json.loads(json_body), base_url=url)
    for parsed in (from_html, from_json):
        packages = {p.filename: p for p in parsed.packages}
        assert list(packages) == [f.filename for f in DEMO_FILES]
        for file in DEMO_FILES:
            package = packages[file.filename]
            assert package.url == f"{conformance_cache.url}/pypi/files/demo/{file.filename}"
            assert package.digests == {"sha256": file.sha256}
            assert package.requires_python == file.requires_python
            assert package.is_yanked == (file.yanked is not False)
            if isinstance(file.yanked, str):
                assert package.yanked_reason == file.yanked
            assert bool(package.has_metadata) == (file.metadata is not None)
        wheel = packages["demo-1.1-py3-none-any.whl"]
        assert wheel.metadata_digests == {"sha256": hashlib.sha256(METADATA).hexdigest()}
        assert wheel.version == "1.1"


async def test_project_status_passes_through(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    for format_ in ("json", "html"):
        upstream.add(
            UpstreamProject(
                f"old-{format_}",
                [UpstreamFile(f"old_{format_}-1.0.tar.gz")],
                format=format_,
                status="archived",
                status_reason="moved <elsewhere> & gone",
            )
        )
    cache = await start_cache()
    for format_ in ("json", "html"):
        url = f"{cache.url}/pypi/simple/old-{format_}/"
        _, _, body = await get(http, url, JSON_V1)
        assert json.loads(body)["project-status"] == {
            "status": "archived",
            "reason": "moved <elsewhere> & gone",
        }
        _, _, body = await get(http, url, "text/html")
        assert '<meta name="pypi:project-status" content="archived">' in body.decode()
        assert "moved &lt;elsewhere&gt; &amp; gone" in body.decode()


async def test_hostile_strings_come_out_escaped_and_intact(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    hostile = UpstreamFile(
        'evil-1.0-"<script>alert(1)<script>&x.tar.gz',
        b"payload",
        requires_python='>=3.8,<4,!="<script>"&',
        yanked='"><script>alert("yank")</script>&amp;',
    )
    for format_ in ("json", "html"):
        upstream.add(UpstreamProject(f"evil-{format_}", [hostile], format=format_))
    cache = await start_cache()
    for format_ in ("json", "html"):
        url = f"{cache.url}/pypi/simple/evil-{format_}/"
        _, _, html_body = await get(http, url, "text/html")
        page = html_body.decode()
        assert "<script>" not in page
        assert html.escape(hostile.filename) in page
        parsed = pypi_simple.ProjectPage.from_html(f"evil-{format_}", page, base_url=url)
        (package,) = parsed.packages
        assert package.filename == hostile.filename
        assert package.requires_python == hostile.requires_python
        assert package.yanked_reason == hostile.yanked
        _, _, json_body = await get(http, url, JSON_V1)
        (entry,) = json.loads(json_body)["files"]
        assert entry["filename"] == hostile.filename
        assert entry["yanked"] == hostile.yanked
        assert entry["requires-python"] == hostile.requires_python


async def test_base_url_prefixes_every_emitted_link(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.add(UpstreamProject("demo", DEMO_FILES[:1]))
    cache = await start_cache(repository("pypi", upstream), base_url="https://cache.example/m")
    _, _, body = await get(http, f"{cache.url}/pypi/simple/demo/", JSON_V1)
    (entry,) = json.loads(body)["files"]
    assert entry["url"] == "https://cache.example/m/pypi/files/demo/demo-1.0.tar.gz"
    status, headers, _ = await get(http, f"{cache.url}/pypi/simple/Demo/")
    assert (status, headers["Location"]) == (301, "https://cache.example/m/pypi/simple/demo/")


async def test_repositories_are_separate_namespaces(
    start_cache: StartCache, upstream: LocalUpstream, http: aiohttp.ClientSession
) -> None:
    other = LocalUpstream()
    await other.start()
    try:
        upstream.add(UpstreamProject("demo", [UpstreamFile("demo-1.0.tar.gz")]))
        other.add(UpstreamProject("demo", [UpstreamFile("demo-9.9.tar.gz")]))
        cache = await start_cache(repository("one", upstream), repository("two", other))
        for name, expected in (("one", "demo-1.0.tar.gz"), ("two", "demo-9.9.tar.gz")):
            _, _, body = await get(http, f"{cache.url}/{name}/simple/demo/", JSON_V1)
            (entry,) = json.loads(body)["files"]
            assert entry["filename"] == expected
            assert entry["url"] == f"/{name}/files/demo/{expected}"
    finally:
        await other.stop()
