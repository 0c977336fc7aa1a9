"""The cache in front of index servers someone else wrote (tests/peers.py), not our own.

For each peer: pip and uv install the small tree of tests/clients.py through the cache
(each client through a repository of its own, so both start cold), the peer and the local
upstream behind it stop, and both clients install again with fresh caches of their own,
from what the cache stored. The JSON page the cache serves must list the files the peer
listed, with the same hashes, yanks, requires-python and core-metadata, read from the
peer's page by an independent parser (pypi-simple) in the format the cache asked it for.

The tree has traps where the peer can carry them: a yanked lib 1.2 and tool 0.6, and a
lib 2.0 that requires Python 4; an attribute lost anywhere on the way makes a resolver
pick one of them and the install probe fails.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pypi_simple
import pytest

from mypypi2.config import RepositoryConfig
from mypypi2.models import ALLOWED_HASHES
from mypypi2.upstream.client import ACCEPT
from tests.clients import (
    INSTALLERS,
    ProxyTrap,
    assert_installed,
    isolated_env,
)
from tests.local_upstream import JSON_V1, LocalUpstream
from tests.peers import PEERS, Peer, peers_bin, tree
from tests.support.cache import RunningCache, StartCache

__all__ = ["peers_bin"]  # a fixture, used by name

CLIENTS = ("pip", "uv")
INSTALLED = {"app": "app-1.0-py3-none-any.whl", "lib": "lib-1.1-py3-none-any.whl",
             "tool": "tool-0.5.tar.gz"}  # fmt: skip

# Every peer's venv is built once per machine; the first test may wait for it.
pytestmark = pytest.mark.timeout(900)

# What a client needs of one file: (hashes, requires-python, (yanked, reason), metadata
# hashes or None when there is no .metadata).
Attributes = tuple[dict[str, str], str | None, tuple[bool, str | None], dict[str, str] | None]


@pytest.mark.parametrize("name", PEERS)
async def test_pip_and_uv_install_through_the_cache_of_a_peer(
    name: str,
    peers_bin: Path,
    upstream: LocalUpstream,
    start_cache: StartCache,
    proxy_trap: ProxyTrap,
    tmp_path: Path,
) -> None:
    peer = PEERS[name](peers_bin, tmp_path / "peers", proxy_trap)
    projects = tree(peer.carries)
    try:
        await peer.start(upstream, projects)
        # One repository per client on the same peer: each client's install is cold.
        cache = await start_cache(
            *(RepositoryConfig(name=client, upstream=peer.simple_url) for client in CLIENTS)
        )
        for client in CLIENTS:
            await install(client, cache, tmp_path / f"cold-{client}", proxy_trap)
        peer_pages = {p.name: await peer_attributes(peer, p.name) for p in projects}
    finally:
        await peer.stop()
    await upstream.stop()

    for client in CLIENTS:
        await install(client, cache, tmp_path / f"warm-{client}", proxy_trap)
    assert proxy_trap.requests == []  # neither the clients nor the peer left loopback

    async with aiohttp.ClientSession() as http:
        for client in CLIENTS:
            for project, expected in peer_pages.items():
                assert await our_attributes(http, cache, client, project) == expected, project
            await assert_installed_files_stored(http, cache, client, peer_pages)


async def install(client: str, cache: RunningCache, work: Path, proxy: ProxyTrap) -> None:
    work.mkdir()  # noqa: ASYNC240 - one mkdir
    env = isolated_env(work / "home", proxy)
    python = await INSTALLERS[client](f"{cache.url}/{client}/simple/", work, env)
    await assert_installed(python, work, env)


async def peer_attributes(peer: Peer, project: str) -> dict[str, Attributes]:
    """The peer's page as the cache asks for it, read by pypi-simple, by filename."""
    url = peer.page_url(project)
    body, content_type = await peer.fetch(url, ACCEPT)
    if content_type.split(";", 1)[0].strip() == JSON_V1:
        page = pypi_simple.ProjectPage.from_json_data(json.loads(body), base_url=url)
    else:
        page = pypi_simple.ProjectPage.from_html(project, body, base_url=url)
    return {
        package.filename: (
            # Other algorithms are dropped on purpose (uv rejects them); none of the peers
            # sends any.
            {a: d for a, d in package.digests.items() if a in ALLOWED_HASHES},
            package.requires_python or None,
            (package.is_yanked, package.yanked_reason or None),
            (package.metadata_digests or {}) if package.has_metadata else None,
        )
        for package in page.packages
    }


async def our_attributes(
    http: aiohttp.ClientSession, cache: RunningCache, repository: str, project: str
) -> dict[str, Attributes]:
    page_url = f"{cache.url}/{repository}/simple/{project}/"
    async with http.get(page_url, headers={"Accept": JSON_V1}) as response:
        assert response.status == 200, page_url
        page: dict[str, Any] = await response.json(content_type=JSON_V1)
    attributes: dict[str, Attributes] = {}
    for file in page["files"]:
        # Files come from the cache, never from the peer's links.
        url = urljoin(page_url, file["url"])
        assert url == f"{cache.url}/{repository}/files/{project}/{file['filename']}", url
        yanked = file["yanked"]
        metadata = file.get("core-metadata", False)
        attributes[file["filename"]] = (
            file["hashes"],
            file.get("requires-python"),
            (yanked is not False, yanked if isinstance(yanked, str) and yanked else None),
            None if metadata is False else ({} if metadata is True else metadata),
        )
    return attributes


async def assert_installed_files_stored(
    http: aiohttp.ClientSession,
    cache: RunningCache,
    repository: str,
    peer_pages: dict[str, dict[str, Attributes]],
) -> None:
    """The chosen files are served, peer stopped, with the content the peer vouched for."""
    for project, filename in INSTALLED.items():
        url = f"{cache.url}/{repository}/files/{project}/{filename}"
        async with http.get(url) as response:
            assert response.status == 200, url
            body = await response.read()
        assert hashlib.sha256(body).hexdigest() == peer_pages[project][filename][0]["sha256"]
