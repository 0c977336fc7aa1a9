"""Processes the harness starts: each in its own process group, always stopped.

Every service is started with `start_new_session=True`, so stopping it reaches every
process it forked (workers, helpers) and nothing else; a `Services` stack stops them all,
last started first, however the run ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# Variables that would point a client or a service somewhere else than we say.
_FOREIGN_PREFIXES = ("PIP_", "UV_", "MYPYPI2_", "PROXPI_", "DEVPI_")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment minus every pip/uv/service setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.pop("VIRTUAL_ENV", None)
    env.update(extra or {})
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One started command (a process group) whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.log = log
        self.stop_signal = stop_signal
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the leader to stop, wait, then kill whatever is left of the group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Workers or helpers the leader left behind (or a leader that ignored us).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


class Services:
    """Everything started during a run, stopped in reverse order by `close()`."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def start(self, name: str, argv: Sequence[str], **kwargs: object) -> Service:
        service = Service(name, argv, **kwargs)  # type: ignore[arg-type]
        self._stops.append((name, service.stop))
        return service

    def on_close(self, name: str, stop: Callable[[], None]) -> None:
        self._stops.append((name, stop))

    def close(self) -> None:
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"bench: stopping {name} failed: {exc!r}", flush=True)


def wait_http(
    url: str, service: Service | None = None, *, timeout: float = 120.0, ok: int = 200
) -> None:
    """Poll `url` until it answers `ok`; fail early when `service` has exited."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise RuntimeError(
                f"{service.name} exited ({service.popen.returncode}) before {url} answered:\n"
                + service.tail()
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == ok:
                    return
                last = response.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.2)
    tail = f"\n{service.tail()}" if service is not None else ""
    raise RuntimeError(f"{url} did not answer {ok} within {timeout:.0f}s (last: {last}){tail}")


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (its own process group, killed on timeout)."""
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    ) as popen:
        try:
            output, _ = popen.communicate(timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
    result = subprocess.CompletedProcess(list(argv), popen.returncode, output, None)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} exited {result.returncode}:\n{output[-3000:]}"
        )
    return result
