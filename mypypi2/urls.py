"""URLs that may carry secrets: the userinfo of an upstream or database URL, token parameters.

Pure. Whatever URL goes into an error, a log line or `config --show` passes `redact_url`
first: an UpstreamError's text reaches every client in a 502 body.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "<redacted>"
# Query parameters whose value is a secret in the URLs people configure (`?token=`,
# libpq's `?password=`/`?sslpassword=`).
_SECRET_PARAMETER = re.compile(
    r"(?P<key>(?:^|[&;])[^=&;]*(?:password|secret|token)[^=&;]*=)[^&;]*", re.IGNORECASE
)
# Userinfo anywhere in free text, e.g. an aiohttp message that quotes a URL.
_USERINFO_IN_TEXT = re.compile(r"(?<=://)[^/?#@\s]+@")


def redact_url(url: str) -> str:
    """`url` with its password (or a lone username, often a token) and secret parameters hidden.

    `https://user:pw@host/` -> `https://user:<redacted>@host/`;
    `https://TOKEN@host/` -> `https://<redacted>@host/`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all: hide anything that looks like userinfo
        return redact_text(url)
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at:
        name, colon, _password = user.partition(":")
        netloc = f"{name}:{REDACTED}@{host}" if colon else f"{REDACTED}@{host}"
    query = _SECRET_PARAMETER.sub(lambda m: m["key"] + REDACTED, parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """`text` with the userinfo of every URL in it hidden."""
    return _USERINFO_IN_TEXT.sub(f"{REDACTED}@", text)


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` without its userinfo, and the (percent-decoded) username and password it held."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    name, _, password = user.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(name), unquote(password))


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in: what credentials are scoped to."""
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, normalize_host(parts.hostname or ""), parts.port or default_port


def normalize_host(host: str) -> str:
    # DNS names are case-insensitive and a trailing dot names the same host.
    return host.lower().rstrip(".")
