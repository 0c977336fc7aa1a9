"""ASGI middleware that lets a test look inside a running cache."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


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
