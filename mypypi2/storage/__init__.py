"""Where verified distribution files live: local disk or an S3-compatible bucket.

Every file reaches the store the same way: the download is spooled to a local file (which
concurrent clients read while it grows), verified, then handed to `commit`. Nothing is
visible under a key before `commit` returns, so a reader never sees a partial object.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A verified file in the store."""

    key: str
    size: int
    sha256: str
    filename: str
    stored_at: int | None  # epoch seconds; None for a row that never said when
    # Last-Modified (an HTTP-date), made once: the warm path sends it on every request.
    last_modified: str | None = field(init=False)

    def __post_init__(self) -> None:
        stamp = None if self.stored_at is None else formatdate(self.stored_at, usegmt=True)
        object.__setattr__(self, "last_modified", stamp)


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

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete several objects in as few requests as the store allows (eviction); a
        key already gone is no error."""

    def local_path(self, key: str) -> Path | None:
        """The object as a local file, for zero-copy serving; None when not on disk."""

    async def redirect(self, key: str) -> Redirect | None:
        """Where the client may fetch the object directly; None to serve it ourselves."""

    async def open(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the object; StoredObjectMissing, before any byte, when the
        store no longer has it (a cleanup job, a bucket lifecycle rule)."""


# How much of a file is read at once to be sent on: big enough that a read costs little per
# byte, small enough that many clients at once cost little memory.
CHUNK_BYTES = 256 * 1024

# Longest name part of a key, in UTF-8 bytes: most filesystems allow 255 per path component,
# some (encrypted home directories) less.
MAX_KEY_NAME_BYTES = 128


def storage_key(repository: str, sha256: str, filename: str) -> str:
    # Content-addressed under the repository, ending with the filename so that a redirect
    # URL still ends with it (clients read the filename from the URL path). A name too long
    # for one path component keeps only its end (tags and extension): the digest already
    # makes the key unique, and the URL of our own files keeps the whole filename.
    return f"{repository}/{sha256[:2]}/{sha256}/{_key_name(filename)}"


def _key_name(filename: str) -> str:
    encoded = filename.encode()
    if len(encoded) <= MAX_KEY_NAME_BYTES:
        return filename
    tail = encoded[-MAX_KEY_NAME_BYTES:].decode(errors="ignore")  # drop a split character
    return tail.lstrip(".") or "file"


# Where readiness probes write (see `probe`): stored keys start with a repository name, which
# starts with a letter or digit, so no stored file can ever live under this prefix.
PROBE_PREFIX = ".probe"
_PROBE_BODY = b"mypypi2 readiness probe\n"


async def probe(storage: Storage) -> None:
    """Write, read back and delete a small object the way a download does (spool, commit,
    open, delete); raises what the store raised. The key is this process's own, so probes
    of other workers and replicas never meet it, and a probe cut short is overwritten by
    the next one instead of piling up."""
    name = f"{socket.gethostname()}-{os.getpid()}"
    key = f"{PROBE_PREFIX}/{name}"
    spool = storage.spool_dir / f"{name}.probe"
    await asyncio.to_thread(spool.write_bytes, _PROBE_BODY)
    try:
        await storage.commit(key, spool, len(_PROBE_BODY))
    finally:
        spool.unlink(missing_ok=True)  # a failed commit may leave it
    read = b"".join([chunk async for chunk in await storage.open(key, 0, len(_PROBE_BODY))])
    await storage.delete(key)
    if read != _PROBE_BODY:
        raise OSError(f"the store gave back other bytes than written under {key!r}")
