"""Upstream Simple Repository pages (PEP 503 HTML, PEP 691 JSON) into the canonical model.

Pure: bytes in, `models` out, `MalformedPage` for anything we cannot trust. Both formats go
through the same per-file filtering so an HTML upstream and a JSON upstream of one project
produce equal `ProjectPage`s. Bad entries (unsafe filename, non-HTTP URL, duplicate) are
skipped rather than failing the page: one odd file must not hide a whole project.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Annotated, TypeVar
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import msgspec

from mypypi2 import names
from mypypi2.errors import MalformedPage
from mypypi2.models import ALLOWED_HASHES, FileEntry, ProjectList, ProjectPage

_JSON = "application/vnd.pypi.simple.v1+json"
_HTML = ("application/vnd.pypi.simple.v1+html", "text/html")
_HEX = re.compile(r"[0-9a-fA-F]+")
_T = TypeVar("_T")


def parse_project_page(body: bytes, content_type: str, page_url: str, project: str) -> ProjectPage:
    text = _decode(body)
    if _is_json(content_type):
        return _page_from_json(_decode_json(text, _JsonPage), page_url, project)
    parser = _feed(text)
    return _page_from_html(parser, page_url, project)


def parse_project_list(body: bytes, content_type: str) -> ProjectList:
    text = _decode(body)
    if _is_json(content_type):
        listing = _decode_json(text, _JsonList)
        _check_api_version(listing.meta.api_version)
        serial = listing.meta.last_serial
        return ProjectList(names=_unique(p.name for p in listing.projects), last_serial=serial)
    parser = _feed(text)
    _check_html_version(parser)
    return ProjectList(names=_unique(t.strip() for _, t in parser.anchors if t.strip()))


# --- shared -------------------------------------------------------------------------------


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == _JSON:
        return True
    if media_type in _HTML:
        return False
    raise MalformedPage(f"unexpected Content-Type {content_type!r}")


def _decode(body: bytes) -> str:
    if not body:
        raise MalformedPage("empty body")
    try:
        # Indexes serve UTF-8 (PEP 503 / 691); a BOM is tolerated, other charsets are not.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedPage(f"body is not UTF-8: {exc}") from exc
    # No index has a use for NUL, and PostgreSQL text cannot hold it, raw or JSON-escaped.
    if "\x00" in text or "\\u0000" in text.lower():
        raise MalformedPage("body contains a NUL character")
    return text


def _check_api_version(version: str) -> None:
    # PEP 629: a major version we do not know means we cannot interpret the page.
    major = version.split(".", 1)[0].strip()
    if major != "1":
        raise MalformedPage(f"unsupported api-version {version!r}")


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _filter_hashes(hashes: dict[str, str]) -> dict[str, str]:
    # Clients such as uv reject unknown algorithms, so anything else is dropped, not failed.
    kept: dict[str, str] = {}
    for algo, digest in hashes.items():
        algo = algo.lower()
        if algo in ALLOWED_HASHES and _HEX.fullmatch(digest):
            kept[algo] = digest.lower()
    return kept


def _resolve(href: str, page_url: str) -> tuple[str, str] | None:
    """(absolute URL without fragment, fragment), or None when it is not an HTTP URL."""
    try:
        url, fragment = urldefrag(urljoin(page_url, href))
    except ValueError:  # e.g. an unbalanced "[" read as an IPv6 host
        return None
    return (url, fragment) if urlsplit(url).scheme in ("http", "https") else None


def _build_page(
    project: str,
    files: Iterable[FileEntry],
    upstream_versions: Iterable[str] = (),
    status: str | None = None,
    status_reason: str | None = None,
    last_serial: int | None = None,
) -> ProjectPage:
    kept: dict[str, FileEntry] = {}
    for entry in files:
        # First occurrence wins: the filename is our storage key and URL segment.
        if names.is_safe_filename(entry.filename) and entry.filename not in kept:
            kept[entry.filename] = entry
    from_files = (names.version_from_filename(f, project) for f in kept)
    versions = _unique([*upstream_versions, *(v for v in from_files if v is not None)])
    return ProjectPage(
        name=project,
        files=tuple(kept.values()),
        versions=versions,
        status=status,
        status_reason=status_reason,
        last_serial=last_serial,
    )


# --- JSON (PEP 691, 700, 714, 740, 792) ---------------------------------------------------


class _Meta(msgspec.Struct, rename="kebab"):
    api_version: str
    last_serial: int | None = msgspec.field(default=None, name="_last-serial")


class _JsonFile(msgspec.Struct, rename="kebab"):
    filename: str
    url: str
    hashes: dict[str, str] = msgspec.field(default_factory=dict)
    requires_python: str | None = None
    core_metadata: bool | dict[str, str] | None = None
    dist_info_metadata: bool | dict[str, str] | None = None
    yanked: bool | str = False
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    upload_time: str | None = None
    provenance: str | None = None
    gpg_sig: bool | None = None


class _Status(msgspec.Struct):
    status: str | None = None
    reason: str | None = None


class _JsonPage(msgspec.Struct, rename="kebab"):
    meta: _Meta
    files: list[_JsonFile]
    versions: list[str] | None = None
    project_status: _Status | None = None
    last_serial: int | None = msgspec.field(default=None, name="_last-serial")


class _JsonProject(msgspec.Struct):
    name: str


class _JsonList(msgspec.Struct):
    meta: _Meta
    projects: list[_JsonProject]


def _decode_json(text: str, kind: type[_T]) -> _T:
    try:
        return msgspec.json.decode(text, type=kind)
    except msgspec.DecodeError as exc:  # also covers ValidationError
        raise MalformedPage(f"invalid JSON page: {exc}") from exc


def _page_from_json(page: _JsonPage, page_url: str, project: str) -> ProjectPage:
    _check_api_version(page.meta.api_version)
    status = page.project_status or _Status()
    serial = page.meta.last_serial if page.meta.last_serial is not None else page.last_serial
    files = (f for f in (_file_from_json(raw, page_url) for raw in page.files) if f)
    return _build_page(project, files, page.versions or (), status.status, status.reason, serial)


def _file_from_json(raw: _JsonFile, page_url: str) -> FileEntry | None:
    resolved = _resolve(raw.url, page_url)
    if resolved is None:
        return None
    # PEP 714: the legacy key only counts when the new one is absent.
    metadata = raw.core_metadata if raw.core_metadata is not None else raw.dist_info_metadata
    return FileEntry(
        filename=raw.filename,
        url=resolved[0],
        hashes=_filter_hashes(raw.hashes),
        requires_python=raw.requires_python or None,
        yanked=_json_yanked(raw.yanked),
        core_metadata=_filter_hashes(metadata) if isinstance(metadata, dict) else _flag(metadata),
        size=raw.size,
        upload_time=None if raw.upload_time is None else _parse_time(raw.upload_time),
        provenance=raw.provenance or None,
        gpg_sig=raw.gpg_sig,
    )


def _json_yanked(yanked: bool | str) -> str | None:
    # PEP 592 allows `true` or a reason; an empty reason still means yanked.
    if isinstance(yanked, str):
        return yanked
    return "" if yanked else None


def _flag(metadata: bool | None) -> dict[str, str] | None:
    return {} if metadata else None


def _parse_time(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedPage(f"invalid upload-time {value!r}") from exc
    # PEP 700 mandates UTC; a naive value is read as UTC rather than local time.
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


# --- HTML (PEP 503, 592, 629, 714, 740, 792) ----------------------------------------------


class _Collector(HTMLParser):
    """Records anchors (attributes and text) and `<meta name content>` pairs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.meta: dict[str, str] = {}
        self.saw_markup = False
        self._open: tuple[dict[str, str | None], list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.saw_markup = True
        if tag == "a":
            self._close_anchor()
            self._open = (dict(attrs), [])
        elif tag == "meta":
            found = dict(attrs)
            name, content = found.get("name"), found.get("content")
            if name is not None and content is not None:
                self.meta.setdefault(name.lower(), content)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close_anchor()

    def handle_decl(self, decl: str) -> None:
        self.saw_markup = True

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[1].append(data)

    def close(self) -> None:
        super().close()
        self._close_anchor()  # an `<a>` left open at the end still names a file

    def _close_anchor(self) -> None:
        if self._open is not None:
            self.anchors.append((self._open[0], "".join(self._open[1])))
            self._open = None


def _feed(text: str) -> _Collector:
    # Without this a JSON or plain-text body would parse as an HTML page with no files.
    if not text.lstrip().startswith("<"):
        raise MalformedPage("body is not HTML")
    parser = _Collector()
    try:
        parser.feed(text)
    except AssertionError as exc:  # _markupbase asserts on some malformed declarations
        raise MalformedPage(f"malformed HTML: {exc}") from exc
    # HTMLParser keeps an incomplete tag in rawdata until close(), which would drop it silently.
    if "<" in parser.rawdata:
        raise MalformedPage("HTML ends inside an unterminated tag")
    parser.close()
    if not parser.saw_markup:
        raise MalformedPage("body is not HTML")
    return parser


def _check_html_version(parser: _Collector) -> None:
    version = parser.meta.get("pypi:repository-version")
    if version is not None:
        _check_api_version(version)


def _page_from_html(parser: _Collector, page_url: str, project: str) -> ProjectPage:
    _check_html_version(parser)
    files: list[FileEntry] = []
    for attrs, _text in parser.anchors:
        href = attrs.get("href")
        if href is None:
            raise MalformedPage("anchor without href")
        entry = _file_from_html(attrs, href, page_url)
        if entry is not None:
            files.append(entry)
    return _build_page(
        project,
        files,
        status=parser.meta.get("pypi:project-status"),
        status_reason=parser.meta.get("pypi:project-status-reason"),
    )


def _file_from_html(attrs: dict[str, str | None], href: str, page_url: str) -> FileEntry | None:
    resolved = _resolve(href, page_url)
    if resolved is None:
        return None
    url, fragment = resolved
    algo, _, digest = fragment.partition("=")
    metadata_key = (
        "data-core-metadata" if "data-core-metadata" in attrs else "data-dist-info-metadata"
    )
    return FileEntry(
        filename=unquote(urlsplit(url).path.rsplit("/", 1)[-1]),
        url=url,
        hashes=_filter_hashes({algo: digest}) if digest else {},
        requires_python=attrs.get("data-requires-python") or None,
        # A valueless attribute (`data-yanked`) means yanked without a reason (PEP 592).
        yanked=(attrs["data-yanked"] or "") if "data-yanked" in attrs else None,
        core_metadata=_html_metadata(attrs.get(metadata_key)),
        provenance=attrs.get("data-provenance") or None,
        gpg_sig={"true": True, "false": False}.get((attrs.get("data-gpg-sig") or "").lower()),
    )


def _html_metadata(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    value = value.strip()
    if value.lower() == "true":
        return {}
    if "=" in value:
        # The file exists even when its hash uses an algorithm we drop (PEP 658).
        algo, _, digest = value.partition("=")
        return _filter_hashes({algo: digest})
    return None
