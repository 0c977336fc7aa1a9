"""Files in an S3-compatible bucket (AWS, MinIO, Ceph, R2) through aiobotocore.

Large files go up as multipart uploads read part by part from the spool, so memory stays
at one part whatever the file size; the object appears only when the upload completes.
Clients are sent to the object (a presigned URL, or a public/CDN prefix) or, with
redirects off, the bytes are streamed through the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from mypypi2.errors import StoredObjectMissing
from mypypi2.storage import CHUNK_BYTES, Redirect

# The most keys one DeleteObjects request may name (the S3 API's limit).
DELETE_BATCH = 1000


class S3Storage:
    def __init__(
        self,
        client: Any,  # aiobotocore S3 client; it ships no type information
        *,
        bucket: str,
        prefix: str,
        spool_dir: Path,
        redirect_status: int,  # 0: stream through the service
        public_url: str,
        presign_seconds: int,
        part_size: int,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.spool_dir = spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._redirect_status = redirect_status
        self._public_url = public_url.rstrip("/")
        self._presign_seconds = presign_seconds
        self._part_size = part_size

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def commit(self, key: str, spool: Path, size: int) -> None:
        try:
            if size <= self._part_size:
                body = await asyncio.to_thread(spool.read_bytes)
                await self._client.put_object(Bucket=self._bucket, Key=self._key(key), Body=body)
            else:
                await self._multipart(self._key(key), spool)
        finally:
            spool.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink

    async def _multipart(self, key: str, spool: Path) -> None:
        upload = await self._client.create_multipart_upload(Bucket=self._bucket, Key=key)
        upload_id = upload["UploadId"]
        parts = []
        try:
            with open(spool, "rb") as file:  # noqa: ASYNC230 - reads go through a thread
                number = 1
                while chunk := await asyncio.to_thread(file.read, self._part_size):
                    part = await self._client.upload_part(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            )
            raise

    async def exists(self, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=self._bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self._bucket, Key=self._key(key))

    async def delete_many(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            answer = await self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": self._key(key)} for key in batch], "Quiet": True},
            )
            # A missing key is no error to S3; anything listed here was not deleted.
            errors = answer.get("Errors", [])
            if errors:
                first = errors[0]
                raise OSError(
                    f"{len(errors)} object(s) not deleted, e.g. {first.get('Key')!r}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

    def local_path(self, key: str) -> Path | None:
        return None

    async def redirect(self, key: str) -> Redirect | None:
        if not self._redirect_status:
            return None
        if self._public_url:
            return Redirect(f"{self._public_url}/{quote(self._key(key))}", self._redirect_status)
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._key(key)},
            ExpiresIn=self._presign_seconds,
        )
        return Redirect(url, self._redirect_status)

    async def open(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:  # no Range header can ask for nothing
            if not await self.exists(key):
                raise StoredObjectMissing(key)
            return _chunks(())
        try:
            response = await self._client.get_object(
                Bucket=self._bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}"
            )
        except ClientError as exc:
            if _is_missing(exc):
                raise StoredObjectMissing(key) from exc
            raise
        return _read(response["Body"])


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


async def _read(body: Any) -> AsyncIterator[bytes]:
    async with body:
        while chunk := await body.read(CHUNK_BYTES):
            yield chunk


async def _chunks(chunks: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
