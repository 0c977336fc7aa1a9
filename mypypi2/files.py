"""File use case: find the file behind one of our URLs, serve what is stored, fetch the rest.

Stored files and PEP 658 metadata never change, so each worker remembers them; a file not
yet stored is fetched by `download.Downloads`, once for the whole deployment, and teed to
every client that asks meanwhile. Metadata is small: it is fetched whole, verified against
the page's hash and kept in PostgreSQL.

An object the store lost behind our back (a cleanup job, a bucket lifecycle rule) is
noticed where it costs nothing extra: when a worker first learns of a stored file (one
existence check), and whenever a disk object fails to stat or any object fails to open.
The row then lets go of it and the file is fetched again. Clients redirected to a bucket
are not checked on every request (that would cost a round trip to the bucket each time):
an object deleted after a worker has checked it is noticed once that worker forgets the
file (restart, eviction, a purge).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from mypypi2 import names, observe
from mypypi2.clock import Clock
from mypypi2.db import Database
from mypypi2.download import Downloads
from mypypi2.errors import (
    FileNotFound,
    ProjectNotFound,
    StoredObjectMissing,
    UpstreamError,
    UpstreamNotFound,
    VerificationFailed,
)
from mypypi2.file_headers import FileHeaders, file_headers
from mypypi2.lru import LRU
from mypypi2.pages import Pages
from mypypi2.queries import Executor
from mypypi2.queries import files as files_queries
from mypypi2.queries.files import FileRow
from mypypi2.queries.notifications import Purged
from mypypi2.storage import Storage, StoredFile
from mypypi2.upstream.client import UpstreamClient
from mypypi2.upstream.coalesce import Coalescer
from mypypi2.upstream.parse_rules import MAX_FILENAME_BYTES
from mypypi2.urls import redact_url
from mypypi2.usage import LastUse
from mypypi2.verify import Verifier

log = logging.getLogger(__name__)

METADATA_SUFFIX = ".metadata"
MAX_METADATA_BYTES = 16 * 1024 * 1024
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Metadata:
    """A PEP 658 metadata file, verified."""

    body: bytes
    sha256: str
    headers: FileHeaders  # built once: every answer of the file sends them

    @classmethod
    def of(cls, body: bytes) -> Metadata:
        sha256 = hashlib.sha256(body).hexdigest()
        return cls(body, sha256, file_headers(sha256, len(body), None, ranges=False))


@dataclass(frozen=True, slots=True)
class KnownFile:
    """A stored file this worker knows of, and where it is sent from."""

    stored: StoredFile
    # The object as a local file (a disk store), found once: every request of a stored file
    # needs it, and building the path again would cost more than the stat it gets.
    path: str | None
    headers: FileHeaders  # built once: every answer of the file sends them

    @classmethod
    def of(cls, stored: StoredFile, path: str | None) -> KnownFile:
        headers = file_headers(stored.sha256, stored.size, stored.last_modified, ranges=True)
        return cls(stored, path, headers)


@dataclass(frozen=True, slots=True)
class PendingFile:
    """A file the store does not have yet: what is known before downloading it."""

    row: FileRow


class Files:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        pages: Pages,
        clients: Mapping[str, UpstreamClient],
        usage: LastUse,
        observer: observe.Observer,
        *,
        cache_entries: int = 16384,
        offline: bool = False,
        cluster_secret: str | None = None,
        advertise_url: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._offline = offline
        self._observer = observer
        self._db = db
        # Every stored file served counts as used (eviction goes least recently used first).
        self._usage = usage
        self._storage = storage
        self._pages = pages
        self._clients = clients
        self._downloads = Downloads(
            db,
            storage,
            clients,
            observer,
            secret=cluster_secret,
            advertise_url=advertise_url,
            clock=clock,
        )
        self._fetching_metadata = Coalescer[int, bytes]()
        # Stored files and metadata never change: this worker remembers them, keyed by
        # (repository, project, filename), without asking the database again.
        self._stored: LRU[tuple[str, str, str], KnownFile] = LRU(cache_entries)
        self._metadata: LRU[tuple[str, str, str], Metadata] = LRU(cache_entries)

    async def close(self) -> None:
        """At shutdown, before the database and the upstream sessions close."""
        await self._downloads.close()

    @property
    def storage(self) -> Storage:
        return self._storage

    def forget(self, purged: Purged) -> None:
        """Another process purged stored files: stop answering from this worker's memory."""
        if purged.files:
            self._stored.drop(lambda key: purged.covers(key[0], key[1]))
            self._metadata.drop(lambda key: purged.covers(key[0], key[1]))

    def warm(self, repository: str, project: str, filename: str) -> KnownFile | None:
        """The file when this worker already knows it is stored, else None (then `find`)."""
        known = self._stored.get((repository, project, filename))
        if known is not None:
            self._usage.used(known.stored.key)
        return known

    def warm_metadata(self, repository: str, project: str, filename: str) -> Metadata | None:
        """A file's metadata when this worker holds it, else None (then `metadata`)."""
        return self._metadata.get((repository, project, filename))

    async def find(self, repository: str, project: str, filename: str) -> KnownFile | PendingFile:
        """The file behind one of our URLs; FileNotFound when no page lists it."""
        cache_key = (repository, project, filename)
        known = self._stored.get(cache_key)
        if known is None:
            row = await self._row(repository, project, filename)
            if row.stored_key is None:
                return self._pending(repository, project, row)
            stored = _stored_file(row)
            if not await self._storage.exists(stored.key):
                return await self._lost(repository, project, stored)
            path = self._storage.local_path(stored.key)
            known = KnownFile.of(stored, None if path is None else str(path))
            self._stored.put(cache_key, known)
        self._usage.used(known.stored.key)
        return known

    async def stat(
        self, repository: str, project: str, known: KnownFile
    ) -> os.stat_result | PendingFile:
        """The stat of a stored file on disk (`known.path`, sent whole from there); a
        PendingFile when the object is gone (see `_lost`)."""
        assert known.path is not None
        # Not in a thread, as FileResponse would: that costs more than the stat of a file
        # the page cache holds.
        try:
            return os.stat(known.path)
        except FileNotFoundError:  # removed behind our back (a cleanup job, an operator)
            return await self._lost(repository, project, known.stored)

    async def open(
        self, repository: str, project: str, known: KnownFile, start: int, end: int
    ) -> AsyncIterator[bytes] | PendingFile:
        """Bytes [start, end) of a stored file; a PendingFile when the store lost it (see
        `_lost`)."""
        try:
            chunks = await self._storage.open(known.stored.key, start, end)
        except StoredObjectMissing:
            return await self._lost(repository, project, known.stored)
        # A stream may outlast the eviction's grace period: it is a use until it ends.
        return self._usage.reading(known.stored.key, chunks)

    async def _lost(self, repository: str, project: str, stored: StoredFile) -> PendingFile:
        """The store no longer has `stored`: let go of it, so that it is fetched again."""
        log.warning("stored object %s is gone from the store: fetching it again", stored.key)
        self._stored.pop((repository, project, stored.filename))
        row = await self._row(repository, project, stored.filename)
        await files_queries.clear_lost(self._db, row.id, stored.key)
        return self._pending(repository, project, row)

    def _pending(self, repository: str, project: str, row: FileRow) -> PendingFile:
        if self._offline:
            raise FileNotFound(repository, project, row.filename)
        return PendingFile(row)

    async def _row(self, repository: str, project: str, filename: str) -> FileRow:
        # Our URLs carry configured repositories and canonical names only; anything else
        # must never reach the database (a NUL is no text there) or, through the page, the
        # upstream (a `..` project would be a path there).
        if (
            repository not in self._clients
            or names.canonical_name(project) != project
            # No page lists a longer name (in bytes, which are never fewer than characters).
            or len(filename) > MAX_FILENAME_BYTES
            or not names.is_safe_filename(filename)
            or _CONTROL_CHARACTER.search(filename) is not None
        ):
            raise FileNotFound(repository, project, filename)
        row = await files_queries.get(self._db, repository, project, filename)
        if row is None:
            # A client may come straight to a file URL (a lock file, a cold worker): the
            # page tells whether the file exists, so make sure we hold a current one.
            try:
                await self._pages.project(repository, project)
            except ProjectNotFound as exc:
                raise FileNotFound(repository, project, filename) from exc
            row = await files_queries.get(self._db, repository, project, filename)
        if row is None:
            raise FileNotFound(repository, project, filename)
        return row

    async def stream(
        self, repository: str, pending: PendingFile
    ) -> tuple[int | None, AsyncIterator[bytes]]:
        """Join (or start) the one download of a file: see `Downloads.stream`."""
        return await self._downloads.stream(repository, pending.row)

    async def relay(
        self, file_id: int, attempt: uuid.UUID, start: int, token: str
    ) -> tuple[int | None, AsyncIterator[bytes]] | None:
        """A download led on this host, for another replica: see `Downloads.relay`."""
        return await self._downloads.relay(file_id, attempt, start, token)

    async def metadata(self, repository: str, project: str, filename: str) -> Metadata:
        """The PEP 658 metadata of a file whose page advertises it, verified and kept."""
        cache_key = (repository, project, filename)
        known = self._metadata.get(cache_key)
        if known is not None:
            return known
        row = await self._row(repository, project, filename)
        if row.core_metadata is None:
            raise FileNotFound(repository, project, filename + METADATA_SUFFIX)
        body = await files_queries.get_metadata(self._db, row.id)
        if body is None:
            if self._offline:
                raise FileNotFound(repository, project, filename + METADATA_SUFFIX)
            body = await self._fetching_metadata.run(
                row.id, lambda: self._fetch_metadata(repository, row)
            )
            observe.answered_as("miss")
        metadata = Metadata.of(body)
        self._metadata.put(cache_key, metadata)
        return metadata

    async def _fetch_metadata(self, repository: str, row: FileRow) -> bytes:
        # Coalesced in this process only: holding a lock across processes would hold a
        # pooled connection for the upstream's whole answer, and a resolver asks for dozens
        # of metadata files at once. Another worker may fetch the same small file meanwhile.
        url = row.upstream_url + METADATA_SUFFIX
        shown = redact_url(url)  # what errors say: they reach clients
        try:
            try:
                body = await self._clients[repository].small_file(url, MAX_METADATA_BYTES)
            except UpstreamNotFound as exc:
                reason = "the page advertises metadata the upstream lacks"
                raise UpstreamError(shown, reason) from exc
            assert row.core_metadata is not None
            verifier = Verifier(shown, row.core_metadata, what="metadata ")
            verifier.update(body)
            verifier.verify()
            if not await files_queries.save_metadata(self._db, row.id, body, row.core_metadata):
                raise UpstreamError(shown, "the page changed while its metadata was fetched")
        except UpstreamError as exc:
            # Logged once here, for every request waiting (each gets a 502).
            log.warning("metadata fetch failed: %s", exc)
            if isinstance(exc, VerificationFailed):
                self._observer.verification_failed(repository)
            raise
        return body


def _stored_file(row: FileRow) -> StoredFile:
    assert row.stored_key is not None
    assert row.stored_size is not None and row.stored_sha256 is not None
    stored_at = int(row.stored_at.timestamp()) if row.stored_at is not None else None
    return StoredFile(row.stored_key, row.stored_size, row.stored_sha256, row.filename, stored_at)


async def purge_stored(
    db: Executor, storage: Storage, repository: str, names: list[str] | None
) -> int:
    """Delete the stored files of some projects (all when `names` is None).

    The rows let go first, so no worker starts serving an object being deleted."""
    keys = await files_queries.clear_stored(db, repository, names)
    for key in keys:
        await storage.delete(key)
    return len(keys)
