"""ASGI middleware that lets a test look inside a running cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mypypi2.routes.observed import Observed
from mypypi2.routes.warm import WarmPath


class StateSpy:
    """Hands the test the app's lifespan state, or its entry `key`, from the first request."""

    def __init__(self, app: ASGIApp, found: list[Any], key: str | None = None) -> None:
        self._app = app
        self._found = found
        self._key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._found:
            state = scope["state"]
            self._found.append(state if self._key is None else state[self._key])
        await self._app(scope, receive, send)


class PathsendAsBody:
    """Stands in for a server with zero-copy `http.response.pathsend` (granian) in front of
    the app: the warm path answers files only when the server offers it."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        scope = {
            **scope,
            "extensions": {**scope.get("extensions", {}), "http.response.pathsend": {}},
        }

        async def send_pathsend(message: Message) -> None:
            if message["type"] == "http.response.pathsend":
                # Raises for a missing file, as such a server fails it (granian: a 404).
                body = Path(message["path"]).read_bytes()  # noqa: ASYNC240 - a small file
                message = {"type": "http.response.body", "body": body}
            await send(message)

        await self._app(scope, receive, send_pathsend)


class RouteSpy:
    """Records the paths of the requests the warm path passed on to the routes."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def wrap(self, app: ASGIApp) -> ASGIApp:
        assert isinstance(app, Observed)
        warm = app._app
        assert isinstance(warm, WarmPath)
        routes = warm._app

        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.paths.append(scope["path"])
            await routes(scope, receive, send)

        warm._app = recorded
        return app
