"""`/-/relay/{file_id}/{attempt}`: a download led on this host, for the replicas of others.

Internal (see relay.py): answered only to a bearer of the download's token, and 404 to
anyone else, whether or not the download exists. Under "/-/", which no repository shadows.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mypypi2.file_headers import OCTETS
from mypypi2.files import Files
from mypypi2.relay import RELAY_PATH

_BEARER = "Bearer "
_NOT_HERE = {"Cache-Control": "no-store"}


async def relay(request: Request) -> Response:
    file_id: int = request.path_params["file_id"]
    offset = request.query_params.get("offset", "0")
    authorization = request.headers.get("authorization", "")
    try:
        attempt = uuid.UUID(hex=request.path_params["attempt"])
    except ValueError:
        attempt = None
    if attempt is None or not offset.isdigit() or not authorization.startswith(_BEARER):
        return PlainTextResponse("not found\n", 404, headers=_NOT_HERE)
    files: Files = request.state.files
    start = int(offset)
    relayed = await files.relay(file_id, attempt, start, authorization.removeprefix(_BEARER))
    if relayed is None:
        return PlainTextResponse("not found\n", 404, headers=_NOT_HERE)
    length, body = relayed
    # With the length announced, a stream cut short is one for every client and server.
    headers = {"Cache-Control": "no-store"}
    if length is not None:
        headers["Content-Length"] = str(max(length - start, 0))
    return StreamingResponse(body, headers=headers, media_type=OCTETS)


routes = [Route(RELAY_PATH + "/{file_id:int}/{attempt}", relay, methods=["GET"])]
