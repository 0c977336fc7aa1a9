"""A file through the cache: the store it lands in, how a test fetches it, its stored row."""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yarl
from multidict import CIMultiDictProxy

from mypypi2.config import StorageConfig
from tests.local_upstream import UpstreamFile
from tests.support.http import Answer
from tests.support.waiting import eventually


def content(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


SDIST = UpstreamFile("demo-1.0.tar.gz", content(300 * 1024, seed=1))


def upstream_path(file: UpstreamFile) -> str:
    return f"/files/demo/{file.filename}"


def our_path(file: UpstreamFile) -> str:
    return f"/pypi/files/demo/{file.filename}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Store:
    """One store configuration, and what a test can see of it from outside the cache."""

    kind: str  # "disk", "s3" (redirects) or "s3-stream" (stream-through)
    config: StorageConfig
    spool_dir: Path  # downloads in progress

    @property
    def redirects(self) -> bool:
        return self.kind == "s3"

    def objects(self) -> list[str]:
        """Every key in the store (for disk: every file under the root, spool excepted)."""
        if self.kind == "disk":
            root = Path(self.config.path)
            if not root.exists():
                return []
            return sorted(
                path.relative_to(root).as_posix()
                for path in root.rglob("*")
                if path.is_file() and not path.is_relative_to(self.spool_dir)
            )
        listing = s3_client(self.config).list_objects_v2(Bucket=self.config.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def spooled(self) -> list[str]:
        """Downloads left in the spool directory."""
        if not self.spool_dir.exists():
            return []
        return sorted(path.name for path in self.spool_dir.iterdir())

    def key(self, file: UpstreamFile) -> str:
        """The object a stored file must be under, as the store names it."""
        prefix = f"{self.config.prefix}/" if self.config.prefix else ""
        return f"{prefix}pypi/{file.sha256[:2]}/{file.sha256}/{file.filename}"


def s3_client(config: StorageConfig) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
    )


def disk_store(tmp_path: Path) -> Store:
    root = tmp_path / "store"
    return Store("disk", StorageConfig(path=str(root)), root / ".incoming")


def s3_store(config: StorageConfig, tmp_path: Path, kind: str = "s3") -> Store:
    # The S3 store spools downloads in the data directory (start_cache: tmp_path / "data").
    return Store(kind, config, tmp_path / "data" / "incoming")


async def fetch(
    http: aiohttp.ClientSession,
    url: str | yarl.URL,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Answer:
    async with http.request(method, url, headers=headers, allow_redirects=False) as response:
        return Answer(response.status, response.headers, await response.read())


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET `target` sent exactly as written (a client library would normalize `..`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(answer.split(b" ", 2)[1]), answer


async def file_row(db: asyncpg.Connection, filename: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT id, size, stored_key, stored_size, stored_sha256, metadata_body"
        " FROM files WHERE filename = $1",
        filename,
    )
    assert row is not None, f"no row for {filename}"
    return row


async def wait_stored(db: asyncpg.Connection, file: UpstreamFile) -> asyncpg.Record:
    """The row once marked stored (the last client may finish just before the commit)."""

    async def stored() -> bool:
        return (await file_row(db, file.filename))["stored_key"] is not None

    await eventually(stored, f"{file.filename} marked stored")
    return await file_row(db, file.filename)


async def assert_stored(db: asyncpg.Connection, store: Store, file: UpstreamFile) -> None:
    row = await wait_stored(db, file)
    assert row["stored_size"] == len(file.content)
    assert row["stored_sha256"] == file.sha256
    assert store.objects() == [store.key(file)]
    assert store.spooled() == []


async def assert_nothing_stored(db: asyncpg.Connection, store: Store, file: UpstreamFile) -> None:
    row = await file_row(db, file.filename)
    assert (row["stored_key"], row["stored_size"], row["stored_sha256"]) == (None, None, None)
    assert store.objects() == []
    assert store.spooled() == []


@dataclass(frozen=True)
class Attempt:
    """A download that may break: status, headers, what arrived, and how the body ended."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    error: BaseException | None


async def attempt(
    http: aiohttp.ClientSession, url: str, first_chunk: asyncio.Event | None = None
) -> Attempt:
    """GET `url` to the end or until it breaks; `first_chunk` is set when bytes arrive."""
    async with http.get(url) as response:
        body = bytearray()
        try:
            async for chunk in response.content.iter_any():
                body += chunk
                if first_chunk is not None:
                    first_chunk.set()
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            return Attempt(response.status, response.headers, bytes(body), exc)
        return Attempt(response.status, response.headers, bytes(body), None)
