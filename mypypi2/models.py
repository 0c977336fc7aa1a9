"""The canonical page model: what we store and what both renderers read.

Whatever format the upstream spoke, a project page becomes one `ProjectPage`; HTML and JSON
are rendered from it, so the two representations always agree (PEP 691).
"""

from __future__ import annotations

import datetime as dt

import msgspec

# uv rejects any other algorithm in a hash fragment; pip ignores unknown ones.
ALLOWED_HASHES = ("sha256", "sha384", "sha512", "blake2b", "md5")


class FileEntry(msgspec.Struct, frozen=True):
    filename: str
    url: str  # absolute upstream URL, without fragment
    hashes: dict[str, str]  # lowercase algorithm in ALLOWED_HASHES -> lowercase hex
    requires_python: str | None = None
    yanked: str | None = None  # None: not yanked; "": yanked without a reason
    core_metadata: dict[str, str] | None = None  # None: no .metadata; {}: exists, no hash
    size: int | None = None
    upload_time: dt.datetime | None = None  # timezone-aware, UTC
    provenance: str | None = None  # PEP 740 absolute URL
    gpg_sig: bool | None = None


class ProjectPage(msgspec.Struct, frozen=True):
    name: str  # normalized
    files: tuple[FileEntry, ...]
    versions: tuple[str, ...]  # every version, including those only known from filenames
    status: str | None = None  # PEP 792 project status; None: upstream said nothing
    status_reason: str | None = None
    last_serial: int | None = None


class ProjectList(msgspec.Struct, frozen=True):
    names: tuple[str, ...]  # as the upstream displays them, in its order
    last_serial: int | None = None


class Validators(msgspec.Struct, frozen=True):
    """What the upstream told us to identify its answer, sent back on revalidation."""

    etag: str | None = None
    last_modified: str | None = None
    last_serial: int | None = None
