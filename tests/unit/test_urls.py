"""Secrets in URLs: what errors, logs and `config --show` may print."""

from __future__ import annotations

import pytest

from mypypi2.urls import origin, redact_text, redact_url, split_userinfo


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://upstream.example/simple/", "https://upstream.example/simple/"),
        (
            "https://user:pw@upstream.example/simple/",
            "https://user:<redacted>@upstream.example/simple/",
        ),
        ("https://TOKEN@upstream.example/simple/", "https://<redacted>@upstream.example/simple/"),
        ("https://u:p@ss@upstream.example:8443/", "https://u:<redacted>@upstream.example:8443/"),
        (
            "postgresql://cache:pw@db.example/cache",
            "postgresql://cache:<redacted>@db.example/cache",
        ),
        (
            "postgresql://db.example/cache?sslmode=require&password=pw",
            "postgresql://db.example/cache?sslmode=require&password=<redacted>",
        ),
        ("https://files.example/f?token=abc&x=1", "https://files.example/f?token=<redacted>&x=1"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_hides_userinfo_of_every_url() -> None:
    text = "Cannot connect to http://u:pw@a.example/x (via https://t0k@b.example/)"

    assert redact_text(text) == (
        "Cannot connect to http://<redacted>@a.example/x (via https://<redacted>@b.example/)"
    )


def test_split_userinfo_decodes_percent_escapes() -> None:
    assert split_userinfo("https://read%40er:p%3Ass@upstream.example:81/simple/") == (
        "https://upstream.example:81/simple/",
        ("read@er", "p:ss"),
    )
    assert split_userinfo("https://upstream.example/simple/") == (
        "https://upstream.example/simple/",
        None,
    )


def test_origin_fills_in_default_ports_and_ignores_case() -> None:
    assert origin("https://Upstream.Example./simple/") == ("https", "upstream.example", 443)
    assert origin("http://upstream.example:8080/") == ("http", "upstream.example", 8080)
    assert origin("http://upstream.example/") != origin("https://upstream.example/")
