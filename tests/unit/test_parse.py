from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote

import pytest

from mypypi2.errors import MalformedPage
from mypypi2.models import FileEntry, ProjectList, ProjectPage
from mypypi2.upstream.parse import (
    ProjectListParser,
    parse_project_list,
    parse_project_page,
)
from mypypi2.upstream.parse_rules import serial_from

PAGE_URL = "https://upstream.example/simple/demo-pkg/"
FILES = "https://files.example/packages"
JSON_CT = "application/vnd.pypi.simple.v1+json"
HTML_CT = "text/html; charset=utf-8"
SHA = "ab" * 32
SHA_UPPER = "AB" * 32


def _json(files: list[Any], **top: Any) -> bytes:
    doc: dict[str, Any] = {"meta": {"api-version": "1.1"}, "name": "demo-pkg", "files": files}
    doc.update(top)
    # json.dumps writes inf as Infinity; 1e400 is the valid JSON number no float can hold.
    return json.dumps(doc).replace("Infinity", "1e400").encode()


def _html(anchors: str, head: str = "") -> bytes:
    return (
        "<!DOCTYPE html>\n<html><head>"
        '<meta name="pypi:repository-version" content="1.1">'
        f"{head}</head><body><h1>Links for demo-pkg</h1>\n{anchors}\n</body></html>\n"
    ).encode()


def _page_json(files: list[Any], **top: Any) -> ProjectPage:
    return parse_project_page(_json(files, **top), JSON_CT, PAGE_URL, "demo-pkg")


def _page_html(anchors: str, head: str = "") -> ProjectPage:
    return parse_project_page(_html(anchors, head), HTML_CT, PAGE_URL, "demo-pkg")


def _one_json(**fields: Any) -> FileEntry:
    entry = {"filename": "demo_pkg-1.0.tar.gz", "url": f"{FILES}/demo_pkg-1.0.tar.gz"}
    entry.update(fields)
    (file,) = _page_json([entry]).files
    return file


def _one_html(attrs: str, href: str = f"{FILES}/demo_pkg-1.0.tar.gz") -> FileEntry:
    (file,) = _page_html(f'<a href="{href}" {attrs}>demo_pkg-1.0.tar.gz</a>').files
    return file


# --- the same page in both formats --------------------------------------------------------

SAME_JSON = _json(
    [
        {
            "filename": "demo_pkg-1.0-py3-none-any.whl",
            "url": f"{FILES}/demo_pkg-1.0-py3-none-any.whl",
            "hashes": {"sha256": SHA},
            "requires-python": ">=3.8,<4",
            "core-metadata": {"sha256": SHA},
            "dist-info-metadata": {"sha256": SHA},
            "yanked": False,
            "gpg-sig": False,
            "provenance": f"{FILES}/demo_pkg-1.0-py3-none-any.whl/provenance",
        },
        {
            "filename": "demo-pkg-1.1.tar.gz",
            "url": "../../packages/demo-pkg-1.1.tar.gz",
            "hashes": {"sha256": SHA_UPPER},
            "core-metadata": True,
            "yanked": 'bad <release> & "quoted"',
        },
        {"filename": "demo-pkg-0.9.zip", "url": f"{FILES}/demo-pkg-0.9.zip", "yanked": True},
    ],
    versions=["1.0", "1.1", "0.9"],
    **{"project-status": {"status": "archived", "reason": "moved <elsewhere>"}},
)

SAME_HTML = _html(
    f'<a href="{FILES}/demo_pkg-1.0-py3-none-any.whl#sha256={SHA}"'
    ' data-requires-python="&gt;=3.8,&lt;4"'
    f' data-core-metadata="sha256={SHA}" data-dist-info-metadata="sha256={SHA}"'
    ' data-gpg-sig="false"'
    f' data-provenance="{FILES}/demo_pkg-1.0-py3-none-any.whl/provenance"'
    ">demo_pkg-1.0-py3-none-any.whl</a><br/>\n"
    f'<a href="../../packages/demo-pkg-1.1.tar.gz#SHA256={SHA_UPPER}" data-core-metadata="true"'
    ' data-yanked="bad &lt;release&gt; &amp; &quot;quoted&quot;">demo-pkg-1.1.tar.gz</a>\n'
    f'<a href="{FILES}/demo-pkg-0.9.zip" data-yanked>demo-pkg-0.9.zip</a>',
    head='<meta name="pypi:project-status" content="archived">'
    '<meta name="pypi:project-status-reason" content="moved &lt;elsewhere&gt;">',
)

SAME_EXPECTED = ProjectPage(
    name="demo-pkg",
    files=(
        FileEntry(
            filename="demo_pkg-1.0-py3-none-any.whl",
            url=f"{FILES}/demo_pkg-1.0-py3-none-any.whl",
            hashes={"sha256": SHA},
            requires_python=">=3.8,<4",
            core_metadata={"sha256": SHA},
            gpg_sig=False,
            provenance=f"{FILES}/demo_pkg-1.0-py3-none-any.whl/provenance",
        ),
        FileEntry(
            filename="demo-pkg-1.1.tar.gz",
            url="https://upstream.example/packages/demo-pkg-1.1.tar.gz",
            hashes={"sha256": SHA},
            core_metadata={},
            yanked='bad <release> & "quoted"',
        ),
        FileEntry(
            filename="demo-pkg-0.9.zip",
            url=f"{FILES}/demo-pkg-0.9.zip",
            hashes={},
            yanked="",
        ),
    ),
    versions=("1.0", "1.1", "0.9"),
    status="archived",
    status_reason="moved <elsewhere>",
)


def test_json_page_is_parsed() -> None:
    assert parse_project_page(SAME_JSON, JSON_CT, PAGE_URL, "demo-pkg") == SAME_EXPECTED


def test_html_page_is_parsed() -> None:
    assert parse_project_page(SAME_HTML, HTML_CT, PAGE_URL, "demo-pkg") == SAME_EXPECTED


def test_json_and_html_of_one_page_are_equal() -> None:
    from_json = parse_project_page(SAME_JSON, JSON_CT, PAGE_URL, "demo-pkg")
    from_html = parse_project_page(SAME_HTML, HTML_CT, PAGE_URL, "demo-pkg")
    assert from_json == from_html


def test_name_is_the_given_normalized_project() -> None:
    page = parse_project_page(_json([], name="Demo_Pkg"), JSON_CT, PAGE_URL, "demo-pkg")
    assert page.name == "demo-pkg"


# --- content type, body --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("Application/VND.PyPI.Simple.V1+JSON; charset=utf-8", _json([])),
        ("application/vnd.pypi.simple.v1+json", _json([])),
        ("TEXT/HTML;charset=UTF-8", _html("")),
        (" application/vnd.pypi.simple.v1+html ", _html("")),
    ],
)
def test_accepted_content_types(content_type: str, body: bytes) -> None:
    page = parse_project_page(body, content_type, PAGE_URL, "demo-pkg")
    assert page == ProjectPage(name="demo-pkg", files=(), versions=())


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain", "", "application/vnd.pypi.simple.v2+json", "text/htmlx"],
)
def test_unexpected_content_type_is_rejected(content_type: str) -> None:
    with pytest.raises(MalformedPage, match="unexpected Content-Type"):
        parse_project_page(_json([]), content_type, PAGE_URL, "demo-pkg")
    with pytest.raises(MalformedPage, match="unexpected Content-Type"):
        parse_project_list(_html(""), content_type)


@pytest.mark.parametrize("content_type", [JSON_CT, HTML_CT])
def test_empty_body_is_rejected(content_type: str) -> None:
    with pytest.raises(MalformedPage, match="empty body"):
        parse_project_page(b"", content_type, PAGE_URL, "demo-pkg")
    with pytest.raises(MalformedPage, match="empty body"):
        parse_project_list(b"", content_type)


@pytest.mark.parametrize("content_type", [JSON_CT, HTML_CT])
def test_non_utf8_body_is_rejected(content_type: str) -> None:
    with pytest.raises(MalformedPage, match="UTF-8"):
        parse_project_page(b"<html>\xff\xfe</html>", content_type, PAGE_URL, "demo-pkg")
    with pytest.raises(MalformedPage, match="UTF-8"):
        parse_project_list(b'{"meta": "\xe9"}', content_type)


# --- JSON errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"<html></html>",
        b'{"meta": {"api-version": "1.0"}}',  # no files
        b'{"meta": {"api-version": "1.0"}, "files": {}}',
        b'{"meta": {"api-version": "1.0"}, "files": "a-1.0.tar.gz"}',
        b'{"meta": {"api-version": "1.0"}, "files": null}',
        b'"files"',
    ],
)
def test_invalid_json_page_is_rejected(body: bytes) -> None:
    with pytest.raises(MalformedPage, match="invalid JSON page"):
        parse_project_page(body, JSON_CT, PAGE_URL, "demo-pkg")


@pytest.mark.parametrize(
    ("body", "serial"),
    [
        (b'{"files": []}', None),  # no meta: a page with files is usable
        (b'{"meta": {}, "files": []}', None),  # no api-version
        (b'{"meta": "1.0", "files": []}', None),
        (b'{"meta": {"api-version": 1.0}, "files": []}', None),  # a number still has a major
        (b'{"meta": {"api-version": null}, "files": []}', None),
        (b'{"meta": {"api-version": "1.0"}, "files": [], "versions": "1.0"}', None),
        (b'{"meta": {"api-version": "1.1", "_last-serial": "26356948"}, "files": []}', 26356948),
        (b'{"meta": {"api-version": "1.1", "_last-serial": {"a": [1e400]}}, "files": []}', None),
        (b'{"meta": {"api-version": "1.1", "_x": 1e400}, "files": [], "_y": [1e400]}', None),
        (b'{"meta": {"api-version": "1.1"}, "files": [], "project-status": 1e400}', None),
    ],
)
def test_json_page_is_read_leniently(body: bytes, serial: int | None) -> None:
    page = parse_project_page(body, JSON_CT, PAGE_URL, "demo-pkg")
    assert page == ProjectPage(name="demo-pkg", files=(), versions=(), last_serial=serial)


@pytest.mark.parametrize(
    ("field", "value", "attribute", "expected"),
    [
        ("hashes", {"sha256": 1}, "hashes", {}),
        ("hashes", {"sha256": SHA, "md5": "zz"}, "hashes", {"sha256": SHA}),
        ("hashes", ["sha256", SHA], "hashes", {}),
        ("hashes", "sha256=" + SHA, "hashes", {}),
        ("size", -1, "size", None),
        ("size", "10", "size", None),
        ("size", 1.5, "size", None),
        ("size", True, "size", None),
        ("size", 2**63, "size", None),  # PostgreSQL bigint
        ("size", 10**30, "size", None),
        ("size", 2**63 - 1, "size", 2**63 - 1),
        ("size", float("inf"), "size", None),  # written as 1e400: beyond any float
        ("yanked", 1, "yanked", ""),
        ("yanked", 0, "yanked", None),
        ("yanked", None, "yanked", None),
        ("yanked", [], "yanked", None),
        ("yanked", {"reason": "x"}, "yanked", ""),
        ("requires-python", 3.8, "requires_python", None),
        ("requires-python", "", "requires_python", None),
        ("core-metadata", "true", "core_metadata", None),
        ("core-metadata", 1, "core_metadata", None),
        ("core-metadata", {"sha256": 1}, "core_metadata", {}),
        ("gpg-sig", "false", "gpg_sig", None),
        ("upload-time", 1700000000, "upload_time", None),
        ("upload-time", "yesterday", "upload_time", None),
        ("provenance", 7, "provenance", None),
    ],
)
def test_wrong_field_type_costs_only_that_field(
    field: str, value: Any, attribute: str, expected: Any
) -> None:
    entry = {"filename": "demo_pkg-1.0.tar.gz", "url": f"{FILES}/demo_pkg-1.0.tar.gz"}
    entry[field] = value
    other = {"filename": "demo_pkg-2.0.tar.gz", "url": f"{FILES}/demo_pkg-2.0.tar.gz"}
    page = _page_json([entry, other])
    assert [f.filename for f in page.files] == ["demo_pkg-1.0.tar.gz", "demo_pkg-2.0.tar.gz"]
    assert getattr(page.files[0], attribute) == expected
    assert page.files[0].url == f"{FILES}/demo_pkg-1.0.tar.gz"


@pytest.mark.parametrize(
    "entry",
    [
        {"filename": None, "url": f"{FILES}/demo_pkg-1.0.tar.gz"},
        {"filename": 1, "url": f"{FILES}/demo_pkg-1.0.tar.gz"},
        {"url": f"{FILES}/demo_pkg-1.0.tar.gz"},
        {"filename": "demo_pkg-1.0.tar.gz", "url": None},
        {"filename": "demo_pkg-1.0.tar.gz", "url": ["x"]},
        {"filename": "demo_pkg-1.0.tar.gz"},
        {"filename": "demo_pkg-1.0.tar.gz", "url": 1e400, "size": 1},
        "demo_pkg-1.0.tar.gz",
        None,
        [1, 2],
        float("inf"),
    ],
)
def test_an_unusable_file_entry_costs_only_that_entry(entry: Any) -> None:
    other = {"filename": "demo_pkg-2.0.tar.gz", "url": f"{FILES}/demo_pkg-2.0.tar.gz"}
    page = _page_json([entry, other])
    assert [f.filename for f in page.files] == ["demo_pkg-2.0.tar.gz"]


def test_dropped_entries_and_fields_are_logged_once_per_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    files: list[dict[str, Any]] = [
        {"filename": f"demo_pkg-{n}.0.tar.gz", "url": f"{FILES}/demo_pkg-{n}.0.tar.gz"}
        for n in range(4)
    ]
    files[0]["upload-time"] = "yesterday"
    files[1]["upload-time"] = "tomorrow"
    files[2]["url"] = None
    with caplog.at_level("WARNING", logger="mypypi2.upstream"):
        page = _page_json(files)
    assert len(page.files) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    upload, entry = sorted(messages, key=lambda m: "upload-time" not in m)
    assert "demo-pkg" in upload and PAGE_URL in upload
    assert "upload-time of 2 entries" in upload and "'yesterday'" in upload
    assert "the whole entry of 1 entries" in entry and "url None" in entry


def test_a_clean_page_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="mypypi2.upstream"):
        parse_project_page(SAME_JSON, JSON_CT, PAGE_URL, "demo-pkg")
        parse_project_page(SAME_HTML, HTML_CT, PAGE_URL, "demo-pkg")
    assert caplog.records == []


@pytest.mark.parametrize("version", ["2.0", "0.9", "v1", ""])
def test_unsupported_api_version_is_rejected(version: str) -> None:
    body = json.dumps({"meta": {"api-version": version}, "files": []}).encode()
    with pytest.raises(MalformedPage, match="api-version"):
        parse_project_page(body, JSON_CT, PAGE_URL, "demo-pkg")
    listing = json.dumps({"meta": {"api-version": version}, "projects": []}).encode()
    with pytest.raises(MalformedPage, match="api-version"):
        parse_project_list(listing, JSON_CT)
    head = f'<meta name="pypi:repository-version" content="{version}">'
    html = f"<html><head>{head}</head><body></body></html>".encode()
    with pytest.raises(MalformedPage, match="api-version"):
        parse_project_page(html, HTML_CT, PAGE_URL, "demo-pkg")
    with pytest.raises(MalformedPage, match="api-version"):
        parse_project_list(html, HTML_CT)


@pytest.mark.parametrize("version", ["1.0", "1.4", "1", "1.99", "1.4.2"])
def test_any_v1_api_version_is_accepted(version: str) -> None:
    body = json.dumps({"meta": {"api-version": version}, "files": []}).encode()
    assert parse_project_page(body, JSON_CT, PAGE_URL, "demo-pkg").files == ()


def test_html_without_repository_version_is_accepted() -> None:
    page = parse_project_page(b"<html><body></body></html>", HTML_CT, PAGE_URL, "demo-pkg")
    assert page == ProjectPage(name="demo-pkg", files=(), versions=())


# --- JSON fields ---------------------------------------------------------------------------


def test_missing_hashes_become_empty() -> None:
    assert _one_json().hashes == {}


@pytest.mark.parametrize(
    ("yanked", "expected"),
    [(False, None), (True, ""), ("", ""), ("security <issue>", "security <issue>")],
)
def test_json_yanked(yanked: bool | str, expected: str | None) -> None:
    assert _one_json(yanked=yanked).yanked == expected


def test_json_not_yanked_by_default() -> None:
    assert _one_json().yanked is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"core-metadata": False}, None),
        ({"core-metadata": True}, {}),
        ({"core-metadata": {"sha256": SHA_UPPER, "sha1": "ab"}}, {"sha256": SHA}),
        ({"dist-info-metadata": False}, None),
        ({"dist-info-metadata": True}, {}),
        ({"dist-info-metadata": {"SHA256": SHA}}, {"sha256": SHA}),
        ({"core-metadata": False, "dist-info-metadata": True}, None),
        (
            {"core-metadata": {"md5": "00ff"}, "dist-info-metadata": {"sha256": SHA}},
            {"md5": "00ff"},
        ),
    ],
)
def test_json_core_metadata_and_legacy_alias(
    fields: dict[str, Any], expected: dict[str, str] | None
) -> None:
    assert _one_json(**fields).core_metadata == expected


def test_json_hashes_are_filtered_and_lowercased() -> None:
    hashes = {
        "sha1": "ab" * 20,
        "SHA256": SHA_UPPER,
        "md5": "not-hex",
        "blake2b": "CD" * 32,
        "sha512": "",
        "whirlpool": "ab",
    }
    assert _one_json(hashes=hashes).hashes == {"sha256": SHA, "blake2b": "cd" * 32}


def test_json_size_provenance_gpg_sig() -> None:
    file = _one_json(size=0, provenance=f"{FILES}/p", **{"gpg-sig": True})
    assert (file.size, file.provenance, file.gpg_sig) == (0, f"{FILES}/p", True)
    assert _one_json(size=123).size == 123
    assert _one_json(size=None).size is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{FILES}/a.provenance", f"{FILES}/a.provenance"),
        ("a.provenance", f"{PAGE_URL}a.provenance"),  # relative: resolved like the file URL
        ("http://files.example/a.provenance", None),  # PEP 740: https only
        ("javascript:alert(1)", None),
        ("", None),
    ],
)
def test_provenance_is_an_absolute_https_url(value: str, expected: str | None) -> None:
    assert _one_json(provenance=value).provenance == expected
    assert _one_html(f'data-provenance="{value}"').provenance == expected


def test_json_requires_python_kept_verbatim() -> None:
    assert _one_json(**{"requires-python": ">=3.8,<4"}).requires_python == ">=3.8,<4"
    assert _one_json(**{"requires-python": None}).requires_python is None


UTC = dt.UTC


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.123456Z", dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05.5Z", dt.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2024-01-02T05:04:05+02:00", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-01T22:04:05.250-05:00", dt.datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
        ("2024-01-02T03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05+00:00", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_upload_time_variants(value: str, expected: dt.datetime) -> None:
    parsed = _one_json(**{"upload-time": value}).upload_time
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "",
        "2024-13-01T00:00:00Z",
        "2024-01-02T25:00Z",
        "9999-12-31T23:59:59-01:00",  # valid, but past datetime.max once in UTC
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_unparseable_upload_time_drops_only_that_field(value: str) -> None:
    file = _one_json(**{"upload-time": value}, size=7)
    assert (file.upload_time, file.size) == (None, 7)


def test_upload_time_absent_or_null() -> None:
    assert _one_json().upload_time is None
    assert _one_json(**{"upload-time": None}).upload_time is None


def test_project_status_and_last_serial() -> None:
    page = _page_json(
        [],
        meta={"api-version": "1.4", "_last-serial": 42},
        **{"project-status": {"status": "quarantined"}},
    )
    assert (page.status, page.status_reason, page.last_serial) == ("quarantined", None, 42)


def test_last_serial_also_read_at_top_level() -> None:
    assert _page_json([], **{"_last-serial": 9}).last_serial == 9
    both = _page_json([], meta={"api-version": "1.1", "_last-serial": 10}, **{"_last-serial": 9})
    assert both.last_serial == 10
    assert _page_json([]).last_serial is None


def test_status_absent() -> None:
    page = _page_json([])
    assert (page.status, page.status_reason) == (None, None)


def test_unknown_json_keys_are_ignored() -> None:
    page = _page_json([{"filename": "a-1.0.tar.gz", "url": f"{FILES}/a-1.0.tar.gz", "x": [1]}])
    assert [f.filename for f in page.files] == ["a-1.0.tar.gz"]


# --- HTML errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'<html><body><a href="a-1.0.tar.gz">a</a><a href="b-1.0.tar.gz"',
        b"<html><body><a href=",
        b"<html><body><a",
        b"<html><body><!-- never closed",
        b"<html><body>x <",
    ],
)
def test_unterminated_tag_is_rejected(body: bytes) -> None:
    with pytest.raises(MalformedPage, match="unterminated"):
        parse_project_page(body, HTML_CT, PAGE_URL, "demo-pkg")
    with pytest.raises(MalformedPage, match="unterminated"):
        parse_project_list(body, HTML_CT)


def test_anchor_without_href_is_skipped() -> None:
    page = _page_html('<a href="a-1.0.tar.gz">a</a><a name="x">b-1.0.tar.gz</a><a>c</a>')
    assert [f.filename for f in page.files] == ["a-1.0.tar.gz"]


@pytest.mark.parametrize(
    "body",
    [
        _json([{"filename": "a-1.0.tar.gz", "url": "a-1.0.tar.gz"}]),
        b"just some text",
        b"   \n\t ",
        b"\x01\x02binary",
        b"<<<>>>",
        b'{"x": "<a href=\\"a-1.0.tar.gz\\">"}',
    ],
)
def test_non_html_body_is_rejected(body: bytes) -> None:
    with pytest.raises(MalformedPage, match="not HTML"):
        parse_project_page(body, HTML_CT, PAGE_URL, "demo-pkg")
    with pytest.raises(MalformedPage, match="not HTML"):
        parse_project_list(body, HTML_CT)


def test_bogus_declarations_are_comments() -> None:
    body = b'<html><![bogus[ <a href="x-1.0.tar.gz"> ]]><? pi <a> ?><a href="a-1.0.tar.gz">'
    page = parse_project_page(body, HTML_CT, PAGE_URL, "demo-pkg")
    assert [f.filename for f in page.files] == ["a-1.0.tar.gz"]


def test_html_page_with_no_anchors_is_an_empty_project() -> None:
    assert _page_html("") == ProjectPage(name="demo-pkg", files=(), versions=())


def test_bare_anchor_list_is_accepted() -> None:
    body = b'<a href="demo-pkg-1.0.tar.gz">demo-pkg-1.0.tar.gz</a>\n'
    page = parse_project_page(body, HTML_CT, PAGE_URL, "demo-pkg")
    assert [f.url for f in page.files] == [f"{PAGE_URL}demo-pkg-1.0.tar.gz"]


def test_utf8_bom_is_tolerated() -> None:
    page = parse_project_page(b"\xef\xbb\xbf" + _html(""), HTML_CT, PAGE_URL, "demo-pkg")
    assert page.files == ()


# --- HTML fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("../../packages/a-1.0.tar.gz", "https://upstream.example/packages/a-1.0.tar.gz"),
        ("/packages/a-1.0.tar.gz", "https://upstream.example/packages/a-1.0.tar.gz"),
        ("a-1.0.tar.gz", f"{PAGE_URL}a-1.0.tar.gz"),
        ("//cdn.example/p/a-1.0.tar.gz", "https://cdn.example/p/a-1.0.tar.gz"),
        ("http://other.example/a-1.0.tar.gz", "http://other.example/a-1.0.tar.gz"),
        (f"{FILES}/a-1.0.tar.gz?x=1&amp;y=2#sha256={SHA}", f"{FILES}/a-1.0.tar.gz?x=1&y=2"),
    ],
)
def test_hrefs_are_resolved_against_the_page(href: str, expected: str) -> None:
    file = _one_html("", href=href)
    assert (file.url, file.filename) == (expected, "a-1.0.tar.gz")


def test_entities_and_markup_in_attributes_are_unescaped_and_kept_verbatim() -> None:
    href = f"{FILES}/evil%3Cscript%3E%26%22%27-1.0.tar.gz"
    file = _one_html(
        'data-requires-python="&gt;=3.8,&lt;4"'
        ' data-yanked="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;more&#39;"',
        href=href,
    )
    assert file.filename == "evil<script>&\"'-1.0.tar.gz"
    assert file.url == href
    assert file.requires_python == ">=3.8,<4"
    assert file.yanked == "<script>alert(\"x\")</script> & 'more'"


def test_html_hash_fragment() -> None:
    href = f"{FILES}/a-1.0.tar.gz"
    assert _one_html("", href=f"{href}#sha256={SHA_UPPER}").hashes == {"sha256": SHA}
    assert _one_html("", href=f"{href}#MD5=00FF").hashes == {"md5": "00ff"}
    assert _one_html("", href=f"{href}#sha1={'ab' * 20}").hashes == {}
    assert _one_html("", href=f"{href}#sha256=xyz").hashes == {}
    assert _one_html("", href=f"{href}#sha256=").hashes == {}
    assert _one_html("", href=f"{href}#egg=a").hashes == {}
    assert _one_html("", href=href).hashes == {}


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ("", None),
        ('data-yanked=""', ""),
        ("data-yanked", ""),
        ('data-yanked="broken build"', "broken build"),
    ],
)
def test_html_yanked(attrs: str, expected: str | None) -> None:
    assert _one_html(attrs).yanked == expected


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ("", None),
        ('data-core-metadata="true"', {}),
        ('data-core-metadata="TRUE"', {}),
        (f'data-core-metadata="sha256={SHA_UPPER}"', {"sha256": SHA}),
        ('data-core-metadata="false"', None),
        ("data-core-metadata", None),
        (f'data-core-metadata="sha1={"ab" * 20}"', {}),  # exists, but no hash we may keep
        ('data-dist-info-metadata="true"', {}),
        (f'data-dist-info-metadata="sha256={SHA}"', {"sha256": SHA}),
        ('data-dist-info-metadata="false"', None),
        ('data-core-metadata="false" data-dist-info-metadata="true"', None),
        (f'data-core-metadata="true" data-dist-info-metadata="sha256={SHA}"', {}),
    ],
)
def test_html_core_metadata_and_legacy_alias(attrs: str, expected: dict[str, str] | None) -> None:
    assert _one_html(attrs).core_metadata == expected


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ("", None),
        ('data-gpg-sig="true"', True),
        ('data-gpg-sig="false"', False),
        ('data-gpg-sig="maybe"', None),
    ],
)
def test_html_gpg_sig(attrs: str, expected: bool | None) -> None:
    assert _one_html(attrs).gpg_sig is expected


def test_html_provenance_and_no_size_or_time() -> None:
    file = _one_html(f'data-provenance="{FILES}/a.provenance"')
    assert file.provenance == f"{FILES}/a.provenance"
    assert (file.size, file.upload_time) == (None, None)
    assert _one_html("").provenance is None


def test_html_project_status() -> None:
    page = _page_html(
        "",
        head='<META NAME="pypi:project-status" CONTENT="deprecated">'
        '<meta name="pypi:project-status-reason" content="use &quot;other&quot;">',
    )
    assert (page.status, page.status_reason) == ("deprecated", 'use "other"')


def test_self_closing_and_unclosed_anchors() -> None:
    page = _page_html('<a href="a-1.0.tar.gz"/><a href="a-2.0.tar.gz">a-2.0.tar.gz')
    assert [f.filename for f in page.files] == ["a-1.0.tar.gz", "a-2.0.tar.gz"]


# --- skipping bad entries --------------------------------------------------------------------


def test_duplicate_filenames_keep_the_first() -> None:
    page = _page_html(
        f'<a href="{FILES}/one/a-1.0.tar.gz#sha256={SHA}">x</a>'
        f'<a href="{FILES}/two/a-1.0.tar.gz">x</a>'
        f'<a href="{FILES}/b-1.0.tar.gz">x</a>'
    )
    assert [f.url for f in page.files] == [f"{FILES}/one/a-1.0.tar.gz", f"{FILES}/b-1.0.tar.gz"]
    assert page.files[0].hashes == {"sha256": SHA}
    json_page = _page_json(
        [
            {"filename": "a-1.0.tar.gz", "url": f"{FILES}/one/a-1.0.tar.gz"},
            {"filename": "a-1.0.tar.gz", "url": f"{FILES}/two/a-1.0.tar.gz"},
        ]
    )
    assert [f.url for f in json_page.files] == [f"{FILES}/one/a-1.0.tar.gz"]


def test_unsafe_filenames_and_non_http_urls_are_skipped_in_html() -> None:
    page = _page_html(
        f'<a href="{FILES}/">dir</a>'
        f'<a href="{FILES}/a%2Fb-1.0.tar.gz">slash</a>'
        f'<a href="{FILES}/a%5Cb-1.0.tar.gz">backslash</a>'
        f'<a href="{FILES}/a%00-1.0.tar.gz">nul</a>'
        f'<a href="{FILES}/%2E%2E">dots</a>'
        '<a href="ftp://files.example/c-1.0.tar.gz">ftp</a>'
        '<a href="javascript:alert(1)">js</a>'
        '<a href="file:///etc/c-1.0.tar.gz">file</a>'
        f'<a href="{FILES}/ok-1.0.tar.gz">ok</a>'
    )
    assert [f.filename for f in page.files] == ["ok-1.0.tar.gz"]


@pytest.mark.parametrize(
    ("filename", "url"),
    [
        ("../evil-1.0.tar.gz", f"{FILES}/evil-1.0.tar.gz"),
        ("a/b-1.0.tar.gz", f"{FILES}/b-1.0.tar.gz"),
        ("a\\b-1.0.tar.gz", f"{FILES}/b-1.0.tar.gz"),
        ("", f"{FILES}/b-1.0.tar.gz"),
        ("..", f"{FILES}/b-1.0.tar.gz"),
        ("b-1.0.tar.gz", "ftp://files.example/b-1.0.tar.gz"),
        ("b-1.0.tar.gz", "data:text/plain,hi"),
    ],
)
def test_unsafe_json_entries_are_skipped(filename: str, url: str) -> None:
    ok = {"filename": "ok-1.0.tar.gz", "url": "ok-1.0.tar.gz"}
    page = _page_json([{"filename": filename, "url": url}, ok])
    assert [(f.filename, f.url) for f in page.files] == [
        ("ok-1.0.tar.gz", f"{PAGE_URL}ok-1.0.tar.gz")
    ]


# --- versions ------------------------------------------------------------------------------


def test_versions_merge_upstream_then_filenames() -> None:
    files = [
        {"filename": "demo_pkg-1.0-py3-none-any.whl", "url": "demo_pkg-1.0-py3-none-any.whl"},
        {"filename": "demo-pkg-3.0.tar.gz", "url": "demo-pkg-3.0.tar.gz"},
        {"filename": "demo_pkg-3.0-py3-none-any.whl", "url": "demo_pkg-3.0-py3-none-any.whl"},
        {"filename": "demo-pkg-4.0.exe", "url": "demo-pkg-4.0.exe"},  # version not derivable
        {"filename": "other-5.0.tar.gz", "url": "other-5.0.tar.gz"},  # another project's name
    ]
    page = _page_json(files, versions=["2.0", "1.0", "2.0"])
    assert page.versions == ("2.0", "1.0", "3.0")


def test_versions_from_html_filenames_in_file_order() -> None:
    page = _page_html(
        '<a href="demo-pkg-2.0.tar.gz">x</a>'
        '<a href="demo_pkg-1.0-py3-none-any.whl">x</a>'
        '<a href="Demo.Pkg-2.0.zip">x</a>'
    )
    assert page.versions == ("2.0", "1.0")


def test_json_without_versions_uses_filenames() -> None:
    page = _page_json([{"filename": "demo-pkg-1.5.tar.gz", "url": "demo-pkg-1.5.tar.gz"}])
    assert page.versions == ("1.5",)


# --- project list --------------------------------------------------------------------------


def test_project_list_html() -> None:
    body = _html(
        '<a href="/simple/alpha/">  Alpha  </a>\n'
        '<a href="/simple/b-c/">b_C</a>\n'
        '<a href="/simple/alpha/">Alpha</a>\n'
        '<a href="/simple/x/">a&amp;b &lt;script&gt;</a>\n'
        '<a href="/simple/empty/">  </a>\n'
        '<a href="/simple/nested/"><span>Nested</span></a>'
    )
    assert parse_project_list(body, HTML_CT) == ProjectList(
        names=("Alpha", "b_C", "a&b <script>", "Nested")
    )


def test_project_list_html_in_the_usual_shape_is_read_as_any_markup() -> None:
    """Runs of `<a href="...">name</a><br />` are taken in one match: an href holding what
    looks like an entry, a reference, or an anchor of another shape in the run count as the
    tokenizer counts them."""
    body = _html(
        '<a href="/simple/a/">A</a><br />\n<a href="/simple/b/">b</a>\n'
        '<a href="x>evil</a>">real</a><br/>'
        '<a href="/simple/c/">a&amp;b</a><BR>'
        "<a href='/simple/d/'>single</a>"
        '<a href="/simple/e/" data-x="1">  spaced  </a>'
        '<a href="/simple/f/">A</a><!-- <a href="/simple/g/">hidden</a> -->'
        '<A HREF="/simple/h/">upper</A>'
    )
    assert parse_project_list(body, HTML_CT) == ProjectList(
        names=("A", "b", "real", "a&b", "single", "spaced", "upper")
    )


def test_project_list_json() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.0", "_last-serial": 123},
            "projects": [{"name": "Alpha"}, {"name": "b_C"}, {"name": "Alpha"}],
        }
    ).encode()
    assert parse_project_list(body, JSON_CT) == ProjectList(names=("Alpha", "b_C"), last_serial=123)


def test_project_list_html_and_json_agree() -> None:
    html = _html('<a href="/simple/alpha/">alpha</a><a href="/simple/beta/">beta</a>')
    body = json.dumps(
        {"meta": {"api-version": "1.1"}, "projects": [{"name": "alpha"}, {"name": "beta"}]}
    ).encode()
    assert parse_project_list(html, HTML_CT) == parse_project_list(body, JSON_CT)


def test_empty_project_list() -> None:
    assert parse_project_list(_html(""), HTML_CT) == ProjectList(names=())


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"meta": {"api-version": "1.0"}}',
        b'{"meta": {"api-version": "1.0"}, "projects": {}}',
        b"[]",
    ],
)
def test_invalid_project_list_json_is_rejected(body: bytes) -> None:
    with pytest.raises(MalformedPage, match="invalid JSON page"):
        parse_project_list(body, JSON_CT)


def test_project_list_json_drops_only_unusable_entries() -> None:
    body = (
        b'{"projects": ["alpha", {"name": 1}, {"name": "beta", "x": 1e400}, {"name": ""},'
        b' {"name": "gamma", "_serial": "x"}, null, {"name": "delta"}],'
        b' "meta": {"api-version": "1.7", "_last-serial": "12"}}'
    )
    assert parse_project_list(body, JSON_CT) == ProjectList(
        names=("beta", "gamma", "delta"), last_serial=12
    )


def test_nul_characters_cost_only_their_field() -> None:
    # PostgreSQL text cannot hold NUL: no NUL may reach the store, and no page is lost to one.
    body = _json(
        [
            {"filename": "a\x00-1.0.tar.gz", "url": "a-1.0.tar.gz"},
            {"filename": "b-1.0.tar.gz", "url": "b\x00-1.0.tar.gz"},
            {
                "filename": "c-1.0.tar.gz",
                "url": "c-1.0.tar.gz",
                "yanked": "x\x00",
                "requires-python": ">=3\x00",
                "provenance": "\x00",
            },
        ],
        versions=["1.0\x00", "2.0"],
        **{"project-status": {"status": "\x00"}},
    )
    assert b"\\u0000" in body
    page = parse_project_page(body, JSON_CT, PAGE_URL, "demo-pkg")
    (file,) = page.files
    assert (file.filename, file.yanked, file.requires_python, file.provenance) == (
        "c-1.0.tar.gz",
        "",
        None,
        None,
    )
    assert (page.versions, page.status) == (("2.0",), None)
    html = _page_html('<a href="a\x00-1.0.tar.gz" data-yanked="x\x00y">a</a>')
    assert [(f.filename, f.yanked) for f in html.files] == [("a\ufffd-1.0.tar.gz", "x\ufffdy")]
    listing = parse_project_list(b'{"projects": [{"name": "a\\u0000"}, {"name": "b"}]}', JSON_CT)
    assert listing.names == ("b",)
    assert parse_project_list(b"<a>n\x00</a>", HTML_CT).names == ("n\ufffd",)


# --- serials, big integers, odd Unicode -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, 42),
        ("26356948", 26356948),
        ("007", 7),
        (0, 0),
        (2**63 - 1, 2**63 - 1),
        (2**63, None),  # PostgreSQL bigint
        (10**30, None),
        (str(2**63), None),
        ("9" * 40, None),
        (-1, None),
        ("-1", None),
        ("²", None),  # isdigit() says yes, int() says no
        ("١٢", None),  # Arabic-Indic digits
        (" 7", None),
        ("", None),
        (1.0, None),
        (True, None),
        (None, None),
        ([1], None),
    ],
)
def test_last_serial_values(value: Any, expected: int | None) -> None:
    assert serial_from(value) == expected
    page = _page_json([], meta={"api-version": "1.1", "_last-serial": value})
    assert page.last_serial == expected


def test_lone_surrogate_escapes_become_replacement_characters() -> None:
    body = (
        b'{"meta": {"api-version": "1.1"}, "files": [{"filename": "demo_pkg-1.0.tar.gz",'
        b' "url": "demo_pkg-1.0.tar.gz", "yanked": "bad \\ud800 build \\\\ud800 \\ud83d\\ude00"}]}'
    )
    (file,) = parse_project_page(body, JSON_CT, PAGE_URL, "demo-pkg").files
    assert file.yanked == "bad \ufffd build \\ud800 \U0001f600"
    file.yanked.encode()  # storable as UTF-8 text


# --- filenames: one rule for both formats ---------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "kept"),
    [
        ("a" * 248 + ".tar.gz", True),  # 255 bytes
        ("a" * 249 + ".tar.gz", False),
        ("é" * 124 + ".tar.gz", True),  # 248 + 7 bytes
        ("é" * 125 + ".tar.gz", False),  # 125 characters, but 257 bytes
        ("a" * 3000 + ".tar.gz", False),  # once overflowed the btree index of files
    ],
)
def test_filenames_over_255_bytes_are_dropped(filename: str, kept: bool) -> None:
    ok = {"filename": "ok-1.0.tar.gz", "url": "ok-1.0.tar.gz"}
    page = _page_json([{"filename": filename, "url": quote(filename)}, ok])
    assert ("ok-1.0.tar.gz" in [f.filename for f in page.files]) is True
    assert (filename in [f.filename for f in page.files]) is kept
    html_page = _page_html(f'<a href="{quote(filename)}">x</a><a href="ok-1.0.tar.gz">ok</a>')
    assert (filename in [f.filename for f in html_page.files]) is kept


def test_html_filename_is_the_percent_decoded_last_segment() -> None:
    file = _one_html("", href=f"{FILES}/a/b/demo%2Bpkg-1.0%20x.tar.gz?x=/y.whl#md5=00ff")
    assert file.filename == "demo+pkg-1.0 x.tar.gz"
    assert file.url == f"{FILES}/a/b/demo%2Bpkg-1.0%20x.tar.gz?x=/y.whl"


# --- HTML as other servers write it ---------------------------------------------------------


def test_uppercase_unquoted_and_reordered_attributes() -> None:
    page = _page_html(
        f"<A DATA-REQUIRES-PYTHON='&gt;=3.8' HREF={FILES}/a-1.0.tar.gz#SHA256={SHA_UPPER}"
        " Data-Yanked>a</A>\n"
        f"<a\nhref\n=\n'{FILES}/b-1.0.tar.gz'\tdata-yanked=why>b</a>"
        f"<a data-core-metadata=true href={FILES}/c-1.0.tar.gz />c</a>"
        # HTML: an unquoted value runs to whitespace or ">": this URL ends in "/", no file.
        f"<a href={FILES}/d-1.0.tar.gz/>d</a>"
    )
    a, b, c = page.files
    assert (a.filename, a.hashes, a.requires_python, a.yanked) == (
        "a-1.0.tar.gz",
        {"sha256": SHA},
        ">=3.8",
        "",
    )
    assert (b.url, b.yanked) == (f"{FILES}/b-1.0.tar.gz", "why")
    assert (c.filename, c.core_metadata) == ("c-1.0.tar.gz", {})


def test_markup_characters_inside_quoted_values() -> None:
    page = _page_html(
        f'<a data-yanked="a > b <a href=x-1.0.tar.gz>" href="{FILES}/a-1.0.tar.gz">a</a>'
        f"<a href='{FILES}/b-1.0.tar.gz' data-requires-python='>=3.8,<4'>b</a>"
    )
    assert [(f.filename, f.yanked, f.requires_python) for f in page.files] == [
        ("a-1.0.tar.gz", "a > b <a href=x-1.0.tar.gz>", None),
        ("b-1.0.tar.gz", None, ">=3.8,<4"),
    ]


def test_repeated_attributes_keep_the_first() -> None:
    file = _one_html(f'href="{FILES}/other-1.0.tar.gz"', href=f"{FILES}/a-1.0.tar.gz")
    assert file.filename == "a-1.0.tar.gz"


def test_anchors_in_comments_scripts_and_styles_are_not_files() -> None:
    page = _page_html(
        '<!-- <a href="c-1.0.tar.gz">c</a> -->'
        '<script>var s = "<a href=\\"s-1.0.tar.gz\\">";</script>'
        '<STYLE>a[href="t-1.0.tar.gz"] {}</STYLE >'
        "<!---->"
        '<a href="a-1.0.tar.gz">a</a>'
    )
    assert [f.filename for f in page.files] == ["a-1.0.tar.gz"]


@pytest.mark.parametrize(
    ("base", "href", "url"),
    [
        (f"{FILES}/root/", "a-1.0.tar.gz", f"{FILES}/root/a-1.0.tar.gz"),
        ("/mirror/", "../a-1.0.tar.gz", "https://upstream.example/a-1.0.tar.gz"),
        ("../../packages/", "a-1.0.tar.gz", "https://upstream.example/packages/a-1.0.tar.gz"),
        (f"{FILES}/root/", f"{FILES}/abs/a-1.0.tar.gz", f"{FILES}/abs/a-1.0.tar.gz"),
        ("ftp://files.example/", "a-1.0.tar.gz", f"{PAGE_URL}a-1.0.tar.gz"),  # not a usable base
    ],
)
def test_base_href_is_the_base_of_every_link(base: str, href: str, url: str) -> None:
    before = _page_html(f'<a href="{href}">x</a>', head=f'<base href="{base}">')
    (file,) = before.files
    assert file.url == url
    # Only the first <base> counts, and it counts for links before it too (HTML).
    after = _page_html(f'<a href="{href}">x</a><base href="{base}"><base href="/other/">')
    assert after.files[0].url == url


def test_md5_only_page_keeps_md5_and_drops_other_algorithms() -> None:
    page = _page_html(
        f'<a href="{FILES}/a-1.0.tar.gz#md5=00FF00FF00FF00FF00FF00FF00FF00FF">a</a>'
        f'<a href="{FILES}/b-1.0.tar.gz#sha1={"ab" * 20}">b</a>'
        f'<a href="{FILES}/c-1.0.tar.gz#egg=c&amp;sha256={SHA}">c</a>'
    )
    assert [f.hashes for f in page.files] == [{"md5": "00ff" * 8}, {}, {"sha256": SHA}]


def test_unterminated_script_is_rejected() -> None:
    with pytest.raises(MalformedPage, match="unterminated <script>"):
        _page_html('<script>var x = 1; <a href="a-1.0.tar.gz">')


def test_html_token_over_one_mib_is_rejected() -> None:
    with pytest.raises(MalformedPage, match="longer than"):
        _page_html(f'<a href="a-1.0.tar.gz" data-x="{"x" * (1 << 20)}">a</a>')
    with pytest.raises(MalformedPage, match="longer than"):
        _page_html(f"<!-- {'x' * (1 << 20)} -->")


# --- the incremental project list parser ----------------------------------------------------


def test_project_list_parser_rejects_unknown_types_at_once() -> None:
    with pytest.raises(MalformedPage, match="unexpected Content-Type"):
        ProjectListParser("application/json")


@pytest.mark.parametrize("content_type", [JSON_CT, HTML_CT])
def test_project_list_parser_fed_byte_by_byte(content_type: str) -> None:
    names = ["Alpha", "b&c", "ünï", "d"]
    if content_type == JSON_CT:
        body = json.dumps(
            {
                "meta": {"api-version": "1.1", "_last-serial": "3"},
                "projects": [{"name": n} for n in names],
            },
            ensure_ascii=False,
        ).encode()
    else:
        body = _html(
            "".join(f'<a href="/simple/{n}/">{n.replace("&", "&amp;")}</a>' for n in names)
        )
    parser = ProjectListParser(content_type)
    for index in range(len(body)):
        parser.feed(body[index : index + 1])
    listing = parser.close()
    assert listing == parse_project_list(body, content_type)
    assert listing.names == tuple(names)


def test_a_long_comment_is_refused_whatever_the_chunking() -> None:
    # A 1 MiB comment split over many chunks is still refused like a whole one.
    body = b"<html><!-- " + b"x" * (1 << 20) + b" --><a>n</a>"
    parser = ProjectListParser(HTML_CT)
    with pytest.raises(MalformedPage, match="longer than"):
        for start in range(0, len(body), 65536):
            parser.feed(body[start : start + 65536])
        parser.close()
    with pytest.raises(MalformedPage, match="longer than"):
        parse_project_list(body, HTML_CT)
