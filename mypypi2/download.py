"""The files use case's download half: one verified upstream download, teed to every client.

A file not yet stored is downloaded by exactly one task in the whole deployment:
- in this process, concurrent requests share one `_Download` (a dict of downloads in
  flight); its task is independent of any client, so a client that disconnects never
  cancels the download for the others;
- across processes, the file's advisory lock elects one downloader; the others find its
  spool file through `file_downloads` and follow it as it grows (same host), or wait for
  the commit and serve the stored object (other hosts).

The download is spooled to a local file that every client reads as it grows, so the first
byte reaches the first client as soon as the upstream sends it. The last byte is held back
until the hash (and the size, when announced) is verified: a client can never receive a
complete-looking body of a bad file; on a mismatch its response is cut short instead.
Only a verified file is committed to the store and marked stored, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from mypypi2.errors import UpstreamError, VerificationFailed
from mypypi2.pages import Clock
from mypypi2.queries import files as files_queries
from mypypi2.queries import locks
from mypypi2.queries.files import FileRow
from mypypi2.storage import Storage, StoredFile, storage_key
from mypypi2.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
# How often a follower in another process looks at the leader's spool and state.
FOLLOW_POLL_SECONDS = 0.05
# A follower that sees no progress this long checks that the leader is still alive.
FOLLOW_STALL_SECONDS = 2.0


class _State(enum.Enum):
    RUNNING = "running"  # bytes arriving; the last one is held back
    VERIFIED = "verified"  # every byte is in the spool and matches the announced hash
    STORED = "stored"  # committed to the store; `stored` is set
    FAILED = "failed"


@dataclass(eq=False)
class _Download:
    """One download of one file as this process sees it (leading it or following it)."""

    row: FileRow
    spool: Path | None = None
    written: int = 0
    expected_size: int | None = None
    state: _State = _State.RUNNING
    stored: StoredFile | None = None
    error: BaseException | None = None
    # Set once the upstream answered (headers known) or the download failed.
    started: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    def fail(self, error: BaseException) -> None:
        self.state, self.error = _State.FAILED, error
        self.started.set()
        self.notify()

    @property
    def readable(self) -> int:
        """Bytes a client may be sent now: all but the last until the file is verified."""
        if self.state in (_State.VERIFIED, _State.STORED):
            return self.written
        return max(self.written - 1, 0)


class Downloads:
    """The downloads of files in flight in this process, led or followed."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        storage: Storage,
        clients: Mapping[str, UpstreamClient],
        *,
        clock: Clock = time.time,
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._clients = clients
        self._clock = clock
        self._downloads: dict[int, _Download] = {}

    async def stream(
        self, repository: str, row: FileRow
    ) -> tuple[int | None, AsyncIterator[bytes]]:
        """Join (or start) the one download of a file; returns its length and a reader.

        Raises before any byte when the upstream refuses the file; after that, a failed
        download makes the reader raise, which cuts the client's response short.
        """
        download = self._downloads.get(row.id)
        if download is None:
            download = _Download(row, expected_size=row.size)
            self._downloads[row.id] = download
            # The task belongs to no client: it runs to the end whoever disconnects.
            download.task = asyncio.create_task(self._run(repository, download))
            download.task.add_done_callback(lambda _: self._drop_download(download))
        await download.started.wait()
        if download.state is _State.FAILED:
            assert download.error is not None
            raise download.error
        return download.expected_size, self._read(download)

    def _drop_download(self, download: _Download) -> None:
        if self._downloads.get(download.row.id) is download:
            del self._downloads[download.row.id]

    async def _run(self, repository: str, download: _Download) -> None:
        lock_key = f"file:{download.row.id}"
        try:
            async with self._pool.acquire() as connection:
                if not await locks.try_acquire(connection, lock_key):
                    await self._follow(connection, download, lock_key)
                    return
                try:
                    await self._lead(connection, repository, download)
                finally:
                    await locks.release(connection, lock_key)
        except BaseException as exc:
            # The clients hear of the failure only now, with the download forgotten and its
            # lock free: a client retrying at once starts a new download, never joins this one.
            self._drop_download(download)
            if download.state is not _State.FAILED:
                download.fail(download.error or exc)
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, UpstreamError):
                log.exception("download of %s failed", download.row.upstream_url)
        finally:
            download.started.set()

    async def _lead(
        self,
        connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        repository: str,
        download: _Download,
    ) -> None:
        row = await files_queries.get_by_id(connection, download.row.id)
        if row is not None and row.stored_key is not None:
            _mark_stored(download, row)  # by whoever held the lock just before us
            return
        previous = await files_queries.get_download(connection, download.row.id)
        if previous is not None and previous.state != "done":
            # Left by a downloader that died (we hold the lock now): its spool is garbage.
            Path(previous.spool_path).unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
        spool = self._storage.spool_dir / f"{uuid.uuid4().hex}.part"
        download.spool = spool
        try:
            await self._fetch(connection, repository, download, spool)
        except BaseException as exc:
            download.error = exc  # announced by `_run`, once the lock is released
            spool.unlink(missing_ok=True)
            await asyncio.shield(
                files_queries.set_download_state(connection, download.row.id, "failed")
            )
            if isinstance(exc, UpstreamError):
                log.warning("download of %s failed: %s", download.row.upstream_url, exc)
            raise

    async def _fetch(
        self,
        connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        repository: str,
        download: _Download,
        spool: Path,
    ) -> None:
        row = download.row
        url = row.upstream_url
        verifiers = hash_verifiers(row.hashes)
        sha256 = verifiers.setdefault("sha256", hashlib.sha256())
        async with self._clients[repository].file(url) as body:
            announced = body.content_length
            if announced is not None and row.size is not None and announced != row.size:
                raise VerificationFailed(
                    url, f"upstream sends {announced} bytes, page says {row.size}"
                )
            download.expected_size = row.size if row.size is not None else announced
            await files_queries.start_download(
                connection, row.id, str(spool), download.expected_size, self._now()
            )
            # Unbuffered, so followers see every chunk at once; writes land in the page cache.
            with open(spool, "wb", buffering=0) as out:  # noqa: ASYNC230
                download.started.set()
                async for chunk in body.chunks:
                    out.write(chunk)
                    for verifier in verifiers.values():
                        verifier.update(chunk)
                    download.written += len(chunk)
                    download.notify()
        size = download.written
        if download.expected_size is not None and size != download.expected_size:
            raise VerificationFailed(
                url, f"received {size} bytes, expected {download.expected_size}"
            )
        for algorithm, verifier in verifiers.items():
            expected = row.hashes.get(algorithm)
            if expected is not None and verifier.hexdigest() != expected:
                raise VerificationFailed(
                    url, f"{algorithm} mismatch: got {verifier.hexdigest()}, expected {expected}"
                )
        download.state = _State.VERIFIED
        download.notify()
        digest = sha256.hexdigest()
        key = storage_key(repository, digest, row.filename)
        await self._storage.commit(key, spool, size)
        async with connection.transaction():
            await files_queries.mark_stored(connection, row.id, key, size, digest, self._now())
            await files_queries.set_download_state(connection, row.id, "done")
        download.stored = StoredFile(key, size, digest, row.filename)
        download.state = _State.STORED
        download.notify()

    async def _follow(
        self,
        connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        download: _Download,
        lock_key: str,
    ) -> None:
        """Mirror another process's download of this file into `download`."""
        idle_since = time.monotonic()
        while True:
            record = await files_queries.get_download(connection, download.row.id)
            if record is not None and record.state == "running":
                download.expected_size = record.expected_size
                download.spool = Path(record.spool_path)
                download.started.set()
                try:
                    size = download.spool.stat().st_size
                except FileNotFoundError:
                    size = download.written
                if size > download.written:
                    download.written = size
                    download.notify()
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > FOLLOW_STALL_SECONDS:
                    # No progress: is the leader still there? Its lock dies with its session.
                    if await locks.try_acquire(connection, lock_key):
                        await locks.release(connection, lock_key)
                        raise UpstreamError(
                            download.row.upstream_url, "the downloading worker went away"
                        )
                    idle_since = time.monotonic()
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            row = await files_queries.get_by_id(connection, download.row.id)
            if row is not None and row.stored_key is not None:
                _mark_stored(download, row)
                return
            if record is not None and record.state == "failed":
                raise UpstreamError(
                    download.row.upstream_url, "the download failed in another worker"
                )
            # No download row yet: the leader has the lock but has not reached the upstream.
            await asyncio.sleep(FOLLOW_POLL_SECONDS)

    async def _read(self, download: _Download) -> AsyncIterator[bytes]:
        position = 0
        spool = None
        try:
            while True:
                if download.state is _State.FAILED:
                    assert download.error is not None
                    raise download.error
                if spool is None and download.spool is not None and position < download.readable:
                    # Gone when renamed into the store or on another host: read from the store.
                    with contextlib.suppress(FileNotFoundError):
                        spool = open(download.spool, "rb")  # noqa: SIM115, ASYNC230
                if spool is None and download.state is _State.STORED:
                    assert download.stored is not None
                    async for chunk in self._storage.stream(
                        download.stored.key, position, download.stored.size
                    ):
                        yield chunk
                    return
                if spool is not None and position < download.readable:
                    # The spool was just written: its pages are in memory, reads do not block.
                    chunk = spool.read(min(_CHUNK, download.readable - position))
                    if chunk:
                        position += len(chunk)
                        yield chunk
                        continue
                if position >= download.written and download.state in (
                    _State.VERIFIED,
                    _State.STORED,
                ):
                    return
                await download.wait_for_change()
        finally:
            if spool is not None:
                spool.close()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)


def stored_file(row: FileRow) -> StoredFile:
    assert row.stored_key is not None
    assert row.stored_size is not None and row.stored_sha256 is not None
    return StoredFile(row.stored_key, row.stored_size, row.stored_sha256, row.filename)


def _mark_stored(download: _Download, row: FileRow) -> None:
    download.stored = stored_file(row)
    download.written = download.stored.size
    download.expected_size = download.stored.size
    download.state = _State.STORED
    download.started.set()
    download.notify()


def hash_verifiers(hashes: Mapping[str, str]) -> dict[str, hashlib._Hash]:
    """A running hash for every announced algorithm hashlib knows (models.ALLOWED_HASHES)."""
    verifiers = {}
    for algorithm in hashes:
        try:
            verifiers[algorithm] = hashlib.new(algorithm)
        except ValueError:
            continue
    return verifiers
