"""PEP 691 JSON pages and project lists (with PEP 700, 714, 740, 792 fields).

Every part of a page (meta, files, versions, status) is decoded on its own, so a part we
cannot read costs only itself. `files` is decoded in one pass into Structs whose fields are
all `object`: unknown keys are skipped and odd types reach `_file_from_json`, which keeps
what it can. Only a value msgspec cannot represent at all (a number beyond a float, a file
that is not an object) sends the list back to a slower pass, one entry at a time.

Leniency at the page level, decided here: a missing or unreadable `meta`, or a missing or
non-string `api-version`, is read as api-version 1.0 (a page with `files` is usable without
it); a present api-version with a major other than 1 is refused (PEP 629).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TypeVar

import msgspec

from mypypi2.errors import MalformedPage
from mypypi2.models import FileEntry, ProjectList, ProjectPage
from mypypi2.upstream.parse_rules import (
    NUL,
    DropLog,
    Resolver,
    bigint,
    build_page,
    check_api_version,
    filter_hashes,
    parse_upload_time,
    provenance_url,
    serial_from,
    storable_text,
    unique,
)

_NULL = msgspec.Raw(b"null")
_BOM = b"\xef\xbb\xbf"
_T = TypeVar("_T")


class _Page(msgspec.Struct, rename="kebab"):
    files: msgspec.Raw
    meta: msgspec.Raw = _NULL
    versions: msgspec.Raw = _NULL
    project_status: msgspec.Raw = _NULL
    last_serial: msgspec.Raw = msgspec.field(default=_NULL, name="_last-serial")


class _Meta(msgspec.Struct, rename="kebab"):
    api_version: object = None
    last_serial: msgspec.Raw = msgspec.field(default=_NULL, name="_last-serial")


class _Status(msgspec.Struct):
    status: object = None
    reason: object = None


class _File(msgspec.Struct, rename="kebab"):
    filename: object = None
    url: object = None
    hashes: object = None
    requires_python: object = None
    core_metadata: object = None
    dist_info_metadata: object = None
    yanked: object = None
    size: object = None
    upload_time: object = None
    provenance: object = None
    gpg_sig: object = None


class _List(msgspec.Struct):
    projects: msgspec.Raw
    meta: msgspec.Raw = _NULL


class _Project(msgspec.Struct, gc=False):
    name: object = None


class _NamedProject(msgspec.Struct, gc=False):
    """The usual shape of a list entry, checked by msgspec itself (no Python per name)."""

    name: str


_PAGE = msgspec.json.Decoder(_Page)
_META = msgspec.json.Decoder(_Meta)
_STATUS = msgspec.json.Decoder(_Status)
_FILES = msgspec.json.Decoder(list[_File])
_FILE = msgspec.json.Decoder(_File)
_LIST = msgspec.json.Decoder(_List)
_PROJECTS = msgspec.json.Decoder(list[_Project])
_NAMED_PROJECTS = msgspec.json.Decoder(list[_NamedProject])
_PROJECT = msgspec.json.Decoder(_Project)
_ENTRIES = msgspec.json.Decoder(list[msgspec.Raw])
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ANY = msgspec.json.Decoder(object)


def parse_page(body: bytes, page_url: str, project: str) -> ProjectPage:
    drops = DropLog(f"page of {project} at {page_url}")
    top = _decode_top(body, _PAGE)
    serial = _read_meta(top.meta)
    if serial is None:
        serial = serial_from(_decode_or(_ANY, top.last_serial, None))
    versions = _decode_or(_ANY, top.versions, None)
    status = _decode_or(_STATUS, top.project_status, _Status())
    files = _decode_each(top.files, _FILES, _FILE, drops, "files")
    resolver = Resolver(page_url)
    entries = (e for e in (_file_from_json(f, resolver, drops) for f in files) if e is not None)
    return build_page(
        project,
        entries,
        drops,
        [v for v in versions if storable_text(v)] if isinstance(versions, list) else (),
        storable_text(status.status),
        storable_text(status.reason),
        serial,
    )


class JsonListParser:
    """A JSON project list: the bytes are kept as they come, decoded once on `close()`.

    The body and the decoded entries are freed before the names are made unique, so the
    peak is about the body plus twice the names, not their sum."""

    def __init__(self) -> None:
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._body += chunk

    def close(self) -> ProjectList:
        drops = DropLog("project list")
        names, serial = _list_names(self._body, drops)
        self._body = bytearray()
        drops.emit()
        return ProjectList(names=unique(names), last_serial=serial)


def _list_names(body: bytearray, drops: DropLog) -> tuple[list[str], int | None]:
    top = _decode_top(body, _LIST)
    serial = _read_meta(top.meta)
    names = _plain_names(top.projects)
    if names is not None:
        return names, serial
    projects = _decode_each(top.projects, _PROJECTS, _PROJECT, drops, "projects")
    names = [name for p in projects if (name := storable_text(p.name)) is not None]
    if len(names) < len(projects):
        for project in projects:
            if storable_text(project.name) is None:
                drops.drop("the whole entry", project.name, "name is not a string of text")
    return names, serial


def _plain_names(raw: msgspec.Raw) -> list[str] | None:
    """Every name, when every entry has a name that is a storable string (the common case:
    checked in bulk, 700,000 names cost a third of the per-entry pass); None otherwise."""
    try:
        names = [project.name for project in _NAMED_PROJECTS.decode(raw)]
    except msgspec.DecodeError:
        return None
    if "" in names or NUL in "".join(names):
        return None
    return names


def _decode_top(
    body: bytes | bytearray, decoder: msgspec.json.Decoder[_T], retried: bool = False
) -> _T:
    if not body:
        raise MalformedPage("empty body")
    view = memoryview(body)
    if view[:3] == _BOM:
        view = view[3:]  # tolerated, as by any JSON reader of a UTF-8 text
    try:
        return decoder.decode(view)
    except msgspec.DecodeError as exc:  # also covers ValidationError
        if not retried and _SURROGATE.search(view):
            return _decode_top(_replace_lone_surrogates(bytes(view)), decoder, retried=True)
        try:
            str(view, "utf-8")
        except UnicodeDecodeError as not_utf8:
            raise MalformedPage(f"body is not UTF-8: {not_utf8}") from exc
        raise MalformedPage(f"invalid JSON page: {exc}") from exc


# An escaped backslash, a valid surrogate pair, or a lone surrogate, in the order a JSON
# reader meets them (so `\\ud800`, a backslash then text, is left alone).
_SURROGATE_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _replace_lone_surrogates(body: bytes) -> bytes:
    # Python's json.dumps writes a lone surrogate as its escape; msgspec refuses the page.
    # U+FFFD keeps the rest of it, as HTML parsing does for `&#xd800;`.
    return _SURROGATE_ESCAPES.sub(
        lambda m: m[0] if m[0] == b"\\\\" or len(m[0]) == 12 else b"\\ufffd", body
    )


def _read_meta(raw: msgspec.Raw) -> int | None:
    """The serial in meta, after refusing an api-version we cannot interpret."""
    meta = _decode_or(_META, raw, _Meta())
    version = meta.api_version
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)  # `"api-version": 1.1` still says which major it is
    if isinstance(version, str):
        check_api_version(version)
    return serial_from(_decode_or(_ANY, meta.last_serial, None))


def _decode_or(decoder: msgspec.json.Decoder[_T], raw: msgspec.Raw, default: _T) -> _T:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError:
        return default


def _decode_each(
    raw: msgspec.Raw,
    fast: msgspec.json.Decoder[list[_T]],
    one: msgspec.json.Decoder[_T],
    drops: DropLog,
    what: str,
) -> list[_T]:
    try:
        return fast.decode(raw)
    except msgspec.DecodeError:
        pass
    try:
        entries = _ENTRIES.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedPage(f"invalid JSON page: `{what}` is not a list") from exc
    kept: list[_T] = []
    for index, entry in enumerate(entries):
        try:
            kept.append(one.decode(entry))
        except msgspec.DecodeError as exc:
            salvaged = _salvage(entry, one, drops, f"{what}[{index}]")
            if salvaged is None:
                drops.drop("the whole entry", f"{what}[{index}]", str(exc))
            else:
                kept.append(salvaged)
    return kept


def _salvage(
    entry: msgspec.Raw, one: msgspec.json.Decoder[_T], drops: DropLog, where: str
) -> _T | None:
    """An object entry without the values msgspec cannot hold (1e400): as if they were absent.

    Every Struct field is `object`, so what is left always converts."""
    try:
        fields = _FIELDS.decode(entry)
    except msgspec.DecodeError:
        return None  # not an object at all
    readable: dict[str, object] = {}
    for key, raw in fields.items():
        try:
            readable[key] = _ANY.decode(raw)
        except msgspec.DecodeError as exc:
            drops.drop(key, where, str(exc))
    try:
        salvaged: _T = msgspec.convert(readable, one.type)
    except msgspec.ValidationError:
        return None
    return salvaged


def _file_from_json(raw: _File, resolver: Resolver, drops: DropLog) -> FileEntry | None:
    filename = raw.filename
    if not isinstance(filename, str):
        drops.drop("the whole entry", filename, "filename is not a string")
        return None
    if not isinstance(raw.url, str):
        drops.drop("the whole entry", filename, f"url {raw.url!r} is not a string")
        return None
    resolved = resolver.resolve(raw.url)
    if resolved is None:
        drops.drop("the whole entry", filename, f"url {raw.url!r} is not an HTTP URL")
        return None
    return FileEntry(
        filename=filename,
        url=resolved[0],
        hashes=_hashes(raw.hashes, drops, filename),
        requires_python=_text_field(raw.requires_python, drops, filename, "requires-python"),
        yanked=_yanked(raw.yanked, drops, filename),
        core_metadata=_core_metadata(raw, drops, filename),
        size=_size(raw.size, drops, filename),
        upload_time=_upload_time(raw.upload_time, drops, filename),
        provenance=provenance_url(
            _text_field(raw.provenance, drops, filename, "provenance"), resolver, drops, filename
        ),
        gpg_sig=raw.gpg_sig if isinstance(raw.gpg_sig, bool) else None,
    )


def _text_field(value: object, drops: DropLog, filename: str, what: str) -> str | None:
    text = storable_text(value)
    if text is None and value is not None and value != "":
        drops.drop(what, filename, f"{value!r} is not a string of text")
    return text


def _hashes(value: object, drops: DropLog, filename: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        drops.drop("hashes", filename, f"{value!r} is not an object")
        return {}
    return filter_hashes(value.items(), drops, filename, "hashes")


def _yanked(value: object, drops: DropLog, filename: str) -> str | None:
    # PEP 592: `true` or a reason; an empty reason still means yanked.
    if isinstance(value, str):
        reason = storable_text(value)
        if reason is None and value:
            drops.drop("yanked reason", filename, f"{value!r} is not a string of text")
        return reason or ""
    if value is not None and not isinstance(value, bool):
        # 1 / 0 and the like: yanked when truthy, with no reason we could show.
        drops.drop("yanked reason", filename, f"{value!r} is neither a boolean nor a string")
    return "" if value else None


def _core_metadata(raw: _File, drops: DropLog, filename: str) -> dict[str, str] | None:
    # PEP 714: the legacy key only counts when the new one is absent (or unreadable).
    for what, value in (
        ("core-metadata", raw.core_metadata),
        ("dist-info-metadata", raw.dist_info_metadata),
    ):
        if isinstance(value, bool):
            return {} if value else None
        if isinstance(value, dict):
            return filter_hashes(value.items(), drops, filename, what)
        if value is not None:
            drops.drop(what, filename, f"{value!r} is neither a boolean nor an object")
    return None


def _size(value: object, drops: DropLog, filename: str) -> int | None:
    size = bigint(value)
    if size is None and value is not None:
        drops.drop("size", filename, f"{value!r} is not a size")
    return size


def _upload_time(value: object, drops: DropLog, filename: str) -> dt.datetime | None:
    if value is None:
        return None
    parsed = parse_upload_time(value) if isinstance(value, str) else None
    if parsed is None:
        drops.drop("upload-time", filename, f"{value!r} is not an ISO 8601 time")
    return parsed
