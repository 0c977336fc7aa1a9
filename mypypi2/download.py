"""The files use case's download half: one verified upstream download, teed to every client.

A file not yet stored is downloaded by exactly one task in the whole deployment, with one
upstream GET:
- in this process, concurrent requests share one `Spool` (a dict of downloads in flight);
  its task is independent of any client, so a client that disconnects never cancels the
  download for the others;
- across processes, a claim on the file's `file_downloads` row elects one leader. The row
  names the attempt, its spool file and a heartbeat the leader renews every few seconds;
  the others follow the spool as it grows (same host), or stream it from the leader's
  replica through its relay (other hosts, see relay.py) into a spool of their own; without
  a cluster secret they wait for the commit and serve the stored object. A claim not
  renewed within the lease belongs to a leader that is gone: the next one to look takes it
  over. A follower fails only when the attempt it joined fails, never on the row of an
  older one.

No database connection is held while bytes travel: the claim, the heartbeat and each state
change take one from the pool for one statement, so slow downloads never starve the pool.

What clients are sent of a file still arriving is the spool's business (see spool.py): never
a complete-looking body of a bad file. What counts as bad is verify.py's: an upstream
sending more than the page's size is cut off at the first byte too many. Only a verified
file is committed to the store and marked stored, in that order. A failed download is
logged once, by `_run`, whoever met the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Mapping
from pathlib import Path

from mypypi2 import observe, relay
from mypypi2.clock import Clock
from mypypi2.db import Database
from mypypi2.errors import (
    DatabaseUnavailable,
    RelayUnavailable,
    UpstreamError,
    VerificationFailed,
)
from mypypi2.queries import files as files_queries
from mypypi2.queries.files import DownloadRow, FileRow
from mypypi2.relay import RelayClient
from mypypi2.spool import Spool, Stage
from mypypi2.storage import Storage, storage_key
from mypypi2.upstream.client import UpstreamClient
from mypypi2.urls import redact_url
from mypypi2.verify import Verifier

log = logging.getLogger(__name__)

# How often a follower in another process looks at the leader's spool and state.
FOLLOW_POLL_SECONDS = 0.05
# How often a leader renews its claim, and how long an unrenewed claim stands.
HEARTBEAT_SECONDS = 2.0
LEASE_SECONDS = 10.0
# How long a stopping worker waits for its downloads in flight before cancelling them.
SHUTDOWN_GRACE_SECONDS = 30.0
# A follower whose relay stream was cut asks again this often, this many times in a row
# without a byte, while the attempt lives (a leader that is gone stops answering for good).
RELAY_RETRY_SECONDS = 0.5
RELAY_RETRIES = 5


class Downloads:
    """The downloads of files in flight in this process, led or followed."""

    def __init__(
        self,
        db: Database,
        storage: Storage,
        clients: Mapping[str, UpstreamClient],
        observer: observe.Observer,
        *,
        secret: str | None = None,
        advertise_url: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        """`secret` (the cluster's): stream from other replicas' relays; with
        `advertise_url` too, relay the downloads led here to them."""
        self._db = db
        self._observer = observer
        self._storage = storage
        self._clients = clients
        self._clock = clock
        self._secret = secret
        self._advertise_url = advertise_url if secret is not None else None
        self._relay_client = RelayClient(secret) if secret is not None else None
        self._spools: dict[int, Spool] = {}
        # Downloads led by another worker of this host, mirrored for relays (by attempt).
        self._relayed: dict[uuid.UUID, Spool] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly

    async def stream(
        self, repository: str, row: FileRow
    ) -> tuple[int | None, AsyncIterator[bytes]]:
        """Join (or start) the one download of a file; returns its length and a reader.

        Returns once the first bytes may be sent, so that a download failing before them
        raises here, before the client's response has started. After that, a failed
        download makes the reader raise, which cuts the client's response short.
        """
        spool = self._spools.get(row.id)
        if spool is None:
            spool = Spool(expected_size=row.size)
            self._spools[row.id] = spool
            self._start(self._run(repository, row, spool))
        else:
            observe.joined()
        answer = await _reading(spool.read(self._storage), spool)
        if spool.followed:
            observe.joined()
        observe.answered_as("miss")
        return answer

    async def relay(
        self, file_id: int, attempt: uuid.UUID, start: int, presented: str
    ) -> tuple[int | None, AsyncIterator[bytes]] | None:
        """The bytes of download `attempt`, led on this host, from `start` on, for a follower
        on another host (see relay.py); None unless the token is authentic and the attempt
        is one this host relays. Returns once the first bytes may be sent, like `stream`."""
        if (
            self._secret is None
            or self._advertise_url is None
            or not relay.authentic(self._secret, file_id, attempt, presented)
        ):
            return None
        spool = self._spools.get(file_id)
        if spool is None or spool.attempt != attempt:
            spool = self._relayed.get(attempt)
        if spool is None:
            record = await files_queries.get_download(self._db, file_id, LEASE_SECONDS)
            if (
                record is None
                or record.attempt != attempt
                or record.relay_url != self._advertise_url
            ):
                return None
            row = await files_queries.get_by_id(self._db, file_id)
            if row is None:
                return None
            spool = self._relayed[attempt] = Spool(attempt=attempt)
            self._start(self._mirror(row, spool, attempt))
        return await _reading(spool.read(self._storage, start), spool)

    async def close(self) -> None:
        """Let the downloads in flight finish, for a while, then cancel the rest: a client
        may hold every byte of a file whose commit to the store is still to come."""
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=SHUTDOWN_GRACE_SECONDS)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._relay_client is not None:
            await self._relay_client.close()

    def _start(self, work: Coroutine[None, None, None]) -> None:
        # The task belongs to no client: it runs to the end whoever disconnects.
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, row: FileRow, spool: Spool) -> None:
        if self._spools.get(row.id) is spool:
            del self._spools[row.id]

    async def _run(self, repository: str, row: FileRow, spool: Spool) -> None:
        """The download's one failure path, whoever (leader or follower) met the failure."""
        observe.current.set(None)  # its own: the request that started it may be gone
        try:
            while not await self._attempt(repository, row, spool):
                pass  # the attempt followed ended before giving us a byte: look again
        except BaseException as exc:
            # The clients hear of the failure only now, with the download forgotten and its
            # row marked failed: a client retrying at once starts a new download, never
            # joins this one.
            self._forget(row, spool)
            spool.failed(exc)
            if not isinstance(exc, Exception):
                raise
            url = redact_url(row.upstream_url)
            if isinstance(exc, VerificationFailed):
                self._observer.verification_failed(repository)
            if isinstance(exc, (UpstreamError, DatabaseUnavailable)):
                log.warning("download of %s failed: %s", url, exc)
            else:
                log.exception("download of %s failed", url)
        else:
            self._forget(row, spool)

    async def _mirror(self, row: FileRow, spool: Spool, attempt: uuid.UUID) -> None:
        """Follow another worker's download `attempt` on this host, for relays only."""
        try:
            if not await self._follow(row, spool, attempt):
                url = redact_url(row.upstream_url)
                raise UpstreamError(url, "the download ended before its first byte")
        except BaseException as exc:
            spool.failed(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            del self._relayed[attempt]

    async def _attempt(self, repository: str, row: FileRow, spool: Spool) -> bool:
        """Lead a new download of the file or follow the one under way in another process.

        False when the attempt followed ended, unstored, before giving us any byte: then
        nothing is lost by looking again (and maybe leading)."""
        attempt = uuid.uuid4()
        path = self._storage.spool_dir / f"{attempt.hex}.part"
        stored = None
        async with self._db.connection() as connection:
            claim = await files_queries.claim_download(
                connection, row.id, attempt, str(path), LEASE_SECONDS, self._advertise_url
            )
            if claim is None:
                current = await files_queries.get_download(connection, row.id, LEASE_SECONDS)
            else:
                stored = await files_queries.get_by_id(connection, row.id)
                if stored is not None and stored.stored_key is not None:
                    # By the leader just before us.
                    await files_queries.set_download_state(connection, row.id, attempt, "done")
        spool.followed = claim is None
        if claim is None:
            return current is not None and await self._follow(row, spool, current.attempt)
        if stored is not None and _mark_stored(spool, stored):
            return True
        if claim.previous_spool is not None:
            # Left by a leader that went away (if it was on this host): garbage now.
            Path(claim.previous_spool).unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
        await self._lead(repository, row, spool, attempt, path)
        return True

    async def _lead(
        self, repository: str, row: FileRow, spool: Spool, attempt: uuid.UUID, path: Path
    ) -> None:
        spool.path, spool.attempt = path, attempt
        heartbeat = asyncio.create_task(self._heartbeat(row, attempt))
        try:
            digest = await self._fetch(repository, row, spool, attempt, heartbeat)
            await self._commit(repository, row, spool, attempt, digest)
        except BaseException:
            path.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
            # Shielded: a cancelled download (shutdown) is marked failed too. With the
            # database away, the claim goes stale instead: followers give up or take over.
            with contextlib.suppress(DatabaseUnavailable):
                await asyncio.shield(
                    files_queries.set_download_state(self._db, row.id, attempt, "failed")
                )
            raise
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, row: FileRow, attempt: uuid.UUID) -> None:
        """Renews the claim until cancelled; returns once another process has taken it."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                renewed = await files_queries.renew_claim(self._db, row.id, attempt)
            except Exception as exc:  # the database is busy or away: try again next time
                log.warning("renewing the download of %s: %s", redact_url(row.upstream_url), exc)
                continue
            if not renewed:
                return

    async def _fetch(
        self,
        repository: str,
        row: FileRow,
        spool: Spool,
        attempt: uuid.UUID,
        heartbeat: asyncio.Task[None],
    ) -> str:
        """Download the file into the spool and verify it; its sha256."""
        assert spool.path is not None
        url = redact_url(row.upstream_url)  # for errors and logs; row.upstream_url is fetched
        verifier = Verifier(url, row.hashes, row.size)
        async with self._clients[repository].file(row.upstream_url) as body:
            verifier.announced(body.content_length)
            spool.expected_size = verifier.expected_size
            await files_queries.set_download_running(self._db, row.id, attempt, spool.expected_size)
            # Unbuffered, so followers see every chunk at once; writes land in the page cache.
            with open(spool.path, "wb", buffering=0) as out:  # noqa: ASYNC230
                async for chunk in body.chunks:
                    if heartbeat.done():
                        raise UpstreamError(url, "another worker took the download over")
                    verifier.update(chunk)  # before the write: no byte past the size lands
                    out.write(chunk)
                    spool.grew(verifier.received)
        digest = verifier.verify()
        spool.verified()
        await files_queries.set_download_verified(self._db, row.id, attempt)
        return digest

    async def _commit(
        self, repository: str, row: FileRow, spool: Spool, attempt: uuid.UUID, digest: str
    ) -> None:
        """Store the verified spool and mark the row stored, in that order."""
        assert spool.path is not None
        size = spool.written
        key = storage_key(repository, digest, row.filename)
        await self._storage.commit(key, spool.path, size)
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        async with self._db.transaction() as connection:
            marked = await files_queries.mark_stored(connection, row, key, size, digest, now)
            if marked:
                await files_queries.set_download_state(connection, row.id, attempt, "done")
        if not marked:
            # The page was saved with other hashes meanwhile: these bytes are no longer the
            # file it lists (unless another row holds the same object).
            if not await files_queries.key_in_use(self._db, key):
                await self._storage.delete(key)
            url = redact_url(row.upstream_url)
            raise VerificationFailed(url, "the page changed during the download")
        spool.stored(key, size)

    async def _follow(self, row: FileRow, spool: Spool, attempt: uuid.UUID) -> bool:
        """Mirror another process's download `attempt` into `spool`.

        True once the file is stored; False when the attempt ended otherwise (its leader
        went away, or a newer attempt replaced it) before we had a byte of it."""
        url = redact_url(row.upstream_url)
        spool.attempt = attempt
        relayed = self._storage.spool_dir / f"{attempt.hex}.relayed"
        try:
            while True:
                if spool.path != relayed and _spool_grew(spool):
                    await asyncio.sleep(FOLLOW_POLL_SECONDS)
                    continue
                record = await files_queries.get_download(self._db, row.id, LEASE_SECONDS)
                if record is not None and record.attempt == attempt and not record.stale:
                    if record.state == "failed":
                        raise UpstreamError(url, "the download failed in another worker")
                    if record.state == "running" and spool.path is None:
                        spool.expected_size = record.expected_size
                        if self._relays_elsewhere(record):
                            if not await self._pull_relay(row, spool, record, relayed):
                                return False
                            continue  # verified: the commit is still to come
                        spool.path = Path(record.spool_path)
                    if record.verified and spool.stage is Stage.RUNNING and _spool_full(spool):
                        spool.verified()  # the leader's clients get the last byte now too
                    if record.state in ("claimed", "running"):
                        await asyncio.sleep(FOLLOW_POLL_SECONDS)
                        continue
                stored = await files_queries.get_by_id(self._db, row.id)
                if stored is not None and _mark_stored(spool, stored):
                    return True
                if spool.written == 0:
                    return False
                raise UpstreamError(url, "the downloading worker went away")
        finally:
            if spool.path == relayed:  # ours: the leader's spool is its own business
                relayed.unlink(missing_ok=True)

    def _relays_elsewhere(self, record: DownloadRow) -> bool:
        """Whether the attempt is led on another host that relays it, and we may ask."""
        return (
            self._relay_client is not None
            and record.relay_url is not None
            and record.relay_url != self._advertise_url
        )

    async def _pull_relay(
        self, row: FileRow, spool: Spool, record: DownloadRow, path: Path
    ) -> bool:
        """Stream the attempt from its leader's replica into a spool of ours at `path`,
        verified as it comes; a stream cut short is resumed while the attempt lives.

        True once every byte is here and verified; False, with nothing kept, when the
        replica gave no byte and the attempt may be over (then look again)."""
        url = redact_url(row.upstream_url)
        verifier = Verifier(url, row.hashes, row.size)
        verifier.announced(record.expected_size)
        spool.expected_size = verifier.expected_size
        spool.path = path
        try:
            received = await self._relay_into(row, spool, record, verifier)
        except BaseException:
            path.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
            raise
        if not received:
            spool.path = None
            path.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
            return False
        verifier.verify()
        spool.verified()
        return True

    async def _relay_into(
        self, row: FileRow, spool: Spool, record: DownloadRow, verifier: Verifier
    ) -> bool:
        """`_pull_relay`'s loop: False when the replica gave no byte and the attempt may be
        over; True at the stream's clean end."""
        assert self._relay_client is not None and record.relay_url is not None
        assert spool.path is not None
        url = redact_url(row.upstream_url)
        failures = 0
        # Unbuffered, so our readers see every chunk at once, as in `_fetch`.
        with open(spool.path, "wb", buffering=0) as out:  # noqa: ASYNC230
            while True:
                before = verifier.received
                try:
                    async with self._relay_client.pull(
                        record.relay_url, row.id, record.attempt, verifier.received
                    ) as chunks:
                        async for chunk in chunks:
                            verifier.update(chunk)  # before the write, as in `_fetch`
                            out.write(chunk)
                            spool.grew(verifier.received)
                    break  # a clean end: the leader has verified every byte
                except RelayUnavailable as exc:
                    log.warning("following the download of %s: %s", url, exc)
                failures = 0 if verifier.received > before else failures + 1
                now = await files_queries.get_download(self._db, row.id, LEASE_SECONDS)
                if now is not None and now.state == "failed" and now.attempt == record.attempt:
                    raise UpstreamError(url, "the download failed in another replica")
                gone = now is None or now.attempt != record.attempt or now.stale
                if gone or failures >= RELAY_RETRIES:
                    if spool.written == 0:
                        return False
                    raise UpstreamError(url, "the replica leading the download went away")
                await asyncio.sleep(RELAY_RETRY_SECONDS)
        return True


def _spool_grew(spool: Spool) -> bool:
    """Whether a followed spool has more bytes than seen so far (then the readers hear)."""
    if spool.path is None:
        return False
    try:
        size = spool.path.stat().st_size
    except FileNotFoundError:  # not begun, committed, or on another host
        return False
    if size <= spool.written:
        return False
    spool.grew(size)
    return True


def _spool_full(spool: Spool) -> bool:
    """Whether a followed spool the leader has verified holds every byte here and now (it
    may already be on its way into the store)."""
    _spool_grew(spool)
    if spool.path is None or not spool.path.exists():
        return False
    return spool.expected_size is None or spool.written == spool.expected_size


def _mark_stored(spool: Spool, row: FileRow) -> bool:
    """Whether the row says the file is stored (then so does the spool, for its readers)."""
    if row.stored_key is None or row.stored_size is None:
        return False
    spool.stored(row.stored_key, row.stored_size)
    return True


async def _reading(
    reader: AsyncGenerator[bytes, None], spool: Spool
) -> tuple[int | None, AsyncIterator[bytes]]:
    """The spool's size and its reader, once its first bytes may be sent."""
    first = await anext(reader, b"")
    return spool.expected_size, _starting_with(first, reader)


async def _starting_with(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
