"""Page model -> PEP 503 HTML or PEP 691 JSON bytes (pure).

Both renderers read the same `ProjectPage` and make the same choices (file URL, hashes,
yanked, core metadata), so the two representations of a page always agree, as PEP 691
requires. Every upstream string is untrusted: HTML escapes all of them, JSON lets msgspec
encode them.

A 2,000-file page renders in one pass: strings are collected in a list, joined and
encoded once; JSON goes through msgspec Structs (faster than dicts, and `UNSET` omits the
optional keys).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from html import escape
from urllib.parse import quote

import msgspec
from msgspec import UNSET, UnsetType

from mypypi2.models import ALLOWED_HASHES, FileEntry, ProjectList, ProjectPage
from mypypi2.names import normalize

# The newest API version we implement. 1.2 (PEP 708) is skipped on purpose: its keys are
# never emitted, and 1.3/1.4 add only optional keys, so a 1.1-conformant page is 1.4-conformant.
_LATEST = "1.4"
# Before PEP 700 (1.1), `size` was not required; this is the honest claim otherwise.
_BASELINE = "1.0"

# PEP 691 / PEP 629: the project list gained nothing through 1.4 (PEP 700's `versions`,
# `size`, `upload-time` and PEP 792's status are project-page keys), so it always conforms
# to the newest version.
_LIST_API_VERSION = _LATEST

_ALLOWED = frozenset(ALLOWED_HASHES)
# A project list whose names, one a line, contain nothing else renders without escaping.
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9._\n-]")
# PEP 503 normalization of such names: `_` and `.` become `-`, then runs of `-` one.
_SEPARATORS_TO_DASH = str.maketrans("_.", "--")
_NAMES_PER_CHUNK = 10_000
# One hash goes in an HTML fragment or a metadata attribute (PEP 503 / PEP 658): sha256 as
# everybody expects, else the strongest available. Never sha1: uv rejects it.
_FRAGMENT_PREFERENCE = ("sha256", "sha512", "sha384", "blake2b", "md5")


class _Meta(msgspec.Struct, rename={"api_version": "api-version", "last_serial": "_last-serial"}):
    api_version: str
    last_serial: int | UnsetType = UNSET  # keys starting with `_` are ours (PEP 691)


class _Status(msgspec.Struct):
    status: str
    reason: str | UnsetType = UNSET


class _File(msgspec.Struct, rename="kebab"):
    filename: str
    url: str
    hashes: dict[str, str]  # required even when empty: uv fails without it
    requires_python: str | None
    core_metadata: bool | dict[str, str]
    dist_info_metadata: bool | dict[str, str]  # PEP 714: legacy alias, same value
    yanked: bool | str
    size: int | UnsetType = UNSET
    upload_time: str | UnsetType = UNSET
    provenance: str | UnsetType | None = UNSET
    gpg_sig: bool | UnsetType = UNSET


class _Project(msgspec.Struct, rename="kebab"):
    meta: _Meta
    name: str
    files: list[_File]
    versions: tuple[str, ...]
    project_status: _Status | UnsetType = UNSET


class _ProjectName(msgspec.Struct):
    name: str


class _Index(msgspec.Struct):
    meta: _Meta
    projects: list[_ProjectName]


_encoder = msgspec.json.Encoder()


def api_version(page: ProjectPage) -> str:
    """The newest API version whose required keys this page really has.

    PEP 700 (1.1) makes `versions` and every file's `size` required; we always emit
    `versions`, and `size` whenever it is known, so a page with every size known is
    "1.4" (1.3's `provenance` and 1.4's `project-status` are optional) and any other
    page honestly stays "1.0".

    HTML advertises the same value. PEP 700's additions are JSON-only, so HTML could claim
    "1.4" unconditionally; but HTML and JSON are two representations of one resource
    (PEP 691), a lower claim is never wrong (clients ignore data they do not know), and
    one function keeps a single source of truth.
    """
    return _LATEST if all(file.size is not None for file in page.files) else _BASELINE


def project_html(page: ProjectPage, files_prefix: str) -> bytes:
    name = escape(page.name)
    parts = [
        "<!DOCTYPE html>\n<html>\n  <head>\n",
        f'    <meta name="pypi:repository-version" content="{api_version(page)}">\n',
    ]
    if page.status is not None:  # PEP 792
        parts.append(f'    <meta name="pypi:project-status" content="{escape(page.status)}">\n')
        if page.status_reason is not None:
            parts.append(
                '    <meta name="pypi:project-status-reason" '
                f'content="{escape(page.status_reason)}">\n'
            )
    parts.append(f"    <title>Links for {name}</title>\n  </head>\n  <body>\n")
    parts.append(f"    <h1>Links for {name}</h1>\n")
    for file in page.files:
        parts.append(_anchor(file, files_prefix))
    parts.append("  </body>\n</html>\n")
    return "".join(parts).encode()


def project_json(page: ProjectPage, files_prefix: str) -> bytes:
    version = api_version(page)
    # PEP 740 (1.3): a page claiming 1.3+ carries `provenance` on every file (null when
    # unknown); an older claim carries it only where known.
    always_provenance = version != _BASELINE
    files = [_json_file(file, files_prefix, always_provenance) for file in page.files]
    status: _Status | UnsetType = UNSET
    if page.status is not None:
        status = _Status(page.status, UNSET if page.status_reason is None else page.status_reason)
    document = _Project(
        meta=_meta(version, page.last_serial),
        name=page.name,
        files=files,
        versions=page.versions,
        project_status=status,
    )
    return _encoder.encode(document)


def index_html(projects: ProjectList, projects_prefix: str) -> bytes:
    return b"".join(index_html_chunks(projects, projects_prefix))


def index_html_chunks(projects: ProjectList, projects_prefix: str) -> Iterator[bytes]:
    """`index_html` in pieces of a few thousand names: a list of 700,000 is written to the
    store without its 47 MB (and 700,000 strings at once) in memory."""
    yield (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{_LIST_API_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
    ).encode()
    prefix = escape(projects_prefix)
    names = projects.names
    for start in range(0, len(names), _NAMES_PER_CHUNK):
        yield _anchors(names[start : start + _NAMES_PER_CHUNK], prefix).encode()
    yield b"  </body>\n</html>\n"


def _anchors(names: tuple[str, ...], prefix: str) -> str:
    # PEP 503: the href is the normalized name, the text the name as displayed.
    plain = "\n".join(names)
    # One line per name: no name holds a line break of its own.
    if plain.count("\n") == len(names) - 1 and not _NOT_PLAIN.search(plain):
        # Every name is in PEP 508's alphabet (the whole public index, in practice): nothing
        # to escape or quote, and all of them normalize in two passes over one string
        # instead of a call per name (700,000 names: a tenth of the time).
        hrefs = plain.lower().translate(_SEPARATORS_TO_DASH)
        while "--" in hrefs:
            hrefs = hrefs.replace("--", "-")
        return "".join(
            [
                f'<a href="{prefix}{href}/">{display}</a><br />\n'
                for href, display in zip(hrefs.split("\n"), names, strict=True)
            ]
        )
    parts = []
    for display in names:
        href = _name_segment(normalize(display))
        parts.append(f'<a href="{prefix}{escape(href)}/">{escape(display)}</a><br />\n')
    return "".join(parts)


def index_json(projects: ProjectList, projects_prefix: str) -> bytes:
    # PEP 691 lists names only: `projects_prefix` matters to HTML, where links are the data.
    document = _Index(
        meta=_meta(_LIST_API_VERSION, projects.last_serial),
        projects=[_ProjectName(name) for name in projects.names],
    )
    return _encoder.encode(document)


def index_json_chunks(projects: ProjectList, projects_prefix: str) -> Iterator[bytes]:
    """`index_json`, byte for byte, in pieces (as `index_html_chunks`)."""
    empty = _encoder.encode(
        _Index(meta=_meta(_LIST_API_VERSION, projects.last_serial), projects=[])
    )
    head, tail = empty[:-2], empty[-2:]  # `...,"projects":[` and `]}`
    yield head
    names = projects.names
    for start in range(0, len(names), _NAMES_PER_CHUNK):
        batch = _encoder.encode([_ProjectName(n) for n in names[start : start + _NAMES_PER_CHUNK]])
        yield (b"," if start else b"") + batch[1:-1]
    yield tail


def index_size(projects: ProjectList, projects_prefix: str) -> int:
    """About the size of `index_html` (the larger rendering), without rendering it."""
    names = projects.names
    return 2 * sum(map(len, names)) + len(names) * (len(projects_prefix) + 22)


def project_size(page: ProjectPage, files_prefix: str) -> int:
    """About the size of the larger rendering of `page` (JSON, with every key), without
    rendering it: the filename twice, the prefix, a sha256 and the keys around them."""
    per_file = len(files_prefix) + 400
    return sum(2 * len(file.filename) + per_file for file in page.files)


def _meta(version: str, last_serial: int | None) -> _Meta:
    return _Meta(version, UNSET if last_serial is None else last_serial)


def _file_url(file: FileEntry, files_prefix: str) -> str:
    # One path segment ending with the filename: `/`, `#`, `?`, `%`, `;` and spaces must not
    # be read as URL syntax (pip and pypi_simple take the filename from the last segment).
    return files_prefix + quote(file.filename, safe="")


def _name_segment(normalized: str) -> str:
    # Valid names normalize to [a-z0-9-], nothing to encode: skip `quote`, a third of the
    # cost of a list of several hundred thousand names.
    if normalized.isascii() and normalized.replace("-", "").isalnum():
        return normalized
    return quote(normalized, safe="")


def _allowed_hashes(hashes: dict[str, str]) -> dict[str, str]:
    if hashes.keys() <= _ALLOWED:
        return hashes
    return {algo: digest for algo, digest in hashes.items() if algo in _ALLOWED}


def _best_hash(hashes: dict[str, str]) -> str | None:
    """`algo=hex` as PEP 503 fragments and PEP 658 attributes spell one hash."""
    for algo in _FRAGMENT_PREFERENCE:
        digest = hashes.get(algo)
        if digest:
            return f"{algo}={digest}"
    return None


def _anchor(file: FileEntry, files_prefix: str) -> str:
    href = _file_url(file, files_prefix)
    best = _best_hash(file.hashes)
    if best is not None:
        href = f"{href}#{best}"
    attrs = [f'<a href="{escape(href)}"']
    if file.requires_python is not None:
        attrs.append(f' data-requires-python="{escape(file.requires_python)}"')
    if file.yanked is not None:  # PEP 592: present, even empty, means yanked
        attrs.append(f' data-yanked="{escape(file.yanked)}"')
    if file.core_metadata is not None:
        # PEP 658 plus PEP 714's legacy name. An absent attribute is the only "no": pip
        # treats any value, even "false", as "metadata exists".
        value = escape(_best_hash(file.core_metadata) or "true")
        attrs.append(f' data-core-metadata="{value}" data-dist-info-metadata="{value}"')
    if file.provenance is not None:  # PEP 740
        attrs.append(f' data-provenance="{escape(file.provenance)}"')
    if file.gpg_sig is not None:
        attrs.append(f' data-gpg-sig="{"true" if file.gpg_sig else "false"}"')
    attrs.append(f">{escape(file.filename)}</a><br />\n")
    return "".join(attrs)


def _json_file(file: FileEntry, files_prefix: str, always_provenance: bool) -> _File:
    # Same rule as HTML: without a usable hash, the file only says "metadata exists".
    metadata: bool | dict[str, str] = (
        False if file.core_metadata is None else _allowed_hashes(file.core_metadata) or True
    )
    provenance: str | UnsetType | None = UNSET
    if file.provenance is not None or always_provenance:
        provenance = file.provenance
    return _File(
        filename=file.filename,
        url=_file_url(file, files_prefix),
        hashes=_allowed_hashes(file.hashes),
        requires_python=file.requires_python,
        core_metadata=metadata,
        dist_info_metadata=metadata,
        # PEP 691: `true` or a non-empty reason; an empty reason is a plain `true`.
        yanked=False if file.yanked is None else (file.yanked or True),
        size=UNSET if file.size is None else file.size,
        upload_time=UNSET if file.upload_time is None else _format_time(file.upload_time),
        provenance=provenance,
        gpg_sig=UNSET if file.gpg_sig is None else file.gpg_sig,
    )


def _format_time(moment: dt.datetime) -> str:
    # PEP 700: `yyyy-mm-ddThh:mm:ss.ffffffZ`, UTC; isoformat drops a zero fraction.
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"
