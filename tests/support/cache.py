"""mypypi2 running inside the test's event loop, and what a test needs to configure it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

from mypypi2.app import create_app
from mypypi2.config import Config, RepositoryConfig
from tests.local_upstream import LocalUpstream


class Clock:
    """The cache's clock, moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RunningCache:
    """mypypi2 served by hypercorn on a loopback port, inside the test's event loop."""

    def __init__(
        self,
        config: Config,
        dsn: str,
        clock: Callable[[], float] | None,  # the app's time source
        wrap: Callable[[ASGIApp], ASGIApp] | None = None,
        port: int | None = None,  # one chosen beforehand (for a config that names it)
    ) -> None:
        self.config = config
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(config, dsn) if clock is None else create_app(config, dsn, clock=clock)
        # `wrap` puts test middleware (a recorder, a spy) around the app.
        self._app = wrap(app) if wrap is not None else app
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        hypercorn_config = HypercornConfig()
        hypercorn_config.bind = [f"127.0.0.1:{self.port}"]
        hypercorn_config.accesslog = None
        hypercorn_config.errorlog = None
        self._task = asyncio.create_task(
            serve(self._app, hypercorn_config, shutdown_trigger=self._shutdown.wait)  # type: ignore[arg-type]
        )
        for _ in range(200):
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError("the cache did not start listening")

    async def stop(self) -> None:
        self._shutdown.set()
        if self._task is not None:
            await self._task
            self._task = None


StartCache = Callable[..., Awaitable[RunningCache]]


def repository(name: str, upstream: LocalUpstream, **options: object) -> RepositoryConfig:
    return RepositoryConfig(name=name, upstream=upstream.url, **options)  # type: ignore[arg-type]
