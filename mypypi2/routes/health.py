"""The probes: `/-/health` says the process answers (liveness: restarting it would not
help a database outage, so the database is not asked), `/-/ready` says whether to send it
requests (readiness: PostgreSQL and the store work and it is not shutting down)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mypypi2.readiness import Readiness

_HEADERS = {"Cache-Control": "no-store"}


async def health(request: Request) -> Response:
    return PlainTextResponse("ok\n", headers=_HEADERS)


async def ready(request: Request) -> Response:
    readiness: Readiness = request.state.readiness
    problems = await readiness.problems()
    if problems:
        body = "".join(f"{problem}\n" for problem in problems)
        return PlainTextResponse(f"not ready\n{body}", status_code=503, headers=_HEADERS)
    return PlainTextResponse("ready\n", headers=_HEADERS)


# Repository names start with a letter or digit, so "/-/" never shadows one.
routes = [Route("/-/health", health), Route("/-/ready", ready)]
