"""The ASGI application: the only place where concrete classes are built and wired."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TypedDict

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

from mypypi2.access_log import AccessLog
from mypypi2.clock import Clock
from mypypi2.config import Config
from mypypi2.db import Database, KeptConnection
from mypypi2.errors import (
    DatabaseUnavailable,
    FileNotFound,
    NotAcceptable,
    NotStored,
    ProjectNotFound,
    RepositoryNotFound,
    StoredObjectMissing,
    UpstreamError,
    UpstreamNotFound,
    UpstreamTimeout,
)
from mypypi2.files import Files
from mypypi2.metrics import Metrics
from mypypi2.observe import Observer
from mypypi2.pages import Pages
from mypypi2.queries.notifications import Purged, listen_purged
from mypypi2.readiness import Readiness
from mypypi2.relay import advertised
from mypypi2.routes import files as files_routes
from mypypi2.routes import health, metrics, simple
from mypypi2.routes import relay as relay_routes
from mypypi2.routes import status as status_routes
from mypypi2.routes.observed import Observed
from mypypi2.routes.warm import WarmPath
from mypypi2.shared_renderings import SharedRenderings
from mypypi2.status import StatusReport
from mypypi2.storage.configured import open_storage
from mypypi2.sweep import Sweeper, grace_seconds, policy
from mypypi2.traffic import Traffic
from mypypi2.upstream.client import UpstreamClient
from mypypi2.usage import LastUse

log = logging.getLogger(__name__)


class State(TypedDict):
    pages: Pages
    files: Files
    listener: KeptConnection  # the connection that hears purges
    usage: LastUse  # this worker's last uses of stored files, flushed now and then
    metrics: Metrics  # this worker's tallies, and the replica's exposition
    sweeper: Sweeper  # evicts from a bounded store (one sweeper at a time, deployment-wide)
    traffic: Traffic  # this worker's traffic tallies, flushed now and then (a Sink)
    status: StatusReport  # /-/status
    readiness: Readiness  # what /-/ready answers


# Domain errors to HTTP status, most specific first. An upstream 404 stays a 404: uv reads
# any other error on a project page as a failed resolve (never "not on this index").
_STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (RepositoryNotFound, 404),
    (ProjectNotFound, 404),
    (FileNotFound, 404),
    (NotStored, 404),
    (UpstreamNotFound, 404),
    (NotAcceptable, 406),
    (UpstreamTimeout, 504),
    (UpstreamError, 502),
    (DatabaseUnavailable, 503),
    (StoredObjectMissing, 503),  # a large page's rendering: made again on the next request
)
# Error bodies echo what the client sent (a name, an Accept header): plain text, never
# sniffed into HTML by a browser.
_ERROR_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


async def _error_response(request: Request, exc: Exception) -> Response:
    status = next(code for error, code in _STATUS_BY_ERROR if isinstance(exc, error))
    headers = dict(_ERROR_HEADERS)
    if status == 503:
        headers["Retry-After"] = "1"
    # An upstream failure was logged once, where it was met (not once per waiting client),
    # and an outage of the database once by whoever met it first (pages, the purge
    # listener): a line per 503 would flood the log at the rate of the load. The access log
    # still has every request.
    if status >= 500 and not isinstance(exc, UpstreamError | DatabaseUnavailable):
        log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return PlainTextResponse(
        f"{exc}\n", status_code=status, headers=headers, media_type="text/plain; charset=utf-8"
    )


def create_app(
    config: Config,
    dsn: str,
    *,
    clock: Clock = time.time,
    shutdown_flag: Path | None = None,
    metrics_dir: str | None = None,
) -> ASGIApp:
    """The app for one worker; `dsn` is the already migrated database it serves from,
    `shutdown_flag` the file whose existence says `serve` is stopping (then not ready), and
    `metrics_dir` the replica's multiprocess metrics directory (None: this app's alone)."""

    # Every request is seen by this worker's sinks (added as the worker starts).
    observer = Observer()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:
            yield await _start_worker(
                config, dsn, clock, shutdown_flag, stack, observer, metrics_dir
            )

    routed = Starlette(
        routes=[
            *health.routes,
            *metrics.routes,
            *status_routes.routes,
            *relay_routes.routes,
            *simple.routes,
            *files_routes.routes,
        ],
        lifespan=lifespan,
        exception_handlers={error: _error_response for error, _ in _STATUS_BY_ERROR},
    )
    # Requests answerable from this worker's memory skip the framework (see routes/warm.py),
    # never the observation.
    return Observed(WarmPath(routed), observer, [r.name for r in config.repositories])


async def _start_worker(
    config: Config,
    dsn: str,
    clock: Clock,
    shutdown_flag: Path | None,
    stack: AsyncExitStack,
    observer: Observer,
    metrics_dir: str | None,
) -> State:
    """One worker's services. `stack` closes them in the reverse order: downloads in flight
    finish and last uses are flushed before the upstream sessions and the pool close; the
    sinks (`observer.add`) see every request until the end, and write last."""
    if config.logging.access_log:
        access_log = AccessLog(config.logging.format)
        access_log.start()
        stack.push_async_callback(access_log.close)
        observer.add(access_log)
    database = await Database.open(dsn, config.database)
    stack.push_async_callback(database.close)
    worker_metrics = Metrics(observer, database, [r.name for r in config.repositories], metrics_dir)
    worker_metrics.start()
    stack.push_async_callback(worker_metrics.close)
    observer.add(worker_metrics)
    clients = {}
    for repository in config.repositories:
        clients[repository.name] = client = UpstreamClient.open(repository, observer)
        stack.push_async_callback(client.close)
    storage = await open_storage(config, stack)
    pages = Pages(
        database,
        {r.name: r for r in config.repositories},
        clients,
        base_url=config.server.base_url,
        cache_entries=config.server.cache_entries,
        memory=config.server.page_memory,
        shared=SharedRenderings(storage, above=config.server.store_pages_above),
        offline=config.offline,
        clock=clock,
    )
    stack.push_async_callback(pages.close)
    traffic = Traffic(database, [r.name for r in config.repositories], clock=clock)
    traffic.start()
    stack.push_async_callback(traffic.close)
    observer.add(traffic)
    usage = LastUse(database, clock=clock)
    usage.start()
    stack.push_async_callback(usage.close)
    files = Files(
        database,
        storage,
        pages,
        clients,
        usage,
        observer,
        offline=config.offline,
        cluster_secret=config.cluster.secret,
        advertise_url=advertised(config.cluster, config.server),
        clock=clock,
    )
    stack.push_async_callback(files.close)
    listener = await _listen_for_purges(config, dsn, pages, files)
    stack.push_async_callback(listener.close)
    sweeper = Sweeper(
        dsn,
        storage,
        policy(config),
        grace_seconds=grace_seconds(config.storage),
        before=usage.flush,
        clock=clock,
    )
    sweeper.start()
    stack.push_async_callback(sweeper.close)
    return {
        "pages": pages,
        "files": files,
        "listener": listener,
        "usage": usage,
        "sweeper": sweeper,
        "traffic": traffic,
        "status": StatusReport(database, config, clock=clock),
        "readiness": Readiness(database, storage, shutdown_flag=shutdown_flag),
        "metrics": worker_metrics,
    }


async def _listen_for_purges(
    config: Config, dsn: str, pages: Pages, files: Files
) -> KeptConnection:
    """Purges come from any process (`mypypi2 purge`, another replica, the eviction sweep):
    hear them all, and after the connection was lost (a database restart) trust nothing held."""

    def forget(purged: Purged) -> None:
        pages.forget(purged)
        files.forget(purged)

    def missed_purges() -> None:
        pages.expire_all()
        for repository in config.repositories:
            files.forget(Purged(repository.name, None, files=True))

    listener = KeptConnection(
        dsn,
        lambda connection: listen_purged(connection, forget),
        missed_purges,
        application_name="mypypi2-listener",
    )
    await listener.start()
    return listener
