"""Running the worker processes under granian or hypercorn, as `mypypi2 serve` does.

Both keep the service up when a worker dies (an OOM kill, a crash): the dead one is
replaced and the others keep serving meanwhile. granian does this itself; hypercorn's own
runner stops every worker when one exits with an error, so its workers are supervised
here. Both give up, and exit 1, when a replaced worker dies again within a few seconds (it
cannot start at all).

What connections may hold is bounded (see `ServerConfig`): a client gets `header-timeout`
seconds to send its request head, each granian worker holds at most `worker-connections`
connections, and the kernel queues `backlog` more. Half-sent requests (slowloris) hold a
slot for `header-timeout` seconds and need thousands per worker to fill the cap. (granian's
own defaults held them for 30 s and capped all workers together at 1,024 connections: 1,100
such connections kept every other client out; bench/slowloris.py measures it.)

Shutdown (`Shutdown`) lets a load balancer stop sending before connections close: SIGTERM
creates the shutdown flag, which turns every worker's `/-/ready` to 503 at once, while the
workers go on serving for `drain-time`; then the server stops taking connections and
requests and downloads in flight get `stop-timeout` to finish before the workers are
killed. SIGINT (Ctrl-C at a terminal), or a second signal, skips the drain.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import multiprocessing
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from mypypi2 import logs
from mypypi2.config import LogFormat, ServerConfig
from mypypi2.errors import StartupError

log = logging.getLogger(__name__)

APPLICATION = "mypypi2.asgi:create"
# A replaced worker that dies again this soon cannot start: stop instead of looping.
CRASH_LOOP_SECONDS = 5.0
# How long hypercorn workers get to finish in-flight requests once told to stop, on top of
# hypercorn's own graceful timeout, before they are terminated.
_STOP_GRACE = 10.0
_NR_OPEN_DEFAULT = 1 << 20


def check_port(host: str, port: int) -> None:
    """Fail early, in one line, when we cannot listen on `host`:`port` (in use, no such
    address, a privileged port): the servers would report it as a long traceback."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    with socket.socket(family, kind, proto) as probe:
        # As the servers do: a port with connections only in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            hint = " (is another server running?)" if exc.errno == errno.EADDRINUSE else ""
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from exc


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit (its workers inherit it) to the hard limit: each
    connection holds a descriptor, and servers that run out of them fail every accept in a
    loop instead of waiting. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # An unlimited hard limit still has the kernel's (fs.nr_open).
        wanted = _NR_OPEN_DEFAULT if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft


def connections_per_worker(server: ServerConfig, open_files: int) -> int:
    """`worker-connections`, at most half of `open_files`: a connection may hold a socket
    and an open file (a download being served)."""
    allowed = max(1, open_files // 2)
    if server.worker_connections > allowed:
        log.warning(
            "worker-connections %d exceeds half the open-file limit (%d): using %d",
            server.worker_connections,
            open_files,
            allowed,
        )
    return min(server.worker_connections, allowed)


class Shutdown:
    """What SIGTERM and SIGINT do to `serve`: see the module docstring."""

    def __init__(self, flag: Path, drain_time: float, stop: Callable[[], None]) -> None:
        self._flag = flag
        self._drain_time = drain_time
        self._stop = stop
        self._draining = False

    def handle(self, signum: int, frame: object) -> None:
        self._flag.touch()
        if signum == signal.SIGTERM and self._drain_time > 0 and not self._draining:
            self._draining = True
            log.info("stopping in %g s (drain-time); not ready meanwhile", self._drain_time)
            timer = threading.Timer(self._drain_time, self._stop)
            timer.daemon = True
            timer.start()
        else:
            self._stop()


def run_granian(
    server: ServerConfig, workers: int, shutdown_flag: Path, log_format: LogFormat
) -> None:
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server import MPServer  # what `granian.Granian` is on a GIL build

    class DrainingGranian(MPServer):
        # The main process's handler of SIGINT and SIGTERM (granian's own stops at once).
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            shutdown.handle(*args)

        def stop(self) -> None:
            super().signal_handler_interrupt()  # type: ignore[no-untyped-call]

    shutdown = Shutdown(shutdown_flag, server.drain_time, lambda: granian.stop())
    granian = DrainingGranian(
        APPLICATION,
        address=server.host,
        port=server.port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        backlog=server.backlog,
        # granian's "backpressure": connections each worker accepts and holds at once.
        backpressure=connections_per_worker(server, raise_open_file_limit()),
        http1_settings=HTTP1Settings(header_read_timeout=round(server.header_timeout * 1000)),
        respawn_failed_workers=True,
        # Workers finish their connections when stopped (responses in flight included);
        # those still at it after stop-timeout are killed.
        workers_kill_timeout=math.ceil(server.stop_timeout),
        # Its lines in our format; the access log is ours (one line per request, with ids).
        log_dictconfig=logs.dict_config(log_format),
        log_access=False,
    )
    granian.serve()


def run_hypercorn(server: ServerConfig, workers: int, shutdown_flag: Path) -> int:
    from hypercorn.asyncio.run import asyncio_worker
    from hypercorn.config import Config as HypercornConfig

    raise_open_file_limit()
    config = HypercornConfig()
    config.application_path = f"{APPLICATION}()"
    host = f"[{server.host}]" if ":" in server.host else server.host
    config.bind = [f"{host}:{server.port}"]
    config.workers = workers
    config.backlog = server.backlog
    # hypercorn's idle timer runs from a connection's start (or last response) until a
    # request head is complete: it is the header timeout. (Its read timeout is not: that
    # would also cut a download to a client that sends nothing meanwhile.)
    config.keep_alive_timeout = server.header_timeout
    # How long a stopping worker lets requests in flight finish before it cancels them.
    config.graceful_timeout = server.stop_timeout
    config.accesslog = None
    # A logger, not "-": hypercorn then adds no handler of its own and its lines go out
    # once, through the worker's root handler, instead of twice.
    config.errorlog = logging.getLogger("hypercorn.error")
    sockets = config.create_sockets()
    try:
        return _supervise(
            workers,
            asyncio_worker,
            {"config": config, "sockets": sockets},
            stop_wait=config.graceful_timeout + _STOP_GRACE,
            shutdown_flag=shutdown_flag,
            drain_time=server.drain_time,
        )
    finally:
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.close()


def _supervise(
    count: int,
    target: Any,
    kwargs: dict[str, Any],
    *,
    stop_wait: float,
    shutdown_flag: Path,
    drain_time: float,
) -> int:
    """Run `count` processes of `target(**kwargs, shutdown_event=...)` until SIGINT or
    SIGTERM (see `Shutdown`), replacing any that dies; 1 when one could not be replaced."""
    context = multiprocessing.get_context("spawn")
    shutdown = context.Event()
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        shutdown.set()

    def spawn() -> BaseProcess:
        # Workers ignore SIGINT (a terminal sends Ctrl-C to the whole group) and stop when
        # `shutdown` is set; the disposition is inherited by the new process.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process = context.Process(target=target, kwargs={**kwargs, "shutdown_event": shutdown})
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        return process

    handler = Shutdown(shutdown_flag, drain_time, stop).handle
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    # Each worker, and when it was started as a replacement (None: one of the first).
    running: dict[BaseProcess, float | None] = {spawn(): None for _ in range(count)}
    status = 0
    while not stopping:
        wait([process.sentinel for process in running], timeout=1.0)
        for process in [p for p in running if not p.is_alive()]:
            replaced_at = running.pop(process)
            process.join()
            if stopping:
                break
            if replaced_at is not None and time.monotonic() - replaced_at < CRASH_LOOP_SECONDS:
                log.error(
                    "worker %d exited with status %s right after it was started: stopping",
                    process.pid,
                    process.exitcode,
                )
                stopping, status = True, 1
                shutdown.set()
                break
            log.error(
                "worker %d exited with status %s: starting another",
                process.pid,
                process.exitcode,
            )
            running[spawn()] = time.monotonic()
    for process in running:
        process.join(stop_wait)
        if process.is_alive():
            process.terminate()
            process.join()
    return status
