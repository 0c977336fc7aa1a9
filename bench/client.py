"""Small HTTP helpers for checks and warm-ups (the load itself comes from wrk)."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from html import unescape
from urllib.parse import urldefrag, urljoin

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
_HREF = re.compile(r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', re.IGNORECASE)


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes
    url: str  # after redirects

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def get(url: str, accept: str | None = None, *, timeout: float = 120.0) -> Answer:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, response.headers, response.read(), response.url)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read(), url)


def page_links(answer: Answer) -> dict[str, str]:
    """filename -> absolute file URL (no fragment), from a JSON or HTML project page."""
    links = {}
    if answer.content_type.startswith(JSON_V1):
        for entry in json.loads(answer.body)["files"]:
            links[entry["filename"]] = urldefrag(urljoin(answer.url, entry["url"])).url
    else:
        for href, text in _HREF.findall(answer.body.decode()):
            links[unescape(text).strip()] = urldefrag(urljoin(answer.url, unescape(href))).url
    return links


def check_page(answer: Answer, accept: str, files: int) -> str | None:
    """Why `answer` is not a correct project page in the asked format (None: it is)."""
    if answer.status != 200:
        return f"status {answer.status}"
    wanted = JSON_V1 if accept == JSON_V1 else HTML
    if not answer.content_type.startswith(wanted):
        return f"content-type {answer.content_type!r}, wanted {wanted}"
    found = len(page_links(answer))
    if found != files:
        return f"{found} files listed, expected {files}"
    return None


def check_file(answer: Answer, sha256: str) -> str | None:
    if answer.status != 200:
        return f"status {answer.status}"
    digest = hashlib.sha256(answer.body).hexdigest()
    if digest != sha256:
        return f"sha256 {digest[:12]}..., expected {sha256[:12]}..."
    return None
