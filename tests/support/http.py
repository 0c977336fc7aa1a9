"""One GET as the tests make it, and what came back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import aiohttp
from multidict import CIMultiDictProxy

JSON_V1 = "application/vnd.pypi.simple.v1+json"
STALE = "X-Mypypi2-Stale"


class Answer(NamedTuple):
    """A whole response; a tuple too, so `status, headers, body = await get(...)` reads."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes  # as sent when the session does not decompress

    @property
    def stale(self) -> bool:
        return STALE in self.headers

    def json(self) -> Any:
        return json.loads(self.body)

    def filenames(self) -> list[str]:
        return [f["filename"] for f in self.json()["files"]]

    def vary(self) -> set[str]:
        return {v.strip().lower() for v in self.headers.get("Vary", "").split(",")}


async def get(
    http: aiohttp.ClientSession,
    url: str,
    accept: str | None = JSON_V1,
    headers: Mapping[str, str] | None = None,
    *,
    follow_redirects: bool = True,
    client_timeout: aiohttp.ClientTimeout | None = None,
    skip_auto_headers: tuple[str, ...] = (),
) -> Answer:
    """GET `url` with this Accept (None: aiohttp's own) and `headers`.

    `client_timeout` None: the session's; `skip_auto_headers`: headers aiohttp must not add.
    """
    sent = dict(headers or {})
    if accept is not None:
        sent["Accept"] = accept
    options: dict[str, Any] = {} if client_timeout is None else {"timeout": client_timeout}
    async with http.get(
        url,
        headers=sent,
        allow_redirects=follow_redirects,
        skip_auto_headers=skip_auto_headers,
        **options,
    ) as response:
        return Answer(response.status, response.headers, await response.read())
