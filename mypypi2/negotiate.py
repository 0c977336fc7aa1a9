"""Choose the representation of a simple-index page (PEP 691 content negotiation, pure).

`negotiate` runs on every page request, so its answer is memoized per (Accept, ?format=)
pair: clients send a handful of distinct headers (pip's, uv's, a browser's), and each
costs one parse.
"""

from __future__ import annotations

import functools
import re

from mypypi2 import errors

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"

# Tie-break order, best first: on equal q the public index answers text/html (PEP 691
# leaves ties to the server).
_OFFERS = (TEXT_HTML, HTML_V1, JSON_V1)

# Exact media types naming an offer. PEP 691: `latest` aliases whatever version the server
# prefers, and the response names the concrete version.
_EXACT = {
    TEXT_HTML: TEXT_HTML,
    HTML_V1: HTML_V1,
    JSON_V1: JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
    "application/vnd.pypi.simple.latest+json": JSON_V1,
}

# Specificity of a matching range (RFC 9110 §12.5.1: the most specific range decides).
_EXACT_MATCH, _TYPE_MATCH, _ANY_MATCH = 3, 2, 1

# RFC 9110 §12.4.2 qvalue grammar; anything else makes the range unusable.
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")

# Header values longer than this are parsed every time rather than cached, so a client
# cannot fill the cache with huge keys.
_MAX_CACHED_LENGTH = 1024


def negotiate(accept: str | None, format_param: str | None = None) -> str:
    """The media type to answer with: JSON_V1, HTML_V1 or TEXT_HTML.

    `format_param` is the `?format=` query value; when given it overrides Accept.
    Raises `errors.NotAcceptable` when nothing we serve is acceptable (→ 406, never 300).
    """
    if (accept is None or len(accept) <= _MAX_CACHED_LENGTH) and (
        format_param is None or len(format_param) <= _MAX_CACHED_LENGTH
    ):
        chosen = _negotiate_cached(accept, format_param)
    else:
        chosen = _negotiate(accept, format_param)
    if chosen is None:
        raise errors.NotAcceptable(_format(format_param) or accept or "")
    return chosen


# Returns None instead of raising: lru_cache does not memoize exceptions, and 406 answers
# deserve the cache as much as 200s.
@functools.lru_cache(maxsize=256)
def _negotiate_cached(accept: str | None, format_param: str | None) -> str | None:
    return _negotiate(accept, format_param)


def _negotiate(accept: str | None, format_param: str | None) -> str | None:
    if media := _format(format_param):
        # One media type naming a representation; wildcards select nothing.
        return _EXACT.get(media.split(";", 1)[0].strip().lower())
    if accept is None or not accept.strip():
        return TEXT_HTML  # PEP 691: no Accept means the PEP 503 HTML page.
    ranges = _parse_accept(accept)
    if not ranges:
        # RFC 9110 §12.5.1 lets a server disregard an Accept field it cannot use; a header
        # with no parseable range at all is treated as absent.
        return TEXT_HTML
    best: str | None = None
    best_q = 0.0
    for offer in _OFFERS:  # strict `>` keeps the earlier (preferred) offer on ties
        q = _quality(offer, ranges)
        if q > best_q:
            best, best_q = offer, q
    return best


def _format(format_param: str | None) -> str:
    """The `?format=` value, or "" when absent or blank (then Accept decides)."""
    return format_param.strip() if format_param else ""


def _parse_accept(accept: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) per usable media range; `latest` types resolved to v1.

    Media-range parameters other than q are ignored: our representations carry none a
    client could select on (`charset` is always UTF-8).
    """
    ranges: list[tuple[str, str, float]] = []
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        media = _EXACT.get(media, media)
        kind, slash, subtype = media.partition("/")
        if not slash or not kind or not subtype or (kind == "*" and subtype != "*"):
            continue
        ranges.append((kind, subtype, _weight(params)))
    return ranges


def _weight(params: list[str]) -> float:
    """The q parameter among a list item's parameters (RFC 9110 §12.4.2); 1 when absent."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            # An invalid weight cannot be trusted to mean "acceptable": treat as q=0.
            return float(value) if _QVALUE.fullmatch(value) else 0.0
    return 1.0


def _quality(offer: str, ranges: list[tuple[str, str, float]]) -> float:
    """The q the client gives `offer`: from its most specific matching range(s)."""
    kind, _, subtype = offer.partition("/")
    specificity = 0
    q = 0.0
    for range_kind, range_subtype, range_q in ranges:
        if range_kind == kind and range_subtype == subtype:
            level = _EXACT_MATCH
        elif range_kind == kind and range_subtype == "*":
            level = _TYPE_MATCH
        elif range_kind == "*":
            level = _ANY_MATCH
        else:
            continue
        if level > specificity:
            specificity, q = level, range_q
        elif level == specificity:
            # The same range listed twice is ambiguous; be lenient and take the higher q.
            q = max(q, range_q)
    return q


# Content codings we can send, best first on equal q: zstd is smaller and faster to
# decode than gzip (uv asks for it; pip asks for gzip).
CODINGS = ("zstd", "gzip")


def choose_encoding(accept_encoding: str | None) -> str | None:
    """The content coding to compress with, or None for the identity (RFC 9110 §12.5.3).

    A header longer than any client sends is not read (nor memoized): the identity."""
    if not accept_encoding or len(accept_encoding) > _MAX_CACHED_LENGTH:
        return None
    return _choose_encoding(accept_encoding)


@functools.lru_cache(maxsize=256)
def _choose_encoding(accept_encoding: str) -> str | None:
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        weights[coding.strip().lower()] = _weight(params)
    wildcard = weights.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in CODINGS:
        q = weights.get(coding, wildcard)
        if q > best_q:
            best, best_q = coding, q
    return best
