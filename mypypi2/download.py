"""The files use case's download half: one verified upstream download, teed to every client.

A file not yet stored is downloaded by exactly one task in the whole deployment:
- in this process, concurrent requests share one `_Download` (a dict of downloads in
  flight); its task is independent of any client, so a client that disconnects never
  cancels the download for the others;
- across processes, a claim on the file's `file_downloads` row elects one leader. The row
  names the attempt, its spool file and a heartbeat the leader renews every few seconds;
  the others follow the spool as it grows (same host), or wait for the commit and serve the
  stored object (other hosts). A claim not renewed within the lease belongs to a leader
  that is gone: the next one to look takes it over. A follower fails only when the attempt
  it joined fails, never on the row of an older one.

No database connection is held while bytes travel: the claim, the heartbeat and each state
change take one from the pool for one statement, so slow downloads never starve the pool.

The download is spooled to a local file that every client reads as it grows, so the first
byte reaches the first client as soon as the upstream sends it. The last byte is held back
until the hash (and the size, when announced) is verified, and when the size is known no
client is ever sent more than all but the last byte of it: a client can never receive a
complete-looking body of a bad file; on a mismatch its response is cut short instead. An
upstream sending more than the page's size is cut off at the first byte too many. Only a
verified file is committed to the store and marked stored, in that order.
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
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from mypypi2.clock import Clock
from mypypi2.errors import UpstreamError, VerificationFailed
from mypypi2.queries import files as files_queries
from mypypi2.queries.files import FileRow
from mypypi2.storage import CHUNK_BYTES, Storage, StoredFile, storage_key
from mypypi2.upstream.client import UpstreamClient
from mypypi2.urls import redact_url

log = logging.getLogger(__name__)

# How often a follower in another process looks at the leader's spool and state.
FOLLOW_POLL_SECONDS = 0.05
# How often a leader renews its claim, and how long an unrenewed claim stands.
HEARTBEAT_SECONDS = 2.0
LEASE_SECONDS = 10.0


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
    claim_lost: bool = False  # another process took the download over from us
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    def fail(self, error: BaseException) -> None:
        self.state, self.error = _State.FAILED, error
        self.notify()

    @property
    def readable(self) -> int:
        """Bytes a client may be sent now: until the file is verified, all but the last of
        what arrived and, when the size is known, never the last of what is expected."""
        if self.state in (_State.VERIFIED, _State.STORED):
            return self.written
        arrived = (
            self.written if self.expected_size is None else min(self.written, self.expected_size)
        )
        return max(arrived - 1, 0)


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

        Returns once the first bytes may be sent, so that a download failing before them
        raises here, before the client's response has started. After that, a failed
        download makes the reader raise, which cuts the client's response short.
        """
        download = self._downloads.get(row.id)
        if download is None:
            download = _Download(row, expected_size=row.size)
            self._downloads[row.id] = download
            # The task belongs to no client: it runs to the end whoever disconnects.
            download.task = asyncio.create_task(self._run(repository, download))
            download.task.add_done_callback(lambda _: self._drop_download(download))
        reader = self._read(download)
        first = await anext(reader, b"")
        return download.expected_size, _starting_with(first, reader)

    def _drop_download(self, download: _Download) -> None:
        if self._downloads.get(download.row.id) is download:
            del self._downloads[download.row.id]

    async def _run(self, repository: str, download: _Download) -> None:
        try:
            while not await self._attempt(repository, download):
                pass  # the attempt followed ended before giving us a byte: look again
        except BaseException as exc:
            # The clients hear of the failure only now, with the download forgotten and its
            # row marked failed: a client retrying at once starts a new download, never
            # joins this one.
            self._drop_download(download)
            if download.state is not _State.FAILED:
                download.fail(download.error or exc)
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, UpstreamError):
                log.exception("download of %s failed", redact_url(download.row.upstream_url))

    async def _attempt(self, repository: str, download: _Download) -> bool:
        """Lead a new download of the file or follow the one under way in another process.

        False when the attempt followed ended, unstored, before giving us any byte: then
        nothing is lost by looking again (and maybe leading)."""
        file_id = download.row.id
        attempt = uuid.uuid4()
        spool = self._storage.spool_dir / f"{attempt.hex}.part"
        stored = None
        async with self._pool.acquire() as connection:
            claim = await files_queries.claim_download(
                connection, file_id, attempt, str(spool), LEASE_SECONDS
            )
            if claim is None:
                current = await files_queries.get_download(connection, file_id, LEASE_SECONDS)
            else:
                row = await files_queries.get_by_id(connection, file_id)
                if row is not None and row.stored_key is not None:
                    stored = row  # by the leader just before us
                    await files_queries.set_download_state(connection, file_id, attempt, "done")
        if claim is None:
            return current is not None and await self._follow(download, current.attempt)
        if stored is not None:
            _mark_stored(download, stored)
            return True
        if claim.previous_spool is not None:
            # Left by a leader that went away (if it was on this host): garbage now.
            Path(claim.previous_spool).unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
        await self._lead(repository, download, attempt, spool)
        return True

    async def _lead(
        self, repository: str, download: _Download, attempt: uuid.UUID, spool: Path
    ) -> None:
        download.spool = spool
        heartbeat = asyncio.create_task(self._heartbeat(download, attempt))
        try:
            await self._fetch(repository, download, attempt, spool)
        except BaseException as exc:
            download.error = exc  # announced by `_run`, once the row says failed
            spool.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
            await asyncio.shield(
                files_queries.set_download_state(self._pool, download.row.id, attempt, "failed")
            )
            if isinstance(exc, UpstreamError):
                log.warning("download of %s failed: %s", redact_url(download.row.upstream_url), exc)
            raise
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, download: _Download, attempt: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                renewed = await files_queries.renew_claim(self._pool, download.row.id, attempt)
            except Exception as exc:  # the database is busy or away: try again next time
                log.warning(
                    "renewing the download of %s: %s", redact_url(download.row.upstream_url), exc
                )
                continue
            if not renewed:
                download.claim_lost = True
                return

    async def _fetch(
        self, repository: str, download: _Download, attempt: uuid.UUID, spool: Path
    ) -> None:
        row = download.row
        url = redact_url(row.upstream_url)  # for errors and logs; row.upstream_url is fetched
        verifiers = hash_verifiers(row.hashes)
        sha256 = verifiers.setdefault("sha256", hashlib.sha256())
        async with self._clients[repository].file(row.upstream_url) as body:
            announced = body.content_length
            if announced is not None and row.size is not None and announced != row.size:
                raise VerificationFailed(
                    url, f"upstream sends {announced} bytes, page says {row.size}"
                )
            expected = row.size if row.size is not None else announced
            download.expected_size = expected
            await files_queries.set_download_running(self._pool, row.id, attempt, expected)
            # Unbuffered, so followers see every chunk at once; writes land in the page cache.
            with open(spool, "wb", buffering=0) as out:  # noqa: ASYNC230
                async for chunk in body.chunks:
                    if download.claim_lost:
                        raise UpstreamError(url, "another worker took the download over")
                    if expected is not None and download.written + len(chunk) > expected:
                        # A chunked or close-delimited body longer than announced is not
                        # the file: stop before a byte past its size is written.
                        raise VerificationFailed(url, f"upstream sends over {expected} bytes")
                    out.write(chunk)
                    for verifier in verifiers.values():
                        verifier.update(chunk)
                    download.written += len(chunk)
                    download.notify()
        size = download.written
        if expected is not None and size != expected:
            raise VerificationFailed(url, f"received {size} bytes, expected {expected}")
        verify_hashes(verifiers, row.hashes, url)
        download.state = _State.VERIFIED
        download.notify()
        digest = sha256.hexdigest()
        key = storage_key(repository, digest, row.filename)
        await self._storage.commit(key, spool, size)
        now = self._now()
        async with self._pool.acquire() as connection, connection.transaction():
            marked = await files_queries.mark_stored(connection, row, key, size, digest, now)
            if marked:
                await files_queries.set_download_state(connection, row.id, attempt, "done")
        if not marked:
            # The page was saved with other hashes meanwhile: these bytes are no longer the
            # file it lists (unless another row holds the same object).
            if not await files_queries.key_in_use(self._pool, key):
                await self._storage.delete(key)
            raise VerificationFailed(url, "the page changed during the download")
        download.stored = StoredFile(key, size, digest, row.filename, int(now.timestamp()))
        download.state = _State.STORED
        download.notify()

    async def _follow(self, download: _Download, attempt: uuid.UUID) -> bool:
        """Mirror another process's download `attempt` into `download`.

        True once the file is stored; False when the attempt ended otherwise (its leader
        went away, or a newer attempt replaced it) before we had a byte of it."""
        file_id, url = download.row.id, redact_url(download.row.upstream_url)
        while True:
            if self._spool_grew(download):
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            record = await files_queries.get_download(self._pool, file_id, LEASE_SECONDS)
            ours = record is not None and record.attempt == attempt
            if record is not None and ours and not record.stale:
                if record.state == "failed":
                    raise UpstreamError(url, "the download failed in another worker")
                if record.state == "running" and download.spool is None:
                    download.expected_size = record.expected_size
                    download.spool = Path(record.spool_path)
                if record.state in ("claimed", "running"):
                    await asyncio.sleep(FOLLOW_POLL_SECONDS)
                    continue
            row = await files_queries.get_by_id(self._pool, file_id)
            if row is not None and row.stored_key is not None:
                _mark_stored(download, row)
                return True
            if download.written == 0:
                return False
            raise UpstreamError(url, "the downloading worker went away")

    @staticmethod
    def _spool_grew(download: _Download) -> bool:
        """Whether the followed spool has more bytes than seen so far (then notified)."""
        if download.spool is None:
            return False
        try:
            size = download.spool.stat().st_size
        except FileNotFoundError:  # not begun, committed, or on another host
            return False
        if size <= download.written:
            return False
        download.written = size
        download.notify()
        return True

    async def _read(self, download: _Download) -> AsyncGenerator[bytes, None]:
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
                    stored = download.stored
                    async for chunk in await self._storage.open(stored.key, position, stored.size):
                        yield chunk
                    return
                if spool is not None and position < download.readable:
                    # The spool was just written: its pages are in memory, reads do not block.
                    chunk = spool.read(min(CHUNK_BYTES, download.readable - position))
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


async def _starting_with(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


def stored_file(row: FileRow) -> StoredFile:
    assert row.stored_key is not None
    assert row.stored_size is not None and row.stored_sha256 is not None
    stored_at = int(row.stored_at.timestamp()) if row.stored_at is not None else None
    return StoredFile(row.stored_key, row.stored_size, row.stored_sha256, row.filename, stored_at)


def _mark_stored(download: _Download, row: FileRow) -> None:
    download.stored = stored_file(row)
    download.written = download.stored.size
    download.expected_size = download.stored.size
    download.state = _State.STORED
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


def verify_hashes(
    verifiers: Mapping[str, hashlib._Hash], wanted: Mapping[str, str], url: str, what: str = ""
) -> None:
    """VerificationFailed unless each running hash that `wanted` has a digest for matches it
    (a verifier of our own, such as the sha256 a storage key needs, is not checked)."""
    for algorithm, verifier in verifiers.items():
        digest = wanted.get(algorithm)
        if digest is not None and verifier.hexdigest() != digest:
            raise VerificationFailed(
                url, f"{what}{algorithm} mismatch: got {verifier.hexdigest()}, expected {digest}"
            )
