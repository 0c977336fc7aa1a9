"""The probes: `/-/health` answers whenever the process does, `/-/ready` names the part
(the store here; the database in test_database_outage.py, the shutdown in
test_shutdown.py) that stops the worker from serving, and turns back once it works.

The store is made unwritable in ways root cannot write through: the disk store's directory
replaced by a file (a volume gone), the S3 bucket removed.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import boto3
import msgspec

from mypypi2.config import StorageConfig
from mypypi2.storage import PROBE_PREFIX
from tests.support.cache import StartCache
from tests.support.http import Answer, get
from tests.support.waiting import eventually


async def ready(http: aiohttp.ClientSession, base: str) -> Answer:
    return await get(http, f"{base}/-/ready")


async def answers(http: aiohttp.ClientSession, base: str, status: int) -> bool:
    return (await ready(http, base))[0] == status


async def test_ready_names_the_disk_store_while_its_directory_is_gone(
    start_cache: StartCache, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    cache = await start_cache(storage=StorageConfig(path=str(root)))
    status, _, body = await ready(http, cache.url)
    assert (status, body) == (200, b"ready\n")
    # The probe leaves nothing behind: no object, no spool file.
    assert not (root / PROBE_PREFIX).exists() or not any((root / PROBE_PREFIX).iterdir())
    assert not any((root / ".incoming").iterdir())

    root.rename(tmp_path / "away")
    root.write_text("")  # a file where the store's directory must be
    try:
        await eventually(lambda: answers(http, cache.url, 503), "not ready")
        status, headers, body = await ready(http, cache.url)
        health = await get(http, f"{cache.url}/-/health")
    finally:
        root.unlink()
        (tmp_path / "away").rename(root)

    assert body.startswith(b"not ready\nstore: NotADirectoryError: "), body
    assert b"database" not in body
    assert headers["Cache-Control"] == "no-store"
    assert health[0] == 200  # alive all the same: a restart would not bring the volume back
    await eventually(lambda: answers(http, cache.url, 200), "ready again")


async def test_ready_names_the_s3_store_while_its_bucket_is_gone(
    start_cache: StartCache, http: aiohttp.ClientSession, s3_storage: StorageConfig
) -> None:
    cache = await start_cache(storage=s3_storage)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_storage.endpoint_url,
        region_name=s3_storage.region,
        aws_access_key_id=s3_storage.access_key_id,
        aws_secret_access_key=s3_storage.secret_access_key,
    )
    assert (await ready(http, cache.url))[0] == 200
    assert "Contents" not in s3.list_objects_v2(Bucket=s3_storage.bucket)  # probe cleaned up

    s3.delete_bucket(Bucket=s3_storage.bucket)
    try:
        await eventually(lambda: answers(http, cache.url, 503), "not ready")
        _, _, body = await ready(http, cache.url)
    finally:
        s3.create_bucket(Bucket=s3_storage.bucket)

    assert body.startswith(b"not ready\nstore: NoSuchBucket: "), body
    await eventually(lambda: answers(http, cache.url, 200), "ready again")


def test_the_probe_key_can_never_be_a_stored_file() -> None:
    # Stored keys start with a repository name, which must start with a letter or digit.
    from mypypi2.config import RepositoryConfig

    try:
        RepositoryConfig(name=PROBE_PREFIX, upstream="http://upstream.example/simple/")
    except (ValueError, msgspec.ValidationError):
        return
    raise AssertionError(f"a repository may be named {PROBE_PREFIX!r}")
