"""Index servers someone else wrote, run on loopback as the cache's upstream ("peers").

All of them live in ONE venv, installed from the package index at pinned versions the
first time a machine needs them (about half a minute) and reused afterwards: the venv's
path carries a hash of the pins and of the interpreter, so a change of either builds a new
one beside the old. A lock file keeps two concurrent test runs from building it twice.

Each peer runs as its own process group on a free loopback port, with HOME in the test's
directory (no user configuration) and every proxy variable pointing at the test's
ProxyTrap: a request a peer tries to send past loopback is recorded and refused, never
sent. The peers and what they serve:

- devpi-server: a mirror index (`type = mirror`) of the local upstream; no root/pypi, the
  default mirror of the public index;
- proxpi: a caching proxy of the local upstream (PROXPI_INDEX_URL), under gunicorn;
- simple-repository-server: a proxy of the local upstream (its default: files redirect);
- pypiserver: a directory of the tree's files (HTML only, hashes, nothing else); the
  fallback that redirects unknown projects to the public index is disabled;
- dumb-pypi: a static tree it generated (relative links, yanks, requires-python,
  core-metadata, no JSON), served by `python -m http.server`.

`python -m tests.peers [peer ...]` captures each peer's pages into tests/corpus/ (review
the expected results before committing them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import msgspec
import pytest

from mypypi2.errors import MalformedPage
from mypypi2.upstream.parse import parse_project_list, parse_project_page
from tests.clients import (
    APP_WHEEL,
    LIB_OLD_SDIST,
    LIB_SDIST,
    LIB_WHEEL,
    TOOL_SDIST,
    ProxyTrap,
    run,
)
from tests.dists import sdist, wheel
from tests.local_upstream import JSON_V1, LocalUpstream, UpstreamFile, UpstreamProject

PEER_REQUIREMENTS = (
    "devpi-server==6.20.3",
    "proxpi==1.3.1",
    # proxpi's container pins 26.0.0, whose gthread worker holds some uv requests for 5 s.
    "gunicorn==23.0.0",
    "simple-repository-server==0.10.0",
    "pypiserver==2.4.2",
    "dumb-pypi==1.15.0",
)
VENV_BUILD_TIMEOUT = 900.0
START_TIMEOUT = 120.0
HTML = "text/html"
HTML_V1 = "application/vnd.pypi.simple.v1+html"

# File attributes a peer may carry from its source to its pages.
YANKED = "yanked"
REQUIRES_PYTHON = "requires-python"
CORE_METADATA = "core-metadata"

# Files that would be chosen if a peer (or the cache) lost their attribute: `app` requires
# `lib>=1` and `lib` requires `tool>=0.5`, so a resolver that misses the yank or the
# requires-python installs these instead of lib 1.1 and tool 0.5, and the probe of
# tests/clients.py sees the wrong VERSION.
LIB_YANKED = dataclasses.replace(wheel("lib", "1.2", ["tool>=0.5"]), yanked="broken build")
LIB_FUTURE = dataclasses.replace(wheel("lib", "2.0", ["tool>=0.5"]), requires_python=">=4")
TOOL_YANKED = dataclasses.replace(sdist("tool", "0.6"), yanked=True)
# A requires-python this interpreter satisfies, and one in need of HTML escaping.
LIB_WHEEL_PY3 = dataclasses.replace(LIB_WHEEL, requires_python=">=3.8,<4")


def tree(carries: frozenset[str]) -> list[UpstreamProject]:
    """The small tree of tests/clients.py, plus the traps for what the peer carries."""
    lib = [LIB_OLD_SDIST, LIB_WHEEL_PY3 if REQUIRES_PYTHON in carries else LIB_WHEEL, LIB_SDIST]
    tool = [TOOL_SDIST]
    if YANKED in carries:
        lib.append(LIB_YANKED)
        tool.append(TOOL_YANKED)
    if REQUIRES_PYTHON in carries:
        lib.append(LIB_FUTURE)
    return [
        UpstreamProject("app", [APP_WHEEL]),
        # One project from an HTML upstream, the others JSON: proxies read both.
        UpstreamProject("lib", lib, format="html"),
        UpstreamProject("tool", tool),
    ]


# --- the venv -------------------------------------------------------------------------------


def machine_cache(prefix: str, key: list[str], build: Callable[[Path], None]) -> Path:
    """A directory kept between test runs on this machine: /tmp/<prefix>-<hash of key>.

    `build` fills it the first time. It is built in place (a venv cannot be moved: its
    scripts name their interpreter) under a lock, and counts as built once the marker with
    the key is written, so an interrupted build is redone rather than trusted.
    """
    wanted = "\n".join((sys.version, sys.base_prefix, *key)) + "\n"
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:12]
    directory = Path(tempfile.gettempdir()) / f"{prefix}-{digest}"
    marker = directory / "mypypi2-cache-key.txt"
    with open(f"{directory}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == wanted:
            return directory
        shutil.rmtree(directory, ignore_errors=True)
        build(directory)
        marker.write_text(wanted)
    return directory


def check_call(argv: list[str | Path], what: str, env: Mapping[str, str] | None = None) -> None:
    """Run a set-up command (no event loop is needed yet); its output only on failure."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        [str(arg) for arg in argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=VENV_BUILD_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {argv}\n{done.stdout}\n{done.stderr}")


def _build_peers_venv(venv: Path) -> None:
    check_call([sys.executable, "-m", "venv", venv], "the peers' venv")
    check_call(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *PEER_REQUIREMENTS],
        "installing the peers",
    )  # fmt: skip


def ensure_peers_venv() -> Path:
    """The bin/ of the peers' venv, built on first use (from the index pip is set up with)."""
    return machine_cache("mypypi2-peers", list(PEER_REQUIREMENTS), _build_peers_venv) / "bin"


@pytest.fixture(scope="session")
def peers_bin() -> Path:
    """The peers' bin/ directory (a fixture: import it into the test module)."""
    return ensure_peers_venv()


# --- processes ------------------------------------------------------------------------------


def peer_env(
    home: Path, proxy: ProxyTrap, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This environment minus anything that configures an index tool, plus the trap."""
    dropped = ("PIP_", "UV_", "MYPYPI2_", "PROXPI_", "DEVPI_", "PYPISERVER_", "XDG_")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(dropped)
        and not key.upper().endswith("_PROXY")
        and key not in ("VIRTUAL_ENV", "PYTHONPATH", "NETRC")
    }
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = proxy.url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Peer:
    """One peer server: start it on a loopback port, fetch its pages, stop it."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # the page media types it answers with
    carries: ClassVar[frozenset[str]]  # the file attributes it passes on
    proxies: ClassVar[bool]  # reads the local upstream, rather than files of its own

    def __init__(self, bin_dir: Path, work: Path, proxy: ProxyTrap) -> None:
        self.bin = bin_dir
        self.work = work / self.name
        self.work.mkdir(parents=True)
        self.proxy = proxy
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = self.work / "peer.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def simple_url(self) -> str:
        raise NotImplementedError

    def page_url(self, project: str) -> str:
        return f"{self.simple_url}{project}/"

    async def start(self, upstream: LocalUpstream, projects: list[UpstreamProject]) -> None:
        """Serve `projects`: through `upstream` for a proxy, from its own files otherwise."""
        raise NotImplementedError

    async def _spawn(self, argv: list[str], ready_path: str, env: Mapping[str, str] = {}) -> None:
        with open(self.log, "ab") as log:  # noqa: ASYNC230 - the child writes to it
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.work,
                env=peer_env(self.work / "home", self.proxy, env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own group: stop() reaches its workers too
            )
        await self._wait_ready(self.base + ready_path)

    async def _wait_ready(self, url: str) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while asyncio.get_running_loop().time() < deadline:
                assert self._process is not None
                if self._process.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url, allow_redirects=False) as response:
                        if response.status < 500:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def fetch(self, url: str, accept: str) -> tuple[bytes, str]:
        """(body, Content-Type) of a page of the peer, asked for with `accept`."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"Accept": accept}) as response,
        ):
            assert response.status == 200, (url, response.status, await response.text())
            return await response.read(), response.headers.get("Content-Type", "")


# --- the proxies ----------------------------------------------------------------------------


class Devpi(Peer):
    name = "devpi"
    formats = (JSON_V1, HTML)
    carries = frozenset({YANKED, REQUIRES_PYTHON})  # core-metadata: not for mirrors
    proxies = True
    index = "root/peer"

    @property
    def simple_url(self) -> str:
        return f"{self.base}/{self.index}/+simple/"

    async def start(self, upstream: LocalUpstream, projects: list[UpstreamProject]) -> None:
        for project in projects:
            upstream.add(project)
        serverdir = self.work / "server"
        env = peer_env(self.work / "home", self.proxy)
        # --no-root-pypi: no root/pypi, whose default mirror is the public index.
        init = [str(self.bin / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi"]
        await run(*init, cwd=self.work, env=env)
        await self._spawn(
            [
                str(self.bin / "devpi-server"),
                "--serverdir", str(serverdir),
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--threads", "8",
            ],
            "/+api",
        )  # fmt: skip
        login = await self._call("POST", "/+login", {"user": "root", "password": ""})
        token = login["result"]["password"]
        auth = base64.b64encode(f"root:{token}".encode()).decode()
        mirror = {"type": "mirror", "mirror_url": upstream.url}
        await self._call("PUT", f"/{self.index}", mirror, auth=auth)

    async def _call(
        self, method: str, path: str, body: object, auth: str | None = None
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            headers["X-Devpi-Auth"] = auth
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base + path, json=body, headers=headers) as response,
        ):
            answer: dict[str, Any] = await response.json(content_type=None)
            assert response.status < 300, (method, path, response.status, answer)
            return answer


class Proxpi(Peer):
    name = "proxpi"
    formats = (JSON_V1, HTML)
    carries = frozenset({YANKED, REQUIRES_PYTHON, CORE_METADATA})
    proxies = True

    @property
    def simple_url(self) -> str:
        return f"{self.base}/index/"

    async def start(self, upstream: LocalUpstream, projects: list[UpstreamProject]) -> None:
        for project in projects:
            upstream.add(project)
        await self._spawn(
            [
                str(self.bin / "gunicorn"),
                "--workers=1",
                "--threads=4",
                f"--bind=127.0.0.1:{self.port}",
                "proxpi.server:app",
            ],
            "/health",
            {
                "PROXPI_INDEX_URL": upstream.url,
                "PROXPI_EXTRA_INDEX_URLS": "",
                "PROXPI_CACHE_DIR": str(self.work / "cache"),
            },
        )


class SimpleRepositoryServer(Peer):
    name = "simple-repository-server"
    formats = (JSON_V1, HTML)
    carries = frozenset({YANKED, REQUIRES_PYTHON, CORE_METADATA})
    proxies = True

    @property
    def simple_url(self) -> str:
        return f"{self.base}/simple/"

    async def start(self, upstream: LocalUpstream, projects: list[UpstreamProject]) -> None:
        for project in projects:
            upstream.add(project)
        await self._spawn(
            [
                str(self.bin / "simple-repository-server"),
                "--host", "127.0.0.1",
                "--port", str(self.port),
                upstream.url,
            ],
            "/",
        )  # fmt: skip


# --- the servers of files of their own ------------------------------------------------------


def _write_files(directory: Path, projects: list[UpstreamProject], metadata: bool) -> None:
    directory.mkdir(parents=True)
    for project in projects:
        for file in project.files:
            (directory / file.filename).write_bytes(file.content)
            if metadata and file.metadata is not None:
                (directory / f"{file.filename}.metadata").write_bytes(file.metadata)


class Pypiserver(Peer):
    name = "pypiserver"
    formats = (HTML,)
    carries = frozenset()  # it knows filenames and computes hashes, nothing more
    proxies = False

    @property
    def simple_url(self) -> str:
        return f"{self.base}/simple/"

    async def start(self, upstream: LocalUpstream, projects: list[UpstreamProject]) -> None:
        packages = self.work / "packages"
        _write_files(packages, projects, metadata=False)
        await self._spawn(
            [
                str(self.bin / "pypi-server"), "run",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--server", "gunicorn",  # named rather than left to its "auto" pick
                "--backend", "simple-dir",
                "--hash-algo", "sha256",
                "--disable-fallback",  # else unknown projects redirect to the public index
                "-a", ".", "-P", ".",  # no authentication
                str(packages),
            ],
            "/health",
        )  # fmt: skip


class DumbPypi(Peer):
    name = "dumb-pypi"
    formats = (HTML,)
    carries = frozenset({YANKED, REQUIRES_PYTHON, CORE_METADATA})
    proxies = False

    @property
    def simple_url(self) -> str:
        return f"{self.base}/simple/"

    async def start(self, upstream: LocalUpstream, projects: list[UpstreamProject]) -> None:
        site = self.work / "site"
        _write_files(site / "packages", projects, metadata=True)
        listing = self.work / "packages.jsonl"
        listing.write_text(
            "".join(json.dumps(_dumb_entry(f)) + "\n" for p in projects for f in p.files)
        )
        env = peer_env(self.work / "home", self.proxy)
        await run(
            self.bin / "dumb-pypi",
            "--package-list-json", listing,
            "--output-dir", site,
            "--packages-url", "../../packages/",  # relative links, as a static host serves
            "--no-generate-timestamp",
            cwd=self.work, env=env,
        )  # fmt: skip
        await self._spawn(
            [
                str(self.bin / "python"), "-m", "http.server",
                "--bind", "127.0.0.1",
                "--directory", str(site),
                str(self.port),
            ],
            "/simple/",
        )  # fmt: skip


def _dumb_entry(file: UpstreamFile) -> dict[str, str]:
    entry = {"filename": file.filename, "hash": f"sha256={file.sha256}"}
    if file.requires_python is not None:
        entry["requires_python"] = file.requires_python
    if file.yanked is not False:
        # dumb-pypi marks a file yanked only when it has a reason.
        entry["yanked_reason"] = file.yanked if isinstance(file.yanked, str) else "yanked"
    if file.metadata is not None:
        entry["core_metadata"] = f"sha256={hashlib.sha256(file.metadata).hexdigest()}"
    return entry


PEERS: dict[str, type[Peer]] = {
    peer.name: peer for peer in (Devpi, Proxpi, SimpleRepositoryServer, Pypiserver, DumbPypi)
}


# --- the corpus -----------------------------------------------------------------------------

CORPUS = Path(__file__).parent / "corpus"
CAPTURED_PROJECT = "lib"  # the richest page: HTML upstream, yanks, requires-python, metadata
PEER_HOST = b"upstream.example"
FILE_HOST = b"files.example"


async def capture(names: list[str]) -> None:
    """Write each peer's `lib` page and project list, in every format it answers with, into
    tests/corpus/peers-<name>/ (see tests/corpus/capture.py for the format). Its own host is
    written as upstream.example, the local upstream's (where its file links may point) as
    files.example; an answer identical to one already written is skipped."""
    bin_dir = ensure_peers_venv()
    with tempfile.TemporaryDirectory(prefix="mypypi2-capture-") as work:
        for name in names or list(PEERS):
            upstream, proxy = LocalUpstream(), ProxyTrap()
            await upstream.start()
            await proxy.start()
            peer = PEERS[name](bin_dir, Path(work), proxy)
            try:
                await peer.start(upstream, tree(peer.carries))
                await _capture_peer(peer, upstream)
            finally:
                await peer.stop()
                await upstream.stop()
                await proxy.stop()
            if proxy.requests:
                raise SystemExit(f"{name} tried to leave loopback: {proxy.requests}")


async def _capture_peer(peer: Peer, upstream: LocalUpstream) -> None:
    hosts = {
        f"127.0.0.1:{peer.port}".encode(): PEER_HOST,
        f"127.0.0.1:{upstream.port}".encode(): FILE_HOST,
    }
    out = CORPUS / f"peers-{peer.name}"
    out.mkdir(parents=True, exist_ok=True)
    # Pages are `lib-<format>`: test_corpus.py checks that `-json` and `-html` of one stem
    # list the same files. Lists are `list.<format>`, outside that pairing.
    for project, url, separator in (
        (CAPTURED_PROJECT, peer.page_url(CAPTURED_PROJECT), "-"),
        (None, peer.simple_url, "."),
    ):
        cases: dict[str, tuple[bytes, str, Any]] = {}
        for accept in (JSON_V1, HTML_V1, HTML):
            raw, content_type = await peer.fetch(url, accept)
            body, page_url = _rewritten(raw, hosts), _rewritten(url.encode(), hosts).decode()
            if any((body, content_type) == case[:2] for case in cases.values()):
                continue
            # Named after what the peer answered, which is not always what was asked.
            answered = content_type.split(";", 1)[0].strip()
            suffix = {JSON_V1: "json", HTML_V1: "v1html", HTML: "html"}.get(answered, "other")
            try:
                parsed = _parsed(body, content_type, page_url, project)
            except MalformedPage as exc:
                print(f"{out.name}: the {suffix} answer is not kept, the parser refuses it: {exc}")
                continue
            cases[f"{project or 'list'}{separator}{suffix}"] = (body, content_type, parsed)
        if project is not None and _disagree(
            cases.get(f"{project}-json"), cases.get(f"{project}-html")
        ):
            # The peer's two formats say different things: not one page, so not a pair.
            cases[f"{project}-html-unlike-json"] = cases.pop(f"{project}-html")
        for case, (body, content_type, parsed) in cases.items():
            meta = {
                "kind": "page" if project else "list",
                "content_type": content_type,
                "url": page_url,
                "project": project,
                "expected": msgspec.to_builtins(parsed),
            }
            (out / f"{case}.body").write_bytes(body)
            text = json.dumps(meta, indent=1, ensure_ascii=False) + "\n"
            (out / f"{case}.meta.json").write_text(text)
            print(f"{out.name}/{case}: {len(body)} bytes, {content_type}")


def _parsed(body: bytes, content_type: str, url: str, project: str | None) -> Any:
    if project is None:
        return parse_project_list(body, content_type)
    return parse_project_page(body, content_type, url, project)


def _disagree(
    json_case: tuple[bytes, str, Any] | None, html_case: tuple[bytes, str, Any] | None
) -> bool:
    if json_case is None or html_case is None:
        return False

    # What HTML can carry (no size, upload-time, serial), compared as sets of files.
    def files(case: tuple[bytes, str, Any]) -> list[str]:
        keys = ("filename", "url", "hashes", "requires_python", "yanked", "core_metadata")
        entries = msgspec.to_builtins(case[2].files)
        return sorted(json.dumps({k: entry[k] for k in keys}) for entry in entries)

    differ = files(json_case) != files(html_case)
    if differ:
        print("JSON and HTML disagree:", sorted(set(files(json_case)) ^ set(files(html_case))))
    return differ


def _rewritten(data: bytes, hosts: dict[bytes, bytes]) -> bytes:
    for original, placeholder in hosts.items():
        data = data.replace(original, placeholder)
    if b"127.0.0.1" in data or b"localhost" in data:
        raise SystemExit("a loopback host survived the rewrite")
    return data


if __name__ == "__main__":
    # python -m tests.peers [peer ...]: capture the corpus (run by hand, then review it).
    asyncio.run(capture(sys.argv[1:]))
