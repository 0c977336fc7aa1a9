from __future__ import annotations

import pytest

from mypypi2 import errors, negotiate
from mypypi2.negotiate import HTML_V1, JSON_V1, TEXT_HTML

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_media_types_are_the_exact_pep691_strings() -> None:
    assert JSON_V1 == "application/vnd.pypi.simple.v1+json"
    assert HTML_V1 == "application/vnd.pypi.simple.v1+html"
    assert TEXT_HTML == "text/html"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        # Real clients.
        pytest.param(PIP_ACCEPT, JSON_V1, id="pip"),
        pytest.param(UV_ACCEPT, JSON_V1, id="uv"),
        pytest.param(BROWSER_ACCEPT, TEXT_HTML, id="browser"),
        pytest.param("*/*", TEXT_HTML, id="curl"),
        # No Accept means PEP 503 HTML.
        pytest.param(None, TEXT_HTML, id="absent"),
        pytest.param("", TEXT_HTML, id="empty"),
        pytest.param("   ", TEXT_HTML, id="blank"),
        # Exact types.
        pytest.param(JSON_V1, JSON_V1, id="json"),
        pytest.param(HTML_V1, HTML_V1, id="html-v1"),
        pytest.param(TEXT_HTML, TEXT_HTML, id="text-html"),
        # q decides, not order.
        pytest.param(f"{TEXT_HTML};q=0.5, {JSON_V1};q=0.6", JSON_V1, id="q-not-order"),
        pytest.param(f"{JSON_V1};q=0.2, {TEXT_HTML};q=0.5", TEXT_HTML, id="q-beats-first"),
        pytest.param(f"{JSON_V1};q=0.001, {HTML_V1};q=0.002", HTML_V1, id="q-three-digits"),
        pytest.param(f"{JSON_V1};q=1.000, {TEXT_HTML};q=0.999", JSON_V1, id="q-one-point"),
        # Whitespace around `;` and `=` is optional; q is case-insensitive.
        pytest.param(f"{JSON_V1};q=0.9,{TEXT_HTML};q=0.5", JSON_V1, id="no-spaces"),
        pytest.param(f"  {JSON_V1}  ;  q=0.9 ,  {TEXT_HTML} ; q = 0.5 ", JSON_V1, id="spaces"),
        pytest.param(f"{JSON_V1}\t;\tq=0.9", JSON_V1, id="tabs"),
        pytest.param(f"{TEXT_HTML};Q=0.4, {JSON_V1};Q=0.5", JSON_V1, id="upper-q"),
        # Media types are case-insensitive.
        pytest.param("Application/VND.PyPI.Simple.V1+JSON", JSON_V1, id="case"),
        pytest.param("TEXT/HTML", TEXT_HTML, id="case-text"),
        # q=0 means never.
        pytest.param(f"{JSON_V1};q=0, {TEXT_HTML};q=0.01", TEXT_HTML, id="q0-excludes"),
        pytest.param(f"*/*, {TEXT_HTML};q=0", HTML_V1, id="q0-exact-beats-star"),
        pytest.param(f"*/*, {TEXT_HTML};q=0, {HTML_V1};q=0", JSON_V1, id="q0-two"),
        # Wildcards; the most specific matching range decides an offer's q.
        pytest.param("application/*", HTML_V1, id="application-star"),
        pytest.param("text/*", TEXT_HTML, id="text-star"),
        pytest.param("*/*;q=0.1, " + JSON_V1, JSON_V1, id="star-low"),
        pytest.param(f"application/*;q=0.5, {TEXT_HTML};q=0.4", HTML_V1, id="type-star-q"),
        pytest.param(f"{JSON_V1};q=0, application/*;q=0.5", HTML_V1, id="exact-beats-type"),
        pytest.param(f"{JSON_V1};q=0.9, application/*;q=0.1", JSON_V1, id="exact-over-type"),
        pytest.param("application/*;q=0, */*", TEXT_HTML, id="type-beats-any"),
        pytest.param("text/*;q=0, */*;q=0.3", HTML_V1, id="text-star-q0"),
        pytest.param(f"*/*;q=0.2, {JSON_V1};q=0.1", TEXT_HTML, id="star-beats-low-exact"),
        # Ties: text/html, then v1+html, then v1+json (the public index's preference).
        pytest.param(f"{JSON_V1}, {TEXT_HTML}", TEXT_HTML, id="tie-json-text"),
        pytest.param(f"{JSON_V1}, {HTML_V1}", HTML_V1, id="tie-json-html"),
        pytest.param(f"{JSON_V1}, {HTML_V1}, {TEXT_HTML}", TEXT_HTML, id="tie-all"),
        pytest.param(f"{JSON_V1};q=0.5, {HTML_V1};q=0.5", HTML_V1, id="tie-with-q"),
        # `latest` aliases answer with the concrete v1 type.
        pytest.param("application/vnd.pypi.simple.latest+json", JSON_V1, id="latest-json"),
        pytest.param("application/vnd.pypi.simple.latest+html", HTML_V1, id="latest-html"),
        pytest.param(
            f"application/vnd.pypi.simple.latest+json;q=0.9, {TEXT_HTML};q=0.5",
            JSON_V1,
            id="latest-q",
        ),
        # Invalid q makes the range unusable; other ranges still count.
        pytest.param(f"{JSON_V1};q=abc, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-garbage"),
        pytest.param(f"{JSON_V1};q=2, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-above-one"),
        pytest.param(f"{JSON_V1};q=-1, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-negative"),
        pytest.param(f"{JSON_V1};q=0.0001, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-four-digits"),
        pytest.param(f"{JSON_V1};q=nan, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-nan"),
        pytest.param(f"{JSON_V1};q=1e999, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-overflow"),
        pytest.param(f"{JSON_V1};q=inf, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-inf"),
        pytest.param(f"{JSON_V1};q=-0, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-minus-zero"),
        pytest.param(f"{JSON_V1};q=\uff11, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-fullwidth"),
        pytest.param(f"{JSON_V1};q=, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-empty"),
        pytest.param(f"{JSON_V1};q, {TEXT_HTML};q=0.1", TEXT_HTML, id="q-no-value"),
        pytest.param(f"{JSON_V1};q=0., {TEXT_HTML};q=1.", TEXT_HTML, id="q-trailing-dot"),
        pytest.param(f"{TEXT_HTML};q=0.5;q=1e999, {JSON_V1};q=0.4", TEXT_HTML, id="q-first"),
        # Other parameters do not stop a match.
        pytest.param(f"{JSON_V1}; charset=utf-8", JSON_V1, id="charset"),
        pytest.param(f"{TEXT_HTML};level=1;q=0.5, {JSON_V1};q=0.4", TEXT_HTML, id="level"),
        # The same range twice: the higher q wins.
        pytest.param(f"{TEXT_HTML};q=0, {TEXT_HTML};q=0.5", TEXT_HTML, id="duplicate"),
        pytest.param(f"{TEXT_HTML};q=0.5, {TEXT_HTML};q=0", TEXT_HTML, id="duplicate-reversed"),
        # Unparseable ranges are skipped; a header with none usable counts as absent.
        pytest.param(f"garbage, {JSON_V1}", JSON_V1, id="junk-range"),
        pytest.param("garbage", TEXT_HTML, id="only-junk"),
        pytest.param(",,,", TEXT_HTML, id="only-commas"),
        pytest.param("*/json", TEXT_HTML, id="star-subtype"),
    ],
)
def test_accept(accept: str | None, expected: str) -> None:
    assert negotiate.negotiate(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "text/plain",
        "application/vnd.pypi.simple.v2+json",
        "application/vnd.pypi.simple.v1+xml",
        "image/*",
        "*/*;q=0",
        f"{TEXT_HTML};q=0",
        f"{JSON_V1};q=0, {HTML_V1};q=0, {TEXT_HTML};q=0",
        "application/*;q=0, text/*;q=0",
        "application/*;q=0, */*, text/html;q=0",
        f"{JSON_V1};q=abc",
    ],
)
def test_nothing_acceptable_raises_not_acceptable(accept: str) -> None:
    with pytest.raises(errors.NotAcceptable) as excinfo:
        negotiate.negotiate(accept)
    assert excinfo.value.accept == accept


def test_not_acceptable_is_raised_again_from_the_cache() -> None:
    for _ in range(3):
        with pytest.raises(errors.NotAcceptable):
            negotiate.negotiate("application/json")


@pytest.mark.parametrize(
    ("accept", "format_param", "expected"),
    [
        (TEXT_HTML, JSON_V1, JSON_V1),
        (PIP_ACCEPT, TEXT_HTML, TEXT_HTML),
        (PIP_ACCEPT, HTML_V1, HTML_V1),
        (None, JSON_V1, JSON_V1),
        # It overrides even an Accept that would be refused.
        ("application/json", JSON_V1, JSON_V1),
        (f"{JSON_V1};q=0", JSON_V1, JSON_V1),
        ("application/json", "application/vnd.pypi.simple.latest+json", JSON_V1),
        (None, "application/vnd.pypi.simple.latest+html", HTML_V1),
        (None, " Application/VND.PyPI.Simple.V1+JSON ", JSON_V1),
        # Blank means "not given": Accept decides.
        (PIP_ACCEPT, "", JSON_V1),
        (None, "  ", TEXT_HTML),
    ],
)
def test_format_param_overrides_accept(
    accept: str | None, format_param: str, expected: str
) -> None:
    assert negotiate.negotiate(accept, format_param) == expected


@pytest.mark.parametrize(
    "format_param",
    ["application/json", "*/*", "application/*", "text/plain", "json", "v1+json"],
)
def test_unknown_format_param_raises_not_acceptable(format_param: str) -> None:
    with pytest.raises(errors.NotAcceptable) as excinfo:
        negotiate.negotiate(PIP_ACCEPT, format_param)
    assert excinfo.value.accept == format_param


def test_repeated_headers_are_served_from_the_cache() -> None:
    negotiate.negotiate(UV_ACCEPT)
    hits = negotiate._negotiate_cached.cache_info().hits
    assert negotiate.negotiate(UV_ACCEPT) == JSON_V1
    assert negotiate._negotiate_cached.cache_info().hits == hits + 1


def test_huge_header_is_negotiated_without_being_cached() -> None:
    accept = "text/plain;q=0.5, " * 200 + JSON_V1
    size = negotiate._negotiate_cached.cache_info().currsize
    assert negotiate.negotiate(accept) == JSON_V1
    with pytest.raises(errors.NotAcceptable):
        negotiate.negotiate("text/plain, " * 200)
    assert negotiate._negotiate_cached.cache_info().currsize == size


# -- choose_encoding (RFC 9110 §12.5.3) --------------------------------------------------------

# uv (reqwest with its gzip and zstd features) and pip (requests/urllib3).
UV_ACCEPT_ENCODING = "gzip, deflate, zstd"
PIP_ACCEPT_ENCODING = "gzip, deflate"


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        pytest.param(UV_ACCEPT_ENCODING, "zstd", id="uv"),
        pytest.param(PIP_ACCEPT_ENCODING, "gzip", id="pip"),
        pytest.param("gzip, deflate, br, zstd", "zstd", id="browser"),
        # Nothing said, or only codings we do not produce: the identity.
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("identity", None, id="identity-only"),
        pytest.param("deflate, br", None, id="unsupported-only"),
        pytest.param("x-gzip", None, id="x-gzip"),
        # Single codings, any case, any whitespace.
        pytest.param("gzip", "gzip", id="gzip"),
        pytest.param("zstd", "zstd", id="zstd"),
        pytest.param("GZIP", "gzip", id="upper-case"),
        pytest.param("  zstd  ,gzip", "zstd", id="spaces"),
        # zstd wins ties (smaller, faster to decode), whatever the order.
        pytest.param("gzip, zstd", "zstd", id="tie-order"),
        pytest.param("gzip;q=0.5, zstd;q=0.5", "zstd", id="tie-with-q"),
        # q decides, not order.
        pytest.param("zstd;q=0.5, gzip", "gzip", id="q-beats-tie-break"),
        pytest.param("gzip ; q=0.8 , zstd ; q=0.9", "zstd", id="q-with-spaces"),
        pytest.param("zstd;q=0.001, gzip;q=0.002", "gzip", id="q-three-digits"),
        pytest.param("gzip;Q=1, zstd;Q=0.9", "gzip", id="upper-q"),
        # q=0 means "not acceptable".
        pytest.param("zstd;q=0", None, id="q0-only"),
        pytest.param("zstd;q=0, gzip", "gzip", id="q0-excludes"),
        pytest.param("gzip;q=0.0, zstd;q=0.000", None, id="q0-spelled-out"),
        # `*` names every coding not listed.
        pytest.param("*", "zstd", id="star"),
        pytest.param("*;q=0.5, gzip", "gzip", id="star-below-listed"),
        pytest.param("*, zstd;q=0", "gzip", id="star-but-not-zstd"),
        pytest.param("*;q=0", None, id="star-q0"),
        pytest.param("*;q=0, gzip;q=0.1", "gzip", id="star-q0-listed-wins"),
        # An invalid weight is not trusted to mean "acceptable".
        pytest.param("zstd;q=abc, gzip;q=0.1", "gzip", id="q-garbage"),
        pytest.param("zstd;q=1.5, gzip;q=0.1", "gzip", id="q-above-one"),
        pytest.param("gzip;q=-1", None, id="q-negative"),
        pytest.param("zstd;q=1e999, gzip;q=0.1", "gzip", id="q-overflow"),
        pytest.param("zstd;q=nan, gzip;q=inf", None, id="q-nan-inf"),
        pytest.param(";;;, ,", None, id="only-separators"),
        pytest.param("\xff\xfe, gzip", "gzip", id="latin-1-junk"),
    ],
)
def test_choose_encoding(accept_encoding: str | None, expected: str | None) -> None:
    assert negotiate.choose_encoding(accept_encoding) == expected


def test_choose_encoding_ignores_a_huge_header() -> None:
    # Not parsed (nor memoized): an oversized header costs nothing and compresses nothing.
    negotiate.choose_encoding("gzip")
    size = negotiate._choose_encoding.cache_info().currsize
    for filler in range(3):
        assert negotiate.choose_encoding(f"zstd, {filler}, " + "x, " * 1000) is None
    assert negotiate._choose_encoding.cache_info().currsize == size
