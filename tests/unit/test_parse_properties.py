"""Whatever an upstream sends, the parsers return a model everything downstream can take
(store in PostgreSQL, render, serve) or raise MalformedPage: never anything else."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import re
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mypypi2 import names, render
from mypypi2.errors import MalformedPage
from mypypi2.models import ALLOWED_HASHES, ProjectList, ProjectPage
from mypypi2.upstream.parse import (
    ProjectListParser,
    parse_project_list,
    parse_project_page,
)
from mypypi2.upstream.parse_rules import Resolver, serial_from

PAGE_URL = "https://upstream.example/simple/demo-pkg/"
JSON_CT = "application/vnd.pypi.simple.v1+json"
HTML_CT = "text/html"
BIGINT = 2**63
HEX = re.compile(r"[0-9a-f]+")

# The machine is shared: enough examples to find the usual mistakes, not a fuzzing campaign.
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _quiet_drop_log() -> Any:
    # Broken entries are logged by design; thousands of examples would flood the output.
    logging.getLogger("mypypi2.upstream").setLevel(logging.ERROR)
    yield
    logging.getLogger("mypypi2.upstream").setLevel(logging.NOTSET)


def _text_is_storable(value: str) -> None:
    value.encode("utf-8")  # no lone surrogate: PostgreSQL text is UTF-8
    assert "\x00" not in value


def check_page(page: ProjectPage) -> None:
    """What the store and the renderers rely on."""
    assert page.name == "demo-pkg"
    assert page.last_serial is None or 0 <= page.last_serial < BIGINT
    seen: set[str] = set()
    for file in page.files:
        assert names.is_safe_filename(file.filename)
        assert len(file.filename.encode()) <= 255
        assert file.filename not in seen
        seen.add(file.filename)
        assert urlsplit(file.url).scheme in ("http", "https") and urlsplit(file.url).netloc
        assert "#" not in file.url
        for algo, digest in [*file.hashes.items(), *(file.core_metadata or {}).items()]:
            assert algo in ALLOWED_HASHES and HEX.fullmatch(digest)
        assert file.size is None or (type(file.size) is int and 0 <= file.size < BIGINT)
        assert file.upload_time is None or file.upload_time.tzinfo is dt.UTC
        assert file.gpg_sig in (None, True, False)
        assert file.provenance is None or file.provenance.startswith("https://")
        for text in (file.filename, file.url, file.requires_python, file.yanked, file.provenance):
            if text is not None:
                assert type(text) is str
                _text_is_storable(text)
    for text in (*page.versions, page.status, page.status_reason):
        if text is not None:
            assert type(text) is str
            _text_is_storable(text)
    render.project_html(page, "/pypi/files/demo-pkg/")
    render.project_json(page, "/pypi/files/demo-pkg/")


def check_list(listing: ProjectList) -> None:
    assert len(set(listing.names)) == len(listing.names)
    assert listing.last_serial is None or 0 <= listing.last_serial < BIGINT
    for name in listing.names:
        assert type(name) is str and name
        _text_is_storable(name)
    render.index_html(listing, "/pypi/simple/")
    render.index_json(listing, "/pypi/simple/")


def page_or_malformed(body: bytes, content_type: str) -> ProjectPage | None:
    try:
        page = parse_project_page(body, content_type, PAGE_URL, "demo-pkg")
    except MalformedPage:
        return None
    check_page(page)
    return page


# --- strategies ------------------------------------------------------------------------------

# Strings with what breaks naive code: lone surrogates (JSON can escape them), NUL, markup.
odd_text = st.text(
    alphabet=st.characters(codec=None)
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    | st.sampled_from(["\x00", "<", ">", "&", '"', "/", "\\", ".", "²", "#"]),
    max_size=20,
)
urlish = st.lists(
    st.sampled_from(
        [
            "https://files.example/",
            "http://other.example:8080/",
            "//cdn.example/",
            "ftp://x/",
            "javascript:",
            "../",
            "./",
            "/",
            "a",
            "demo_pkg-1.0.tar.gz",
            "x.whl",
            "%2F",
            "%00",
            "%E9",
            "?q=1",
            "#sha256=" + "ab" * 32,
            "#md5=00ff",
            "&",
            "[",
            ":",
            "@",
            " ",
            "\t",
            "é",
            ".",
            "..",
            "_",
        ]
    ),
    max_size=8,
).map("".join)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=True),  # inf is written as 1e400
    odd_text,
    urlish,
    st.sampled_from(["2024-01-02T03:04:05Z", "9999-12-31T23:59:59-01:00", "26356948", "1.1"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["sha256", "md5", "sha1", "name", "x"]) | odd_text, inner, max_size=4
        )
    ),
    max_leaves=12,
)
FILE_KEYS = [
    "filename",
    "url",
    "hashes",
    "requires-python",
    "core-metadata",
    "dist-info-metadata",
    "yanked",
    "size",
    "upload-time",
    "provenance",
    "gpg-sig",
    "_private",
]
file_entry = st.one_of(
    st.dictionaries(st.sampled_from(FILE_KEYS), json_value, max_size=len(FILE_KEYS)),
    st.fixed_dictionaries(
        {"filename": odd_text | st.sampled_from(["demo_pkg-1.0.tar.gz"]), "url": urlish},
        optional={k: json_value for k in FILE_KEYS[2:]},
    ),
    json_value,
)
page_doc = st.fixed_dictionaries(
    {"files": st.lists(file_entry, max_size=6) | json_value},
    optional={
        "meta": st.fixed_dictionaries(
            {},
            optional={
                "api-version": st.sampled_from(["1.0", "1.4", "2.0", "", "v1"]) | json_value,
                "_last-serial": json_value,
            },
        )
        | json_value,
        "versions": st.lists(json_value, max_size=4) | json_value,
        "project-status": st.dictionaries(st.sampled_from(["status", "reason"]), json_value)
        | json_value,
        "_last-serial": json_value,
        "name": json_value,
    },
)


def _encode(doc: Any) -> bytes:
    # Infinity is not JSON; 1e400 is, and no float can hold it.
    return json.dumps(doc, ensure_ascii=True).replace("Infinity", "1e400").encode()


html_fragment = st.sampled_from(
    [
        "<a ",
        "<A HREF=",
        "<a href='",
        '<a href="',
        "href=",
        "data-yanked",
        "data-requires-python='&gt;=3",
        'data-core-metadata="sha256=' + "ab" * 32 + '"',
        "data-dist-info-metadata=true",
        ">",
        "/>",
        "</a>",
        "</A >",
        '"',
        "'",
        "=",
        " ",
        "\n",
        "<!--",
        "-->",
        "<!DOCTYPE html>",
        "<![CDATA[",
        "]]>",
        "<?x",
        "<script>",
        "</script>",
        "<style>",
        "</style>",
        '<base href="',
        '<meta name="pypi:repository-version" content="',
        "1.1",
        "2.0",
        '">',
        "&amp;",
        "&gt;",
        "&#0;",
        "&#xd800;",
        "&",
        "<",
        "<b>",
        "</",
        "<br/>",
    ]
)
html_body = st.lists(html_fragment | urlish | odd_text, max_size=30).map("".join)


# --- project pages ---------------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=300), st.sampled_from([JSON_CT, HTML_CT]))
def test_random_bytes_give_a_page_or_malformed(body: bytes, content_type: str) -> None:
    page_or_malformed(body, content_type)


@PROPERTY
@given(page_doc)
def test_structured_but_wrong_json_gives_a_page_or_malformed(doc: dict[str, Any]) -> None:
    page_or_malformed(_encode(doc), JSON_CT)


@PROPERTY
@given(st.lists(file_entry, max_size=6), st.sampled_from([None, "7", 2**64]))
def test_wrong_entries_never_cost_the_page(files: list[Any], serial: Any) -> None:
    good = {"filename": "demo_pkg-9.0.tar.gz", "url": "demo_pkg-9.0.tar.gz", "size": 3}
    doc = {"meta": {"api-version": "1.1", "_last-serial": serial}, "files": [*files, good]}
    page = page_or_malformed(_encode(doc), JSON_CT)
    assert page is not None
    assert "demo_pkg-9.0.tar.gz" in [f.filename for f in page.files]


@PROPERTY
@given(html_body)
def test_structured_but_wrong_html_gives_a_page_or_malformed(text: str) -> None:
    page_or_malformed(text.encode("utf-8", "surrogatepass"), HTML_CT)
    page_or_malformed(("<html>" + text).encode("utf-8", "replace"), HTML_CT)


@PROPERTY
@given(st.text(st.sampled_from("\x00a-_.é"), max_size=8).filter(lambda text: "\x00" in text))
def test_html_reads_nul_as_the_replacement_character(piece: str) -> None:
    # As an HTML tokenizer does; PostgreSQL text could not hold it anyway.
    def body(text: str) -> bytes:
        return (
            f'<meta name="pypi:project-status" content="{text}">'
            f'<a href="demo_pkg-1.0{text}.tar.gz" data-yanked="{text}"'
            f' data-requires-python="{text}">{text}</a>'
        ).encode()

    as_sent = page_or_malformed(body(piece), HTML_CT)
    assert as_sent is not None and as_sent.files
    assert as_sent == page_or_malformed(body(piece.replace("\x00", "\ufffd")), HTML_CT)


@PROPERTY
@given(
    st.lists(urlish, min_size=1, max_size=8),
    st.sampled_from([PAGE_URL, "https://u.example/a/./b/../c", "http://u.example"]),
)
def test_resolver_agrees_with_urljoin(hrefs: list[str], base: str) -> None:
    resolver = Resolver(base)  # one per page: its directory cache must not change results
    for href in hrefs:
        try:
            url, fragment = urldefrag(urljoin(base, href))
            parts = urlsplit(url)
            expected = (
                (url, fragment) if parts.scheme in ("http", "https") and parts.netloc else None
            )
        except ValueError:
            expected = None
        assert resolver.resolve(href) == expected, href


@PROPERTY
@given(st.integers() | st.text(max_size=25) | st.floats() | st.booleans() | st.none())
def test_serial_is_a_bigint_or_none(value: Any) -> None:
    serial = serial_from(value)
    assert serial is None or (type(serial) is int and 0 <= serial < BIGINT)
    if isinstance(value, str) and re.fullmatch("[0-9]{1,18}", value):
        assert serial == int(value)


# --- crafted 1 MB bodies: each parses or is refused, in linear time (timing: bench/report) ---

MB = 1 << 20
CRAFTED = {
    "lone-lt": b"<html>" + b"< " * (MB // 2),
    "many-anchors": b"<html>" + b"<a href=x>" * (MB // 10),
    "many-distinct-relative": b"<html>" + b"".join(b"<a href=%d.whl>" % n for n in range(MB // 16)),
    "many-attributes": b"<html><a " + b"a " * (MB // 2) + b">x</a>",
    "unclosed-anchors": b"<html>" + b"<a>x" * (MB // 4),
    "empty-comments": b"<html>" + b"<!---->" * (MB // 7),
    "declarations": b"<html>" + b"<!x>" * (MB // 4),
    "nested-tags": b"<html><a href=x>" + b"<b>" * (MB // 3) + b"</a>",
    "unterminated-quote": b"<html><a href='" + b"x" * MB,
    "unterminated-comment": b"<html><!--" + b"<a href=x>" * (MB // 10),
    "text-with-lt": b"<html><a href=x>" + b"a<1" * (MB // 3) + b"</a>",
    "entities": b"<html><a href=x>" + b"&amp" * (MB // 4) + b"</a>",
    "script": b"<html><script>" + b"<a href=x>" * (MB // 10) + b"</script>",
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_megabyte_parses_or_is_refused(case: str) -> None:
    body = CRAFTED[case]
    page_or_malformed(body, HTML_CT)
    with contextlib.suppress(MalformedPage):
        check_list(parse_project_list(body, HTML_CT))


# --- project lists ---------------------------------------------------------------------------

list_doc = st.fixed_dictionaries(
    {
        "projects": st.lists(st.fixed_dictionaries({"name": odd_text}) | json_value, max_size=8)
        | json_value
    },
    optional={
        "meta": st.fixed_dictionaries(
            {}, optional={"api-version": json_value, "_last-serial": json_value}
        )
        | json_value
    },
)


def _list_outcome(body: bytes, content_type: str, cuts: list[int] | None) -> ProjectList | str:
    try:
        if cuts is None:
            listing = parse_project_list(body, content_type)
        else:
            parser = ProjectListParser(content_type)
            edges = [0, *sorted(cut % (len(body) + 1) for cut in cuts), len(body)]
            for start, end in itertools.pairwise(edges):
                parser.feed(body[start:end])
            listing = parser.close()
    except MalformedPage:
        return "MalformedPage"
    check_list(listing)
    return listing


@PROPERTY
@given(
    st.one_of(
        html_body.map(lambda t: t.encode("utf-8", "surrogatepass")),
        html_body.map(lambda t: ("<html>" + t).encode("utf-8", "replace")),
        st.binary(max_size=200),
    ),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_html_list_in_any_chunking_equals_one_chunk(body: bytes, cuts: list[int]) -> None:
    assert _list_outcome(body, HTML_CT, cuts) == _list_outcome(body, HTML_CT, None)


@PROPERTY
@given(
    list_doc.map(_encode) | st.binary(max_size=200),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_json_list_in_any_chunking_equals_one_chunk(body: bytes, cuts: list[int]) -> None:
    assert _list_outcome(body, JSON_CT, cuts) == _list_outcome(body, JSON_CT, None)
