"""Files in a local directory: temp name in the same filesystem, then an atomic rename."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO

from mypypi2.errors import StoredObjectMissing
from mypypi2.storage import CHUNK_BYTES, Redirect


class DiskStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.spool_dir = self.root / ".incoming"
        self.spool_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # Keys are built from validated names, but the store never trusts its callers. A
        # lexical check suffices (the store holds no symlinks) and costs no system call on
        # the hot path, unlike resolving the path.
        parts = key.split("/")
        if any(part in ("", ".", "..") or "\x00" in part or "\\" in part for part in parts):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return self.root.joinpath(*parts)

    async def commit(self, key: str, spool: Path, size: int) -> None:
        path = self._path(key)
        await asyncio.to_thread(_commit, spool, path)

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def delete_many(self, keys: Sequence[str]) -> None:
        # A reader that has the file open keeps reading after the unlink (POSIX).
        paths = [self._path(key) for key in keys]
        await asyncio.to_thread(_unlink_all, paths)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def redirect(self, key: str) -> Redirect | None:
        return None

    async def open(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            file = open(self._path(key), "rb")  # noqa: SIM115, ASYNC230 - closed by _read
        except FileNotFoundError as exc:
            raise StoredObjectMissing(key) from exc
        return _read(file, key, start, end)


async def _read(file: BinaryIO, key: str, start: int, end: int) -> AsyncIterator[bytes]:
    with file:
        file.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = await asyncio.to_thread(file.read, min(CHUNK_BYTES, remaining))
            if not chunk:
                raise OSError(f"stored object {key!r} is shorter than expected")
            remaining -= len(chunk)
            yield chunk


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _commit(spool: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(spool, "rb") as file:
        os.fsync(file.fileno())  # the bytes are durable before the name says they exist
    os.replace(spool, path)
