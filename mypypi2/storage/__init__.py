"""Where verified distribution files live: local disk or an S3-compatible bucket.

Every file reaches the store the same way: the download is spooled to a local file (which
concurrent clients read while it grows), verified, then handed to `commit`. Nothing is
visible under a key before `commit` returns, so a reader never sees a partial object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A verified file in the store."""

    key: str
    size: int
    sha256: str
    filename: str


class Redirect(NamedTuple):
    url: str
    status: int  # 307/308 keep the method; 302/303 for clients that need them


class Storage(Protocol):
    spool_dir: Path
    """Local directory for downloads in progress (on the store's filesystem for disk)."""

    async def commit(self, key: str, spool: Path, size: int) -> None:
        """Make the verified file at `spool` the object `key`; `spool` is consumed."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """The object as a local file, for zero-copy serving; None when not on disk."""

    async def redirect(self, key: str) -> Redirect | None:
        """Where the client may fetch the object directly; None to serve it ourselves."""

    def stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the object."""


def storage_key(repository: str, sha256: str, filename: str) -> str:
    # Content-addressed under the repository, ending with the filename so that a redirect
    # URL still ends with it (clients read the filename from the URL path).
    return f"{repository}/{sha256[:2]}/{sha256}/{filename}"
