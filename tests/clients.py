"""Real package installers (pip, uv, poetry) run against the cache, isolated from this machine.

Isolation matters as much as the install: pip reads no config file and no inherited PIP_*
variable, uv reads no config, poetry gets its own config, cache and data directories, and
HOME/XDG point into the test's directory. Every client runs behind a proxy that only
loopback bypasses; the proxy is a trap that records whatever reaches it, so a request to
any other host fails fast and is reported, instead of hanging on a machine without internet.

The tree they install: `app` (a wheel) requires `lib>=1`; `lib` has 1.0 (sdist only) and
1.1 (wheel and sdist), so resolvers pick the 1.1 wheel; `lib` requires `tool`, which exists
only as an sdist, so every client builds it with its in-tree backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.dists import sdist, wheel
from tests.local_upstream import LocalUpstream

COMMAND_TIMEOUT = 180.0

APP_WHEEL = wheel("app", "1.0", ["lib>=1"])
LIB_OLD_SDIST = sdist("lib", "1.0", ["tool"])
LIB_WHEEL = wheel("lib", "1.1", ["tool>=0.5"])
LIB_SDIST = sdist("lib", "1.1", ["tool>=0.5"])
TOOL_SDIST = sdist("tool", "0.5")

# What the resolvers must choose, as the upstream's paths for them.
INSTALLED_FILES = {
    f"/files/app/{APP_WHEEL.filename}",
    f"/files/lib/{LIB_WHEEL.filename}",
    f"/files/tool/{TOOL_SDIST.filename}",
}
WHEEL_METADATA = {
    f"/files/app/{APP_WHEEL.filename}.metadata",
    f"/files/lib/{LIB_WHEEL.filename}.metadata",
}
EXPECTED_VERSIONS = {"app": "1.0", "lib": "1.1", "tool": "0.5"}

# Prints, for each package, the version its module carries, the installed distribution's
# version and the generator of its WHEEL file ("in-tree" when built from our sdist).
PROBE = textwrap.dedent(
    """
    import json
    from importlib import metadata
    import app, lib, tool
    report = {}
    for module in (app, lib, tool):
        name = module.__name__
        wheel = metadata.distribution(name).read_text("WHEEL") or ""
        generator = [line for line in wheel.splitlines() if line.startswith("Generator:")]
        report[name] = [module.VERSION, metadata.version(name), generator]
    print(json.dumps(report))
    """
)

Env = dict[str, str]
# (index URL, an empty work directory, the isolated environment) -> the installed python
Installer = Callable[[str, Path, Env], Awaitable[Path]]


_REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class ProxyTrap:
    """An HTTP proxy that forwards nothing: it records each request line and refuses it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            line = await asyncio.wait_for(reader.readline(), 10)
            self.requests.append(line.decode(errors="replace").strip())
            writer.write(_REFUSAL)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def isolated_env(home: Path, proxy: ProxyTrap) -> Env:
    """This process's environment minus every client's configuration, plus the trap."""
    dropped_prefixes = ("PIP_", "UV_", "POETRY_", "VIRTUALENV_", "XDG_")
    dropped = {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NETRC",
        "PYTHON_KEYRING_BACKEND",
    }
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(dropped_prefixes)
        and key.upper() not in dropped
        and not key.upper().endswith("_PROXY")
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PYTHONNOUSERSITE="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = proxy.url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


async def run(*argv: str | Path, cwd: Path, env: Env) -> str:
    """Run a command to completion in this event loop (the cache and upstream live here)."""
    process = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout kills builds it started
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.communicate()
        raise AssertionError(f"timed out after {COMMAND_TIMEOUT}s: {argv}") from None
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"exit {process.returncode}: {argv}\n{text}"
    return text


async def new_venv(path: Path, env: Env) -> Path:
    await run(sys.executable, "-m", "venv", "--without-pip", path, cwd=path.parent, env=env)
    return path / "bin" / "python"


async def pip_install(index: str, work: Path, env: Env) -> Path:
    python = await new_venv(work / "venv", env)
    env = env | {
        "PIP_CONFIG_FILE": os.devnull,  # no global, user or site pip.conf
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    output = await run(
        sys.executable, "-m", "pip", "--python", python,
        "install", "--no-cache-dir", "--progress-bar", "off", "--index-url", index, "app",
        cwd=work, env=env,
    )  # fmt: skip
    # No extra index or find-links from this machine's pip.conf or environment.
    assert f"Looking in indexes: {index}\n" in output, output
    assert "Looking in links" not in output, output
    return python


async def uv_install(index: str, work: Path, env: Env) -> Path:
    python = await new_venv(work / "venv", env)
    env = env | {"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    uv = Path(sys.executable).parent / "uv"
    await run(
        uv, "pip", "install", "--python", python, "--index-url", index, "--no-config",
        "--cache-dir", work / "uv-cache", "app",
        cwd=work, env=env,
    )  # fmt: skip
    return python


async def poetry_install(
    index: str, work: Path, env: Env, dependencies: tuple[str, ...] = ("app",)
) -> Path:
    project = work / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "consumer"
            version = "0"
            requires-python = ">=3.11,<4"
            dependencies = {json.dumps(list(dependencies))}

            [tool.poetry]
            package-mode = false

            [[tool.poetry.source]]
            name = "cache"
            url = "{index}"
            priority = "primary"
            """
        )
    )
    env = env | {
        "POETRY_CONFIG_DIR": str(work / "poetry-config"),
        "POETRY_CACHE_DIR": str(work / "poetry-cache"),
        "POETRY_DATA_DIR": str(work / "poetry-data"),
        "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        "POETRY_VIRTUALENVS_USE_POETRY_PYTHON": "true",
        "POETRY_NO_INTERACTION": "1",
        "POETRY_KEYRING_ENABLED": "false",
    }
    poetry = Path(sys.executable).parent / "poetry"
    await run(poetry, "lock", cwd=project, env=env)
    await run(poetry, "install", "--no-root", cwd=project, env=env)
    return project / ".venv" / "bin" / "python"


INSTALLERS: dict[str, Installer] = {
    "pip": pip_install,
    "uv": uv_install,
    "poetry": poetry_install,
}


async def assert_installed(python: Path, cwd: Path, env: Env) -> None:
    # -I: no cwd, PYTHON* variables or user site on sys.path, only the environment's own.
    report = json.loads(await run(python, "-I", "-c", PROBE, cwd=cwd, env=env))
    assert {name: module for name, (module, _, _) in report.items()} == EXPECTED_VERSIONS
    assert {name: dist for name, (_, dist, _) in report.items()} == EXPECTED_VERSIONS
    # `tool` exists only as an sdist: the client built it with the sdist's own backend.
    assert report["tool"][2] == ["Generator: in-tree"]


def file_hits(upstream: LocalUpstream) -> dict[str, int]:
    return {path: n for path, n in upstream.hits.items() if path.startswith("/files/")}
