"""Project names and distribution filenames (pure)."""

from __future__ import annotations

import functools
import re

_SEPARATORS = re.compile(r"[-_.]+")
# PEP 508 names; anything else can never exist upstream, so it is never asked for.
_VALID_NAME = re.compile(r"^([a-z0-9]|[a-z0-9][a-z0-9._-]*[a-z0-9])$", re.IGNORECASE)
_SDIST_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.Z", ".tar", ".tgz", ".tbz", ".zip")


def normalize(name: str) -> str:
    """PEP 503 normalization: runs of `-_.` become one `-`, lowercase."""
    return _SEPARATORS.sub("-", name).lower()


def is_valid_name(name: str) -> bool:
    return _VALID_NAME.match(name) is not None


@functools.lru_cache(maxsize=16384)
def canonical_name(name: str) -> str | None:
    """The normalized form of a valid project name; None when `name` is not one.

    Memoized: it runs on every page request, and a fleet asks for the same few names."""
    return normalize(name) if is_valid_name(name) else None


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
