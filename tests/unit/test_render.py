from __future__ import annotations

import datetime as dt
import json
import re
from html import escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urlsplit

import pypi_simple
import pytest

from mypypi2 import render
from mypypi2.models import FileEntry, ProjectList, ProjectPage
from mypypi2.names import normalize

PREFIX = "/pypi/files/demo/"
SHA256 = "a" * 64
SHA256_META = "b" * 64
SHA512 = "c" * 128
MD5 = "d" * 32
SHA1 = "e" * 40
EVIL = "<script>alert(\"x\")</script> & 'q'"
UPLOADED = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
PROVENANCE = "https://upstream.example/integrity/demo/1.0/demo-1.0-py3-none-any.whl/provenance"

WHEEL = FileEntry(
    filename="demo-1.0-py3-none-any.whl",
    url="https://files.upstream.example/demo-1.0-py3-none-any.whl",
    hashes={"sha256": SHA256, "md5": MD5},
    requires_python=">=3.8,<4",
    core_metadata={"sha256": SHA256_META},
    size=1234,
    upload_time=UPLOADED,
    provenance=PROVENANCE,
    gpg_sig=False,
)
SDIST_YANKED = FileEntry(
    filename="demo-0.9.tar.gz",
    url="https://files.upstream.example/demo-0.9.tar.gz",
    hashes={"sha512": SHA512},
    yanked="",
    core_metadata={},
    size=99,
    upload_time=dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    gpg_sig=True,
)
EVIL_FILE = FileEntry(
    filename="demo-0.8 \"<b>&'#?%.tar.gz",
    url="https://files.upstream.example/evil",
    hashes={},
    requires_python="<4,>=3.6&\"'",
    yanked=EVIL,
    size=1,
)
SHA1_FILE = FileEntry(
    filename="demo-0.7.zip",
    url="https://files.upstream.example/demo-0.7.zip",
    hashes={"sha1": SHA1, "md5": MD5},
    core_metadata={"sha1": SHA1},
    size=2,
)
FILES = (WHEEL, SDIST_YANKED, EVIL_FILE, SHA1_FILE)
PAGE = ProjectPage(
    name="demo",
    files=FILES,
    versions=("0.7", "0.8", "0.9", "1.0"),
    last_serial=42,
)


class _Html(HTMLParser):
    """Anchors and meta tags of a page, attribute values unescaped by the parser."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.meta: dict[str, str | None] = {}
        self.titles: list[str] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []
        self._tag = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta":
            values = dict(attrs)
            self.meta[values["name"] or ""] = values["content"]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)
        elif self._tag in ("title", "h1") and data.strip():
            self.titles.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text)))
            self._open = None
        self._tag = ""


def _html(page: ProjectPage = PAGE) -> str:
    return render.project_html(page, PREFIX).decode()


def _json(page: ProjectPage = PAGE) -> dict[str, Any]:
    data = json.loads(render.project_json(page, PREFIX))
    assert isinstance(data, dict)
    return data


def _page(*files: FileEntry, **changes: Any) -> ProjectPage:
    fields: dict[str, Any] = {"name": "demo", "files": files, "versions": ("1.0",)}
    fields.update(changes)
    return ProjectPage(**fields)


# --- API versions -------------------------------------------------------------------------


def test_api_version_is_1_4_when_every_size_is_known() -> None:
    assert render.api_version(PAGE) == "1.4"


def test_api_version_is_1_4_for_a_page_without_files() -> None:
    assert render.api_version(_page()) == "1.4"


def test_api_version_is_1_0_when_a_size_is_missing() -> None:
    page = _page(WHEEL, FileEntry("demo-2.0.tar.gz", "u", {"sha256": SHA256}))
    assert render.api_version(page) == "1.0"


@pytest.mark.parametrize("page", [PAGE, _page(FileEntry("demo-2.0.tar.gz", "u", {}))])
def test_html_and_json_advertise_the_same_api_version(page: ProjectPage) -> None:
    version = render.api_version(page)
    assert _Html(_html(page)).meta["pypi:repository-version"] == version
    assert _json(page)["meta"]["api-version"] == version


def test_pep708_keys_are_never_emitted() -> None:
    for key in ("tracks", "alternate-locations"):
        assert key not in _json()
        assert key not in _json()["meta"]
        assert f"pypi:{key}" not in _html()


# --- HTML project page ----------------------------------------------------------------------


def test_html_document_shape() -> None:
    text = _html()
    assert text.startswith("<!DOCTYPE html>\n")
    head = text[: text.index("</head>")]
    assert '<meta name="pypi:repository-version" content="1.4">' in head
    assert "<title>Links for demo</title>" in head
    assert "<h1>Links for demo</h1>" in text
    parsed = _Html(text)
    assert parsed.titles == ["Links for demo", "Links for demo"]
    assert "pypi:project-status" not in parsed.meta
    assert "pypi:project-status-reason" not in parsed.meta


def test_html_one_anchor_per_file_text_is_the_last_segment_of_href() -> None:
    anchors = _Html(_html()).anchors
    assert [text for _, text in anchors] == [file.filename for file in FILES]
    for attrs, text in anchors:
        path = urlsplit(attrs["href"] or "").path
        assert path.startswith(PREFIX)
        assert unquote(path.rsplit("/", 1)[1]) == text


def test_html_every_anchor_is_followed_by_br_and_newline() -> None:
    text = _html()
    assert text.count("<a ") == len(FILES)
    assert text.count("</a><br />\n") == len(FILES)


@pytest.mark.parametrize(
    ("hashes", "fragment"),
    [
        ({"sha256": SHA256, "md5": MD5, "sha512": SHA512}, f"sha256={SHA256}"),
        ({"md5": MD5, "sha512": SHA512, "sha384": "f" * 96}, f"sha512={SHA512}"),
        ({"md5": MD5, "sha384": "f" * 96, "blake2b": "9" * 128}, f"sha384={'f' * 96}"),
        ({"md5": MD5, "blake2b": "9" * 128}, f"blake2b={'9' * 128}"),
        ({"md5": MD5, "sha1": SHA1}, f"md5={MD5}"),
        ({"sha1": SHA1}, ""),
        ({}, ""),
    ],
)
def test_html_hash_fragment_prefers_sha256_then_the_strongest(
    hashes: dict[str, str], fragment: str
) -> None:
    file = FileEntry("demo-1.0.tar.gz", "u", hashes, size=1)
    [(attrs, _)] = _Html(_html(_page(file))).anchors
    assert urlsplit(attrs["href"] or "").fragment == fragment
    assert ("#" in (attrs["href"] or "")) == bool(fragment)


def test_html_never_emits_sha1() -> None:
    assert "sha1" not in _html()
    assert SHA1 not in _html()


def test_html_escapes_every_upstream_string() -> None:
    text = _html()
    assert "<script>" not in text
    assert "<b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;" in text
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in text
    assert 'data-requires-python="&lt;4,&gt;=3.6&amp;&quot;&#x27;"' in text
    assert ">demo-0.8 &quot;&lt;b&gt;&amp;&#x27;#?%.tar.gz</a>" in text


def test_html_status_and_names_are_escaped() -> None:
    page = _page(WHEEL, name='x"><script>', status="archived", status_reason=EVIL)
    text = _html(page)
    assert "<script>" not in text
    assert _Html(text).meta["pypi:project-status-reason"] == EVIL
    assert _Html(text).titles == ['Links for x"><script>'] * 2


def test_html_attributes_round_trip_to_the_model() -> None:
    anchors = _Html(_html()).anchors
    for file, (attrs, _) in zip(FILES, anchors, strict=True):
        assert attrs.get("data-requires-python") == file.requires_python
        assert attrs.get("data-yanked") == file.yanked
        assert attrs.get("data-provenance") == file.provenance


def test_html_yanked_attribute_present_iff_yanked() -> None:
    wheel, sdist, evil, sha1 = (attrs for attrs, _ in _Html(_html()).anchors)
    assert "data-yanked" not in wheel
    assert "data-yanked" not in sha1
    assert sdist["data-yanked"] == ""
    assert evil["data-yanked"] == EVIL
    assert 'data-yanked=""' in _html()


def test_html_core_metadata_and_legacy_alias() -> None:
    wheel, sdist, evil, sha1 = (attrs for attrs, _ in _Html(_html()).anchors)
    assert wheel["data-core-metadata"] == f"sha256={SHA256_META}"
    assert sdist["data-core-metadata"] == "true"  # exists, no hash known
    assert sha1["data-core-metadata"] == "true"  # only an unusable hash
    assert "data-core-metadata" not in evil
    for attrs in (wheel, sdist, evil, sha1):
        assert attrs.get("data-dist-info-metadata") == attrs.get("data-core-metadata")


def test_html_core_metadata_uses_the_strongest_hash_without_sha256() -> None:
    file = FileEntry("demo-1.0.tar.gz", "u", {}, core_metadata={"md5": MD5, "sha512": SHA512})
    [(attrs, _)] = _Html(_html(_page(file))).anchors
    assert attrs["data-core-metadata"] == f"sha512={SHA512}"


def test_html_never_says_false_except_for_gpg_sig() -> None:
    text = _html()
    assert re.findall(r'([\w-]+)="false"', text) == ["data-gpg-sig"]


def test_html_provenance_and_gpg_sig() -> None:
    wheel, sdist, evil, _ = (attrs for attrs, _ in _Html(_html()).anchors)
    assert wheel["data-provenance"] == PROVENANCE
    assert "data-provenance" not in sdist
    assert wheel["data-gpg-sig"] == "false"
    assert sdist["data-gpg-sig"] == "true"
    assert "data-gpg-sig" not in evil


def test_html_project_status_only_when_set() -> None:
    meta = _Html(_html(_page(status="deprecated"))).meta
    assert meta["pypi:project-status"] == "deprecated"
    assert "pypi:project-status-reason" not in meta
    meta = _Html(_html(_page(status="archived", status_reason="moved"))).meta
    assert meta["pypi:project-status"] == "archived"
    assert meta["pypi:project-status-reason"] == "moved"


@pytest.mark.parametrize(
    ("filename", "segment"),
    [
        ("demo-1.0-py3-none-any.whl", "demo-1.0-py3-none-any.whl"),
        ("demo 1.0.tar.gz", "demo%201.0.tar.gz"),
        ("demo#1.0.tar.gz", "demo%231.0.tar.gz"),
        ("demo?1.0.tar.gz", "demo%3F1.0.tar.gz"),
        ("demo%1.0.tar.gz", "demo%251.0.tar.gz"),
        ("demo/1.0.tar.gz", "demo%2F1.0.tar.gz"),
        ("demo;1.0.tar.gz", "demo%3B1.0.tar.gz"),
        ('demo"1.0<.tar.gz', "demo%221.0%3C.tar.gz"),
        ("demo-1.0+local.tar.gz", "demo-1.0%2Blocal.tar.gz"),
        ("démo-1.0.tar.gz", "d%C3%A9mo-1.0.tar.gz"),
    ],
)
def test_file_url_is_prefix_plus_percent_encoded_filename(filename: str, segment: str) -> None:
    page = _page(FileEntry(filename, "u", {"sha256": SHA256}, size=1))
    [file] = _json(page)["files"]
    assert file["url"] == PREFIX + segment
    assert unquote(file["url"].rsplit("/", 1)[1]) == filename
    [(attrs, text)] = _Html(_html(page)).anchors
    assert attrs["href"] == f"{PREFIX}{segment}#sha256={SHA256}"
    assert text == filename


def test_output_is_utf8() -> None:
    page = _page(FileEntry("démo-1.0.tar.gz", "u", {}, yanked="über"))
    assert "über".encode() in render.project_html(page, PREFIX)
    assert "über".encode() in render.project_json(page, PREFIX)


# --- JSON project page ----------------------------------------------------------------------


def test_json_top_level() -> None:
    data = _json()
    assert list(data) == ["meta", "name", "files", "versions"]
    assert data["meta"] == {"api-version": "1.4", "_last-serial": 42}
    assert data["name"] == "demo"
    assert data["versions"] == ["0.7", "0.8", "0.9", "1.0"]
    assert len(data["files"]) == len(FILES)


def test_json_last_serial_only_when_known() -> None:
    assert _json(_page())["meta"] == {"api-version": "1.4"}


def test_json_project_status_only_when_set() -> None:
    assert "project-status" not in _json()
    assert _json(_page(status="deprecated"))["project-status"] == {"status": "deprecated"}
    data = _json(_page(status="archived", status_reason=EVIL))
    assert data["project-status"] == {"status": "archived", "reason": EVIL}


def test_json_file_keys() -> None:
    wheel, sdist, evil, sha1 = _json()["files"]
    assert wheel == {
        "filename": "demo-1.0-py3-none-any.whl",
        "url": PREFIX + "demo-1.0-py3-none-any.whl",
        "hashes": {"sha256": SHA256, "md5": MD5},
        "requires-python": ">=3.8,<4",
        "core-metadata": {"sha256": SHA256_META},
        "dist-info-metadata": {"sha256": SHA256_META},
        "yanked": False,
        "size": 1234,
        "upload-time": "2024-05-06T07:08:09.123456Z",
        "provenance": PROVENANCE,
        "gpg-sig": False,
    }
    assert sdist["core-metadata"] is True
    assert sdist["dist-info-metadata"] is True
    assert sdist["yanked"] is True  # an empty reason is a plain `true`
    assert sdist["upload-time"] == "2023-01-02T03:04:05Z"
    assert sdist["gpg-sig"] is True
    assert evil["hashes"] == {}  # required even when empty
    assert evil["yanked"] == EVIL
    assert evil["requires-python"] == "<4,>=3.6&\"'"
    assert evil["core-metadata"] is False
    assert evil["dist-info-metadata"] is False
    assert "upload-time" not in evil
    assert "gpg-sig" not in evil
    assert sha1["hashes"] == {"md5": MD5}  # no sha1, ever
    assert sha1["core-metadata"] is True
    assert sha1["requires-python"] is None


def test_json_never_emits_sha1() -> None:
    assert SHA1 not in render.project_json(PAGE, PREFIX).decode()


def test_json_size_only_when_known() -> None:
    page = _page(FileEntry("demo-1.0.tar.gz", "u", {}))
    assert "size" not in _json(page)["files"][0]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2024-01-02T03:04:05Z"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=dt.UTC), "2024-01-02T03:04:05.000007Z"),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-02T01:04:05Z",
        ),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05Z"),  # naive: taken as UTC
    ],
)
def test_json_upload_time_format(moment: dt.datetime, text: str) -> None:
    page = _page(FileEntry("demo-1.0.tar.gz", "u", {}, size=1, upload_time=moment))
    value = _json(page)["files"][0]["upload-time"]
    assert value == text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", value)


def test_json_provenance_key_on_every_file_from_1_3() -> None:
    files = _json()["files"]
    assert [file["provenance"] for file in files] == [PROVENANCE, None, None, None]


def test_json_provenance_key_only_when_set_before_1_3() -> None:
    unsized = FileEntry("demo-2.0.tar.gz", "u", {})
    page = _page(WHEEL, unsized)
    assert render.api_version(page) == "1.0"
    wheel, other = _json(page)["files"]
    assert wheel["provenance"] == PROVENANCE
    assert "provenance" not in other


def test_json_escaping_is_msgspec_json() -> None:
    page = _page(EVIL_FILE, status="archived", status_reason=EVIL)
    data = _json(page)
    assert data["files"][0]["filename"] == EVIL_FILE.filename
    assert data["project-status"]["reason"] == EVIL


# --- HTML and JSON agree ----------------------------------------------------------------------


def test_html_and_json_list_the_same_files_urls_hashes_yanked_and_metadata() -> None:
    anchors = _Html(_html()).anchors
    files = _json()["files"]
    assert len(anchors) == len(files)
    for (attrs, text), file in zip(anchors, files, strict=True):
        href = urlsplit(attrs["href"] or "")
        assert text == file["filename"]
        assert href._replace(fragment="").geturl() == file["url"]
        if href.fragment:
            algo, digest = href.fragment.split("=")
            assert file["hashes"][algo] == digest
        else:
            assert file["hashes"] == {}
        assert attrs.get("data-requires-python") == file["requires-python"]
        # yanked: true <-> data-yanked="", "r" <-> data-yanked="r", false <-> absent
        yanked = file["yanked"]
        expected_yanked = None if yanked is False else "" if yanked is True else yanked
        assert attrs.get("data-yanked") == expected_yanked
        # core-metadata: {"sha256": h} <-> "sha256=h", true <-> "true", false <-> absent
        metadata = file["core-metadata"]
        if metadata is False:
            assert "data-core-metadata" not in attrs
        elif metadata is True:
            assert attrs["data-core-metadata"] == "true"
        else:
            algo, digest = (attrs["data-core-metadata"] or "").split("=")
            assert metadata[algo] == digest
        assert attrs.get("data-dist-info-metadata") == attrs.get("data-core-metadata")
        assert file["dist-info-metadata"] == metadata
        assert attrs.get("data-provenance") == file.get("provenance")
        gpg = file.get("gpg-sig")
        assert attrs.get("data-gpg-sig") == (None if gpg is None else str(gpg).lower())


# --- Round trip through a real client library -------------------------------------------------


def test_json_round_trips_through_pypi_simple() -> None:
    page = _page(*FILES, status="archived", status_reason="moved", last_serial=42)
    parsed = pypi_simple.ProjectPage.from_json_data(_json(page))
    assert parsed.project == "demo"
    assert parsed.repository_version == "1.4"
    assert parsed.last_serial == "42"
    assert parsed.versions == ["1.0"]
    assert parsed.status == pypi_simple.ProjectStatus.ARCHIVED
    assert parsed.status_reason == "moved"
    assert [p.filename for p in parsed.packages] == [f.filename for f in FILES]
    json_files = _json(page)["files"]
    for package, file, json_file in zip(parsed.packages, FILES, json_files, strict=True):
        assert package.url == json_file["url"]
        assert package.digests == {k: v for k, v in file.hashes.items() if k != "sha1"}
        assert package.requires_python == file.requires_python
        assert package.is_yanked == (file.yanked is not None)
        assert package.yanked_reason == (file.yanked or None)
        assert package.has_metadata == (file.core_metadata is not None)
        assert package.size == file.size
        assert package.upload_time == file.upload_time
        assert package.provenance_url == file.provenance
        assert package.has_sig == file.gpg_sig
    assert parsed.packages[0].metadata_digests == {"sha256": SHA256_META}
    assert parsed.packages[1].metadata_digests == {}
    assert parsed.packages[2].metadata_digests is None


def test_html_round_trips_through_pypi_simple() -> None:
    page = _page(*FILES, status="archived", status_reason=EVIL)
    parsed = pypi_simple.ProjectPage.from_html("demo", render.project_html(page, PREFIX))
    assert parsed.repository_version == "1.4"
    assert parsed.status == pypi_simple.ProjectStatus.ARCHIVED
    assert parsed.status_reason == EVIL
    assert [p.filename for p in parsed.packages] == [f.filename for f in FILES]
    json_files = _json(page)["files"]
    for package, file, json_file in zip(parsed.packages, FILES, json_files, strict=True):
        assert package.url == json_file["url"]
        assert package.requires_python == file.requires_python
        assert package.is_yanked == (file.yanked is not None)
        assert package.yanked_reason == file.yanked
        assert package.has_metadata == (file.core_metadata is not None or None)
        assert package.provenance_url == file.provenance
        assert package.has_sig == file.gpg_sig
    assert parsed.packages[0].digests == {"sha256": SHA256}
    assert parsed.packages[1].digests == {"sha512": SHA512}
    assert parsed.packages[2].digests == {}
    assert parsed.packages[3].digests == {"md5": MD5}
    assert parsed.packages[0].metadata_digests == {"sha256": SHA256_META}
    assert parsed.packages[1].metadata_digests == {}
    assert parsed.packages[2].metadata_digests is None


# --- Project list -------------------------------------------------------------------------------

NAMES = ProjectList(names=("Foo.Bar_baz", "a--b", 'x<y>&"z', "plain"), last_serial=7)


def test_index_html() -> None:
    text = render.index_html(NAMES, "/pypi/simple/").decode()
    assert text.startswith("<!DOCTYPE html>\n")
    parsed = _Html(text)
    assert parsed.meta["pypi:repository-version"] == "1.4"
    assert parsed.anchors == [
        ({"href": "/pypi/simple/foo-bar-baz/"}, "Foo.Bar_baz"),
        ({"href": "/pypi/simple/a-b/"}, "a--b"),
        ({"href": "/pypi/simple/x%3Cy%3E%26%22z/"}, 'x<y>&"z'),
        ({"href": "/pypi/simple/plain/"}, "plain"),
    ]
    assert "<y>" not in text
    assert text.count("</a><br />\n") == 4


@pytest.mark.parametrize(
    "names",
    [
        ("Foo.Bar_baz", "a--b", "A._-b", "plain", "x_-_.y", "9"),  # every name plain
        ("Foo.Bar_baz", "a\nb", "plain"),  # a line break in a name
        ("Foo.Bar_baz", "é"),  # outside PEP 508's alphabet
        ("",),
        (),
    ],
)
def test_index_html_of_plain_names_is_the_per_name_rendering(names: tuple[str, ...]) -> None:
    """Lists of valid names skip escaping and normalize in bulk: nothing may change."""
    rendered = render.index_html(ProjectList(names=names), "/pypi/simple/").decode()
    entries = [
        f'<a href="/pypi/simple/{render._name_segment(normalize(n))}/">{escape(n)}</a>'
        for n in names
    ]
    assert rendered.split("<body>\n", 1)[1].removesuffix("  </body>\n</html>\n") == "".join(
        f"{entry}<br />\n" for entry in entries
    )


def test_index_size_is_about_the_html_size() -> None:
    names = ProjectList(names=tuple(f"Project_{i}.Tools" for i in range(1000)))
    size = len(render.index_html(names, "/pypi/simple/"))
    assert 0.9 * size < render.index_size(names, "/pypi/simple/") < 1.1 * size


def test_index_json() -> None:
    data = json.loads(render.index_json(NAMES, "/pypi/simple/"))
    assert data == {
        "meta": {"api-version": "1.4", "_last-serial": 7},
        "projects": [{"name": name} for name in NAMES.names],
    }
    empty = json.loads(render.index_json(ProjectList(names=()), "/pypi/simple/"))
    assert empty == {"meta": {"api-version": "1.4"}, "projects": []}


def test_index_round_trips_through_pypi_simple() -> None:
    from_json = pypi_simple.IndexPage.from_json_data(
        json.loads(render.index_json(NAMES, "/pypi/simple/"))
    )
    from_html = pypi_simple.IndexPage.from_html(render.index_html(NAMES, "/pypi/simple/"))
    assert from_json.projects == from_html.projects == list(NAMES.names)
    assert from_json.last_serial == "7"
