"""One download in flight as the clients of this process see it, and the reader they stream.

The bytes land in a spool file that every client reads as it grows, so the first byte
reaches the first client as soon as the upstream sends it. The last byte is held back
until the file is verified, and when the size is known no client is ever sent more than
all but the last byte of it: a client can never receive a complete-looking body of a bad
file; on a failure its response is cut short instead. Once the file is stored (and its
spool renamed into the store, or on another host), readers go on from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from mypypi2.storage import CHUNK_BYTES, Storage


class Stage(enum.Enum):
    RUNNING = "running"  # bytes arriving; the last one is held back
    VERIFIED = "verified"  # every byte is in the spool and matches what the page announced
    STORED = "stored"  # committed to the store as `stored_key`
    FAILED = "failed"  # `error` says why


@dataclass(eq=False)
class Spool:
    """What arrived of one download so far: led here, followed in another process of this
    host, or relayed from the leader's replica on another host."""

    expected_size: int | None = None
    attempt: uuid.UUID | None = None  # the download's, once led or joined (for relays)
    path: Path | None = None  # once the leader has begun writing it
    written: int = 0
    stage: Stage = Stage.RUNNING
    stored_key: str | None = None
    error: BaseException | None = None
    followed: bool = False  # led by another process (its clients joined a fill in flight)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def grew(self, written: int) -> None:
        self.written = written
        self._notify()

    def verified(self) -> None:
        self.stage = Stage.VERIFIED
        self._notify()

    def stored(self, key: str, size: int) -> None:
        self.stored_key = key
        self.written = self.expected_size = size
        self.stage = Stage.STORED
        self._notify()

    def failed(self, error: BaseException) -> None:
        self.stage, self.error = Stage.FAILED, error
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def readable(self) -> int:
        """Bytes a client may be sent now: until the file is verified, all but the last of
        what arrived and, when the size is known, never the last of what is expected."""
        if self.stage in (Stage.VERIFIED, Stage.STORED):
            return self.written
        arrived = (
            self.written if self.expected_size is None else min(self.written, self.expected_size)
        )
        return max(arrived - 1, 0)

    async def read(self, storage: Storage, start: int = 0) -> AsyncGenerator[bytes, None]:
        """Every byte of the file from `start` on, as it becomes readable; raises the
        download's error."""
        position = start
        spool = None
        try:
            while True:
                if self.stage is Stage.FAILED:
                    assert self.error is not None
                    raise self.error
                if spool is None and self.path is not None and position < self.readable:
                    # Gone when renamed into the store or on another host: read from the store.
                    with contextlib.suppress(FileNotFoundError):
                        spool = open(self.path, "rb")  # noqa: SIM115, ASYNC230
                        spool.seek(position)
                if spool is None and self.stage is Stage.STORED:
                    assert self.stored_key is not None
                    async for chunk in await storage.open(self.stored_key, position, self.written):
                        yield chunk
                    return
                if spool is not None and position < self.readable:
                    # The spool was just written: its pages are in memory, reads do not block.
                    chunk = spool.read(min(CHUNK_BYTES, self.readable - position))
                    if chunk:
                        position += len(chunk)
                        yield chunk
                        continue
                if position >= self.written and self.stage in (Stage.VERIFIED, Stage.STORED):
                    return
                await self._changed.wait()
        finally:
            if spool is not None:
                spool.close()
