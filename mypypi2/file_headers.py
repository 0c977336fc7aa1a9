"""The response headers of a file's bytes: a stored file, a metadata file, a download.

Built once per stored file and metadata file a worker holds (they travel with it, see
files.KnownFile), so the warm path (routes/warm.py) and the routes (routes/files.py) send
the very same bytes; built per request only for a file still arriving.
"""

from __future__ import annotations

from dataclasses import dataclass

from mypypi2.snapshot import RawHeaders

# A filename's content never changes (the index forbids re-uploads, and we keep serving the
# bytes we stored first), so clients and proxies may keep a file forever.
IMMUTABLE = "public, max-age=31536000, immutable"
OCTETS = "application/octet-stream"


def etag_of(sha256: str) -> str:
    """The ETag of bytes with this digest, in every answer that carries them: a file or
    metadata body pending, stored or redirected to is validated the same way."""
    return f'"{sha256}"'


@dataclass(frozen=True, slots=True)
class FileHeaders:
    size: int | None
    # What every answer about these bytes carries: a 304, a redirect, a range, a 416.
    validators: RawHeaders
    # The whole body, 200 (and its HEAD).
    whole: RawHeaders

    def part(self, start: int, end: int) -> RawHeaders:
        """Of a 206 with bytes [start, end) of a stored file (whose size is known)."""
        return [
            *self.validators,
            (b"content-type", OCTETS.encode()),
            (b"accept-ranges", b"bytes"),
            (b"content-range", f"bytes {start}-{end - 1}/{self.size}".encode()),
            (b"content-length", str(end - start).encode()),
        ]

    def unsatisfiable(self) -> RawHeaders:
        """Of a 416: the range asked for starts past the end."""
        return [
            *self.validators,
            (b"accept-ranges", b"bytes"),
            (b"content-range", f"bytes */{self.size}".encode()),
            (b"content-length", b"0"),
        ]


def file_headers(
    sha256: str | None, size: int | None, last_modified: str | None, *, ranges: bool
) -> FileHeaders:
    """The headers of a file's bytes, stored or still arriving (then the digest and size
    are what the page said, if it did)."""
    validators = [(b"cache-control", IMMUTABLE.encode())]
    if sha256 is not None:
        validators.insert(0, (b"etag", etag_of(sha256).encode()))
    if last_modified is not None:
        validators.append((b"last-modified", last_modified.encode()))
    whole = [*validators, (b"content-type", OCTETS.encode())]
    if ranges:  # of a stored file: metadata is small, a file still arriving is sent whole
        whole.append((b"accept-ranges", b"bytes"))
    if size is not None:
        whole.append((b"content-length", str(size).encode()))
    return FileHeaders(size, validators, whole)
