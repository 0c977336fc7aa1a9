"""Project names and distribution filenames (pure)."""

from __future__ import annotations

import functools

from packaging.utils import InvalidName, canonicalize_name

# Longer names are refused before any lookup. Generous: real project names run to a few
# dozen characters. Far past it a name would only fill our memo and, past ~2.7 kB, hit
# PostgreSQL's B-tree index row limit (a 500, after an upstream GET).
MAX_NAME_LENGTH = 200
_SDIST_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.Z", ".tar", ".tgz", ".tbz", ".zip")


def normalize(name: str) -> str:
    """PEP 503 normalization (runs of `-_.` become one `-`, lowercase) of any text, valid
    name or not: a display name, or the name part of a filename."""
    return canonicalize_name(name)


def canonical_name(name: str) -> str | None:
    """The normalized form of a valid project name; None when `name` is not one.

    Valid means PEP 508's name grammar, in ASCII (packaging's check) and at most
    MAX_NAME_LENGTH long: a Unicode check with case folding let `\u017fix` and `\u0131dna` through.
    Anything else can never exist upstream, so it is never asked for.
    """
    if len(name) > MAX_NAME_LENGTH:
        return None  # before the memo: huge keys must not fill it
    return _canonical_name(name)


# Memoized: it runs on every page request, and a fleet asks for the same few names.
@functools.lru_cache(maxsize=16384)
def _canonical_name(name: str) -> str | None:
    try:
        return canonicalize_name(name, validate=True)
    except InvalidName:
        return None


def is_safe_filename(filename: str) -> bool:
    """A filename that can be one URL path segment and one store key component."""
    return (
        bool(filename)
        and filename not in (".", "..")
        and "/" not in filename
        and "\\" not in filename
        and "\x00" not in filename
    )


def version_from_filename(filename: str, project: str) -> str | None:
    """The version a distribution filename carries, or None when it cannot be told.

    Our own parsing, not packaging's `parse_wheel_filename` / `parse_sdist_filename`: those
    refuse versions that are not PEP 440 and legacy formats (`.tar.bz2`, `.tgz`, `.egg`),
    which old releases on every index still have.

    Wheels (and eggs) put the version in the second dash-separated field, with the name's
    own dashes escaped to underscores. Sdists and other legacy formats are
    `{name}-{version}{suffix}` where the name may itself contain dashes, so the split is the
    one whose left side normalizes to the project name.
    """
    if filename.endswith((".whl", ".egg")):
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) >= 3 and normalize(parts[0]) == project else None
    stem = _strip_suffix(filename)
    if stem is None:
        return None
    wanted = normalize(project)
    for index, char in enumerate(stem):
        if char == "-" and normalize(stem[:index]) == wanted:
            version = stem[index + 1 :]
            return version or None
    return None


def _strip_suffix(filename: str) -> str | None:
    for suffix in _SDIST_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None
