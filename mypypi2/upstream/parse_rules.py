"""What a file entry must satisfy to be kept, whichever format the upstream spoke.

Strict about what an installer needs (a filename we can store and serve, an HTTP URL,
well-formed hashes), lenient about everything else: a field we cannot trust is dropped from
its entry, an entry we cannot serve is dropped from its page, and each loss is logged once
per page and field by `DropLog` instead of failing the page. One odd file must not hide a
whole project, and a cache in front of devpi, Artifactory, Nexus, GitLab, pypiserver or a
static tree meets many odd files.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from mypypi2 import names
from mypypi2.errors import MalformedPage
from mypypi2.models import ALLOWED_HASHES, FileEntry, ProjectPage

log = logging.getLogger(__name__)

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = ("application/vnd.pypi.simple.v1+html", "text/html")

# One path component on every common filesystem (NAME_MAX); also far below PostgreSQL's
# btree row limit (~2,700 bytes) on the files (project_id, filename) key, which a longer
# name once overflowed while storing the page.
MAX_FILENAME_BYTES = 255
# Serials and sizes go into PostgreSQL bigint columns.
BIGINT_END = 2**63
# PostgreSQL text cannot hold U+0000 (nor can a request line), so no NUL leaves a parser.
# Each format loses to one what it allows: HTML text has none, as its tokenizer reads NUL
# as U+FFFD (`without_nul`); a JSON string may escape one, and then it is no string
# (`storable_text`; a filename with one is no safe filename, `names.is_safe_filename`).
NUL = "\x00"

_HEX = re.compile(r"[0-9a-fA-F]+")
# A path segment no URL parser changes (no dot segment, scheme, query or whitespace).
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.~%!$&'()*+,;=@-]+")
_PLAIN_FRAGMENT = re.compile(r"[!-~]*+")  # printable ASCII, no space
_PLAIN_DIRECTORY = re.compile(r"[!->@-~]*+")  # the same without "?"
# An absolute http(s) URL that urljoin/urlsplit would return unchanged: resolving it the
# long way costs three quarters of a large JSON page's parse time.
_PLAIN_ABSOLUTE = re.compile(r"https?://[A-Za-z0-9.-]++(?::[0-9]*+)?(?:[/?][!-\"$-~]*+)?(?<!\?)")


def media_is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == JSON_TYPE:
        return True
    if media_type in HTML_TYPES:
        return False
    raise MalformedPage(f"unexpected Content-Type {content_type!r}")


def check_api_version(version: str) -> None:
    # PEP 629: a major version we do not know means we cannot interpret the page; a newer
    # minor only adds what we may ignore.
    major = version.split(".", 1)[0].strip()
    if major != "1":
        raise MalformedPage(f"unsupported api-version {version!r}")


def serial_from(value: object) -> int | None:
    """A `_last-serial` (or `X-PyPI-Last-Serial`) value as a bigint, None when it is none.

    Servers send it as an integer or as a string of ASCII digits; anything else (negative,
    2**63 or more, Unicode digits, a float or a bool) is simply no serial, never an error:
    `_` keys are private to the upstream (PEP 691)."""
    if isinstance(value, str):
        # isdigit() alone accepts "²", which int() refuses.
        value = int(value) if value.isascii() and value.isdigit() and len(value) < 20 else None
    return bigint(value)


def bigint(value: object) -> int | None:
    """`value` when it is an int (not a bool) a PostgreSQL bigint column can hold, >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < BIGINT_END:
        return value
    return None


def without_nul(text: str) -> str:
    """Decoded HTML as a tokenizer reads it: every NUL is U+FFFD."""
    return text.replace(NUL, "\ufffd") if NUL in text else text


def storable_text(value: object) -> str | None:
    """`value` when it is a non-empty string PostgreSQL text can hold, else None."""
    return value if isinstance(value, str) and value and NUL not in value else None


def unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


class DropLog:
    """What one page lost, logged once per field with a count and a first example.

    A page with 2,000 odd entries would otherwise log 2,000 lines on every revalidation."""

    def __init__(self, where: str) -> None:
        self._where = where  # "page of <project> at <URL>", "project list"
        self._drops: dict[str, tuple[int, str]] = {}

    def drop(self, what: str, filename: object, reason: str) -> None:
        count, example = self._drops.get(what, (0, ""))
        if not count:
            example = f"{filename!r}: {reason}"
            example = example if len(example) <= 300 else f"{example[:300]}..."
        self._drops[what] = (count + 1, example)

    def emit(self) -> None:
        for what, (count, example) in self._drops.items():
            log.warning(
                "upstream %s: dropped %s of %d entries, the first %s",
                self._where,
                what,
                count,
                example,
            )


def filter_hashes(
    pairs: Iterable[tuple[object, object]], drops: DropLog, filename: object, what: str
) -> dict[str, str]:
    """Hashes with an algorithm clients accept and a hex digest, lowercased.

    uv rejects unknown algorithms, so those (sha1, ...) are left out without a word; a
    digest that is not hex is a broken entry and is logged."""
    kept: dict[str, str] = {}
    for algo, digest in pairs:
        if not isinstance(algo, str) or algo.lower() not in ALLOWED_HASHES:
            continue
        if isinstance(digest, str) and _HEX.fullmatch(digest):
            kept.setdefault(algo.lower(), digest.lower())
        else:
            drops.drop(what, filename, f"{algo} digest {digest!r} is not hex")
    return kept


class Resolver:
    """Resolves hrefs against one base URL exactly as urljoin does, but faster.

    urljoin costs ~10 us a link and most of a large page's parse time. An absolute http(s)
    URL that it would return unchanged skips it; a link whose last segment is plain reuses
    the resolved directory of an earlier link in the same directory (static trees link
    every file as `../../files/<name>`)."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url
        self._directories: dict[str, str | None] = {}

    def resolve(self, href: str) -> tuple[str, str] | None:
        """(absolute URL without fragment, fragment), or None when it is not an HTTP URL."""
        if NUL in href:
            return None  # only a JSON url can hold one
        url, _, fragment = href.partition("#")
        if not _PLAIN_FRAGMENT.fullmatch(fragment):
            return _join(self._base, href)  # urlsplit drops tabs and newlines, even here
        if _PLAIN_ABSOLUTE.fullmatch(url):
            return url, fragment
        directory, slash, name = url.rpartition("/")
        plain = _PLAIN_SEGMENT.fullmatch(name) and _PLAIN_DIRECTORY.fullmatch(directory)
        if plain and name not in (".", ".."):
            directory += slash
            if directory not in self._directories:
                # The merged path's dot segments resolve the same whatever plain name follows.
                placeholder = _join(self._base, f"{directory}_")
                self._directories[directory] = (
                    placeholder[0][:-1] if placeholder and placeholder[0].endswith("/_") else None
                )
            prefix = self._directories[directory]
            if prefix is not None:
                return prefix + name, fragment
        return _join(self._base, href)


def _join(base_url: str, href: str) -> tuple[str, str] | None:
    try:
        url, fragment = urldefrag(urljoin(base_url, href))
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" read as an IPv6 host
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return url, fragment


def provenance_url(
    value: str | None, resolver: Resolver, drops: DropLog, filename: str
) -> str | None:
    """A PEP 740 provenance URL as we may pass it on: absolute and https, else none."""
    if value is None:
        return None
    resolved = resolver.resolve(value)
    if resolved is None or not resolved[0].startswith("https://"):
        drops.drop("provenance", filename, f"{value!r} is not an https URL")
        return None
    return resolved[0]


def filename_from_url(url: str) -> str:
    """What clients take for the filename: the URL path's last segment, percent-decoded.

    `url` is one `Resolver` returned: it has a scheme, an authority and no fragment."""
    path = url.partition("://")[2].partition("?")[0]
    return unquote(path.rsplit("/", 1)[-1]) if "/" in path else ""


def filename_problem(filename: str) -> str | None:
    """Why no file of this name can be stored and served, or None when it can.

    The one rule for filenames: a name that passes is one URL path segment, one store key
    component and one PostgreSQL text value, so nothing downstream can fail on it."""
    if not names.is_safe_filename(filename):
        return "not a safe filename"
    try:
        encoded = filename.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not storable as UTF-8 text
        return "not valid Unicode"
    if len(encoded) > MAX_FILENAME_BYTES:
        return f"longer than {MAX_FILENAME_BYTES} bytes"
    return None


def parse_upload_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
        # PEP 700 mandates UTC; a naive value is read as UTC rather than local time.
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: out of range once moved to UTC
        return None


def build_page(
    project: str,
    files: Iterable[FileEntry],
    drops: DropLog,
    upstream_versions: Iterable[str] = (),
    status: str | None = None,
    status_reason: str | None = None,
    last_serial: int | None = None,
) -> ProjectPage:
    kept: dict[str, FileEntry] = {}
    for entry in files:
        problem = filename_problem(entry.filename)
        if problem is None and entry.filename in kept:
            problem = "duplicate"  # the filename is our storage key and URL segment
        if problem is None:
            kept[entry.filename] = entry
        else:
            drops.drop("the whole entry", entry.filename, f"filename {problem}")
    drops.emit()
    from_files = (names.version_from_filename(f, project) for f in kept)
    versions = unique([*upstream_versions, *(v for v in from_files if v is not None)])
    return ProjectPage(
        name=project,
        files=tuple(kept.values()),
        versions=versions,
        status=status,
        status_reason=status_reason,
        last_serial=last_serial,
    )
