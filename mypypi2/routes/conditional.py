"""Conditional requests (RFC 9110 section 13), shared by every route."""

from __future__ import annotations

from starlette.requests import Request


def etag_matches(request: Request, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (weak comparison, as 13.1.2 asks for GET)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    return any(tag.strip().removeprefix("W/") in ("*", etag) for tag in header.split(","))
