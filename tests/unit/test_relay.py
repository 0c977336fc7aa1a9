"""The cluster options and the relay's token: who relays, at which address, to whom."""

from __future__ import annotations

import re
import tomllib
import uuid

import msgspec
import pytest

from mypypi2 import config, relay
from mypypi2.config import ClusterConfig, Config, ServerConfig

SECRET = "sixteen-chars-at-least"


@pytest.mark.parametrize(
    ("host", "advertise_url", "expected"),
    [
        ("10.0.3.7", "", "http://10.0.3.7:8000"),
        ("fd00::7", "", "http://[fd00::7]:8000"),
        ("cache-2.internal", "", "http://cache-2.internal:8000"),
        # Addresses the other replicas cannot reach this one at.
        ("127.0.0.1", "", None),
        ("::1", "", None),
        ("0.0.0.0", "", None),
        ("::", "", None),
        ("localhost", "", None),
        # Said outright, it wins (a pod IP behind a wildcard listener).
        ("0.0.0.0", "http://10.0.3.7:8000/", "http://10.0.3.7:8000"),
    ],
)
def test_the_advertised_address(host: str, advertise_url: str, expected: str | None) -> None:
    cluster = ClusterConfig(secret=SECRET, advertise_url=advertise_url)

    assert relay.advertised(cluster, ServerConfig(host=host, port=8000)) == expected


def test_without_a_secret_nothing_is_advertised() -> None:
    cluster = ClusterConfig(advertise_url="http://10.0.3.7:8000")

    assert relay.advertised(cluster, ServerConfig(host="10.0.3.7")) is None


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"secret": "short"}, "at least 16"),
        ({"advertise-url": "10.0.3.7:8000"}, "not an http(s) URL"),
        ({"advertise-url": "http://10.0.3.7:8000/mirror"}, "scheme, host and port only"),
        ({"advertise-url": "http://10.0.3.7:8000/?x=1"}, "scheme, host and port only"),
    ],
)
def test_bad_cluster_options_are_refused(settings: dict[str, str], complaint: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(complaint)):
        msgspec.convert(settings, ClusterConfig)


def test_a_token_opens_one_download_only() -> None:
    attempt = uuid.uuid4()
    token = relay.token(SECRET, 7, attempt)

    assert relay.authentic(SECRET, 7, attempt, token)
    assert not relay.authentic(SECRET, 8, attempt, token)
    assert not relay.authentic(SECRET, 7, uuid.uuid4(), token)
    assert not relay.authentic("another-secret-of-16", 7, attempt, token)
    assert SECRET not in token


def test_config_show_redacts_the_cluster_secret() -> None:
    shown = config.to_toml(Config(cluster=ClusterConfig(secret=SECRET)), redact=True)

    assert SECRET not in shown
    assert tomllib.loads(shown)["cluster"]["secret"] == config.REDACTED
