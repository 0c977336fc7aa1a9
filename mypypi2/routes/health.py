"""`/-/health`: the service is up and its database answers (for load balancers)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mypypi2.pages import Pages


async def health(request: Request) -> Response:
    pages: Pages = request.state.pages
    await pages.ping_database()
    return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})


# Repository names start with a letter or digit, so "/-/" never shadows one.
routes = [Route("/-/health", health)]
