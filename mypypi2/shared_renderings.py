"""Large pages, rendered and compressed once per content for the whole deployment.

The project list of a big index runs to 700,000 names: 47 MB of HTML, 19 MB of JSON, and
their compressed forms. Held by every worker, that is a few hundred MB each, and rendering
it costs each worker seconds. So a page whose rendering would pass a size threshold is
rendered by whichever worker needs it first (the one that refreshed it, as a rule), in
every media type and coding, into objects of the store; rows of page_renderings say which
object is which form. Every worker and replica then serves those objects (zero-copy from
disk where the server offers pathsend, streamed otherwise) and holds only their keys, sizes
and ETags.

The keys start with `.pages/`, which no stored file's key can (a repository name starts with
a letter or a digit), and name the content's digest: two workers rendering the same content
at once write the same bytes under the same keys. Renderings of a page's older contents are
deleted a while after a newer one is made (queries/page_renderings.py says how long).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Protocol

import zstandard

from mypypi2.negotiate import CODINGS
from mypypi2.queries.page_renderings import Rendering
from mypypi2.snapshot import StoredBody
from mypypi2.storage import Storage

KEY_ROOT = ".pages"
# A form's object is named by its media type's index and its coding.
_SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}
_FORMS = ("", *CODINGS)  # "": the identity
# A form written to the store's spool: its coding ("" for the identity), file and size.
_Spooled = tuple[str, Path, int]


class SharedRenderings:
    def __init__(self, storage: Storage, *, above: int) -> None:
        self._storage = storage
        self.above = above  # bytes of the larger rendering from which a page is shared

    async def make(
        self,
        folder: str,
        media_types: Iterable[tuple[str, ...]],
        render: Callable[[str], Iterable[bytes]],
    ) -> list[Rendering]:
        """Render each group of media types with `render` (a group shares one body: HTML
        as text/html and as PEP 691 HTML) and store it, in every coding, under `folder` (a
        name of the page's content); each media type keeps its own ETag, as a held
        rendering has. In a thread, piece by piece: the body is never whole in memory."""
        made: list[Rendering] = []
        for index, group in enumerate(media_types):
            etags, forms = await asyncio.to_thread(self._write_forms, group, render(group[0]))
            for encoding, spool, size in forms:
                key = f"{KEY_ROOT}/{folder}/{index}{_SUFFIXES.get(encoding, '')}"
                await self._storage.commit(key, spool, size)
                made += [Rendering(m, encoding, key, size, etags[m]) for m in group]
        _give_back_memory()
        return made

    def _write_forms(
        self, group: tuple[str, ...], pieces: Iterable[bytes]
    ) -> tuple[dict[str, str], list[_Spooled]]:
        """Each media type's ETag, and each form as spooled."""
        digests = {m: hashlib.blake2b(m.encode(), digest_size=16) for m in group}
        spools = {e: self._storage.spool_dir / f"rendering-{uuid.uuid4().hex}" for e in _FORMS}
        with ExitStack() as files:
            outs = {e: files.enter_context(open(path, "wb")) for e, path in spools.items()}
            coders = {e: _compressor(e) for e in CODINGS}
            for piece in pieces:
                for digest in digests.values():
                    digest.update(piece)
                outs[""].write(piece)
                for encoding, coder in coders.items():
                    outs[encoding].write(coder.compress(piece))
            for encoding, coder in coders.items():
                outs[encoding].write(coder.flush())
            sizes = {e: out.tell() for e, out in outs.items()}
        etags = {m: f'"{digest.hexdigest()}"' for m, digest in digests.items()}
        return etags, [(e, spools[e], sizes[e]) for e in _FORMS]

    def body(self, page: tuple[str, str], rendering: Rendering) -> StoredBody:
        path = self._storage.local_path(rendering.storage_key)
        return StoredBody(
            page, rendering.storage_key, rendering.size, None if path is None else str(path)
        )

    async def open(self, body: StoredBody) -> AsyncIterator[bytes]:
        """The stored bytes, chunk by chunk; StoredObjectMissing, before any, when gone."""
        return await self._storage.open(body.key, 0, body.size)

    async def delete(self, keys: list[str]) -> None:
        if keys:
            await self._storage.delete_many(keys)


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def _compressor(encoding: str) -> _Compressor:
    if encoding == "gzip":
        # The stream gzip.compress(body, 6, mtime=0) makes in one call, whatever the pieces.
        return zlib.compressobj(6, zlib.DEFLATED, 31)
    # Level 3: level 10 (small held pages) takes a second per 50 MB, for a few % less.
    return zstandard.ZstdCompressor(level=3).compressobj()


def folder(repository: str, name: str, content_hash: bytes, prefix: str) -> str:
    """Where one content's renderings go: the page, then its content and URL prefix."""
    variant = hashlib.blake2b(prefix.encode(), digest_size=4).hexdigest()
    # "_list" is no project name: normalized names have no "_".
    return f"{repository}/{name or '_list'}/{content_hash.hex()}-{variant}"


def _give_back_memory() -> None:
    """Return the heap the renderings' bodies took to the system: glibc keeps freed memory
    of other threads' arenas (the bodies are made in one) for reuse, and a worker that made
    a 700,000-name list's renderings would hold about 100 MB more, for good."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (not musl, not macOS)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
