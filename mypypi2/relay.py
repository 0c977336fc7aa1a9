"""Cross-host coalescing: a download led on one replica streams to the clients of the others.

Replicas share PostgreSQL and the bucket, not a disk. The leader of a download records in
its `file_downloads` row where its replica relays (the advertise URL); a follower on
another host asks there for that attempt's bytes as they arrive,
`GET /-/relay/{file_id}/{attempt}?offset=N`, and tees them into a spool of its own for its
clients. Whichever worker of the leader's host answers reads the leader's spool (they
share the host's disk), so one upstream GET still feeds every replica.

- Authentication: the follower sends an HMAC of the download (file id, attempt) keyed with
  the shared secret. The secret itself never travels, and a token read off the wire opens
  only the bytes of that one download; compared in constant time.
- The stream ends cleanly only once the leader has verified every byte. A failure (the
  upstream, the hash, the leader going away) aborts the connection: the follower never
  mistakes a cut for an end. It verifies the hashes itself all the same before its own
  clients get the last byte.
- `offset` lets a follower whose stream was cut resume where it stopped, as long as the
  attempt lives.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from mypypi2.config import ClusterConfig, ServerConfig
from mypypi2.errors import RelayUnavailable
from mypypi2.storage import CHUNK_BYTES

RELAY_PATH = "/-/relay"
# A peer on the same network answers a connection at once; a relay may stay silent while the
# leader waits for the upstream's next bytes, so a silent read only resumes the stream.
CONNECT_SECONDS = 3.0
SILENT_READ_SECONDS = 30.0


def advertised(cluster: ClusterConfig, server: ServerConfig) -> str | None:
    """Where the other replicas reach this one; None when it relays to nobody."""
    if cluster.secret is None:
        return None
    if cluster.advertise_url:
        return cluster.advertise_url.rstrip("/")
    host = server.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name: the other replicas resolve it, unless it is ours only
        return None if host == "localhost" else f"http://{host}:{server.port}"
    if address.is_loopback or address.is_unspecified:
        return None
    netloc = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{netloc}:{server.port}"


def token(secret: str, file_id: int, attempt: uuid.UUID) -> str:
    message = f"{file_id}:{attempt.hex}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def authentic(secret: str, file_id: int, attempt: uuid.UUID, presented: str) -> bool:
    return hmac.compare_digest(token(secret, file_id, attempt), presented)


class RelayClient:
    """A follower's one HTTP session to the other replicas."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @asynccontextmanager
    async def pull(
        self, relay_url: str, file_id: int, attempt: uuid.UUID, offset: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The attempt's bytes from `offset` on, as the leader's replica relays them; the
        iterator ends only when the leader has verified them all. RelayUnavailable when the
        replica cannot be reached, refuses, or the stream is cut."""
        if self._session is None:
            # Made here, on the running loop; never a proxy from the environment: peers
            # are reached directly.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_SECONDS, sock_read=SILENT_READ_SECONDS
                ),
                auto_decompress=False,
            )
        url = f"{relay_url}{RELAY_PATH}/{file_id}/{attempt.hex}"
        headers = {"Authorization": f"Bearer {token(self._secret, file_id, attempt)}"}
        try:
            async with self._session.get(
                url, params={"offset": str(offset)}, headers=headers, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise RelayUnavailable(relay_url, f"answered {response.status}")
                yield response.content.iter_chunked(CHUNK_BYTES)
        except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise RelayUnavailable(relay_url, str(exc) or type(exc).__name__) from exc
