"""`/-/status` (HTML, for an operator's browser) and `/-/status.json` (the same report)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mypypi2 import status_page
from mypypi2.status import StatusReport

_HEADERS = {
    "Cache-Control": "no-store",
    # The page loads nothing and runs nothing: should an escape ever fail, a browser still
    # runs no script and contacts no one.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


async def status_html(request: Request) -> Response:
    report: StatusReport = request.state.status
    body = status_page.render(await report.gather())
    return Response(body, headers=_HEADERS, media_type="text/html; charset=utf-8")


async def status_json(request: Request) -> Response:
    report: StatusReport = request.state.status
    body = msgspec.json.encode(await report.gather())
    return Response(body, headers=_HEADERS, media_type="application/json")


routes = [Route("/-/status", status_html), Route("/-/status.json", status_json)]
