"""`/-/metrics`: the replica's metrics in the Prometheus text format (see metrics.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mypypi2.metrics import Metrics

# The classic text format: our names are plain ASCII, which every Prometheus reads in it
# (prometheus_client's newest default, 1.0.0, is the same bytes with a newer label).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: Request) -> Response:
    tallies: Metrics = request.state.metrics
    body = await tallies.exposition()
    return Response(body, media_type=TEXT_FORMAT, headers={"Cache-Control": "no-store"})


routes = [Route("/-/metrics", metrics)]
