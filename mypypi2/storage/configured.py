"""The store the configuration names, opened for one process (a worker or a CLI command)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from mypypi2.config import Config, data_dir
from mypypi2.storage import Storage
from mypypi2.storage.disk import DiskStorage
from mypypi2.storage.s3 import S3Storage


async def open_storage(config: Config, stack: AsyncExitStack) -> Storage:
    """The configured store; resources it opens are closed with `stack`."""
    settings = config.storage
    if settings.backend == "disk":
        return DiskStorage(Path(settings.path) if settings.path else data_dir(config) / "files")
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    client = await stack.enter_async_context(
        get_session().create_client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region or None,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=AioConfig(
                signature_version="s3v4", s3={"addressing_style": settings.addressing_style}
            ),
        )
    )
    return S3Storage(
        client,
        bucket=settings.bucket,
        prefix=settings.prefix,
        spool_dir=data_dir(config) / "incoming",
        redirect_status=settings.redirect_status if settings.redirect else 0,
        public_url=settings.public_url,
        presign_seconds=settings.presign_seconds,
        part_size=settings.part_size,
    )
