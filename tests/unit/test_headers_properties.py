"""Whatever a client sends in a page request's headers or query, the code that reads it
answers or raises our own NotAcceptable: nothing else (SPEC-CHECKLIST "Content
negotiation", RFC 9110 §12 and §13)."""

from __future__ import annotations

import datetime as dt
import math
from email.utils import format_datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mypypi2 import errors, negotiate
from mypypi2.negotiate import HTML_V1, JSON_V1, TEXT_HTML
from mypypi2.routes import conditional, simple
from mypypi2.snapshot import Representation

# No example database in the work tree; no deadline (speed is measured in bench/).
PROPERTY = settings(deadline=None, database=None, max_examples=300)

# Header values as a server hands them over: any bytes but CR, LF and NUL, decoded as
# latin-1 (what Starlette and the warm path do).
header_values = st.binary(max_size=300).map(
    lambda raw: raw.translate(None, b"\r\n\x00").decode("latin-1")
)
# And what a percent-decoded query value can hold: any text.
any_text = st.one_of(header_values, st.text(max_size=300))

# Pieces of real and broken Accept-style lists, so lists are often almost right.
_TOKENS = [
    JSON_V1,
    HTML_V1,
    TEXT_HTML,
    "application/vnd.pypi.simple.latest+json",
    "*/*",
    "application/*",
    "text/*",
    "*/html",
    "gzip",
    "zstd",
    "*",
    "identity",
    "",
    " ",
    "/",
    "q",
    "q=",
    "=",
    ";",
    "W/",
    '"',
]
# Valid ones, out of range, not numbers, non-ASCII digits, almost right.
_QVALUES = ["0", "1", "0.5", "1.000", "0.001", "1e999", "nan", "inf", "-1", "-0", "2", "1.0001"]
_QVALUES += ["0x1", "\uff11", "\u0660.\u0665", "", " 0.5 ", "0.", "1.", ".5", "+1", "1_0"]
_param = st.one_of(
    st.sampled_from(_QVALUES).map(lambda q: f"q={q}"),
    st.sampled_from(_QVALUES).map(lambda q: f" Q = {q}"),
    st.sampled_from(["charset=utf-8", "level=1", ";;", "q", "=="]),
    header_values,
)
_range = st.builds(
    lambda token, params: ";".join([token, *params]),
    st.one_of(st.sampled_from(_TOKENS), header_values),
    st.lists(_param, max_size=3),
)
lists = st.lists(_range, max_size=6).map(", ".join)
accepts = st.one_of(st.none(), lists, header_values)


@PROPERTY
@given(accepts, st.one_of(st.none(), st.sampled_from([JSON_V1, "", " ", "*/*"]), any_text))
@example(f"{JSON_V1};q=1e999", None)
@example("text/html;q=nan", None)
@example("text/html;q=-1", None)
@example(";;;", None)
@example("", "")
@example("a" * 5000, None)
def test_negotiate_answers_an_offer_or_raises_not_acceptable(
    accept: str | None, format_param: str | None
) -> None:
    try:
        chosen = negotiate.negotiate(accept, format_param)
    except errors.NotAcceptable:
        chosen = None
    assert chosen in (JSON_V1, HTML_V1, TEXT_HTML, None)
    # The memo gives what a fresh parse gives.
    assert chosen == negotiate._negotiate(accept, format_param)


@PROPERTY
@given(st.lists(_param, max_size=5))
def test_a_q_value_is_a_number_from_0_to_1(params: list[str]) -> None:
    weight = negotiate._weight(params)
    assert not math.isnan(weight)
    assert 0.0 <= weight <= 1.0


@PROPERTY
@given(st.one_of(st.none(), lists, header_values))
@example("gzip;q=1e999, zstd;q=nan")
@example("zstd, " * 1000)
def test_choose_encoding_picks_a_coding_we_produce_or_none(accept_encoding: str | None) -> None:
    assert negotiate.choose_encoding(accept_encoding) in ("zstd", "gzip", None)


ETAG = '"0123456789abcdef0123456789abcdef"'
_etag_lists = st.lists(
    st.one_of(st.sampled_from([ETAG, f"W/{ETAG}", '"other"', "*", "W/", '"', ""]), header_values),
    max_size=5,
).map(",".join)


def _representation() -> Representation:
    return Representation(b"<html></html>", ETAG)


@PROPERTY
@given(st.one_of(_etag_lists, header_values))
def test_etag_matching_never_raises(if_none_match: str) -> None:
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    assert _representation().matches(if_none_match) is bool(tags & {ETAG, "*"})


@PROPERTY
@given(
    st.lists(st.sampled_from(['"a"', 'W/"b"', '"c"']), max_size=3),
    st.sampled_from([ETAG, f"W/{ETAG}", "*"]),
    st.sampled_from(["", " ", "\t"]),
)
def test_a_list_naming_the_etag_matches(others: list[str], tag: str, space: str) -> None:
    listed = f"{space},{space}".join([*others, tag])
    assert _representation().matches(listed)


@PROPERTY
@given(any_text)
@example("Fri, 31 Dec 99999 23:59:59 GMT")
@example("Mon, 99 Jan 2020 99:99:99 GMT")
@example("Sat, 01 Jan 0000 00:00:00 -9999")
def test_http_date_of_any_text_is_none_or_seconds(value: str) -> None:
    parsed = conditional.http_date(value)
    assert parsed is None or isinstance(parsed, int)


@PROPERTY
@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9999, 12, 31)))
def test_http_date_reads_back_our_last_modified(moment: dt.datetime) -> None:
    moment = moment.replace(microsecond=0, tzinfo=dt.UTC)
    stamp = int(moment.timestamp())
    assert conditional.http_date(format_datetime(moment, usegmt=True)) == stamp
    # The obsolete forms a recipient must also read (RFC 9110 §5.6.7); RFC 850's two-digit
    # year reads as 1970-2068.
    if moment.year < 2069:
        rfc850 = moment.strftime("%A, %d-%b-%y %H:%M:%S GMT")
        assert conditional.http_date(rfc850) == stamp
    assert conditional.http_date(moment.strftime("%a %b %e %H:%M:%S %Y")) == stamp


@PROPERTY
@given(
    st.one_of(st.none(), _etag_lists, header_values),
    st.one_of(st.none(), st.just("Mon, 01 Jan 2024 00:00:00 GMT"), header_values),
)
def test_page_not_modified_never_raises(
    if_none_match: str | None, if_modified_since: str | None
) -> None:
    changed_at = dt.datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=dt.UTC)
    answer = conditional.page_not_modified(
        _representation(), changed_at, if_none_match, if_modified_since
    )
    if if_none_match is None and if_modified_since == "Mon, 01 Jan 2024 00:00:00 GMT":
        assert answer is True
    elif if_none_match is not None:
        assert answer is _representation().matches(if_none_match)


@PROPERTY
@given(any_text)
@example("format=%ff%fe&format=x")
@example("format")
@example("%zz=%")
def test_the_format_parameter_of_any_query_string(query: str) -> None:
    value = simple._format_param(query)
    assert value is None or isinstance(value, str)
