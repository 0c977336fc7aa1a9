"""The one verifier of upstream bytes: announced hashes and size, for files and metadata."""

from __future__ import annotations

import hashlib

import pytest

from mypypi2.errors import VerificationFailed
from mypypi2.verify import Verifier

BODY = b"the bytes a page announced"
SHA256 = hashlib.sha256(BODY).hexdigest()


def test_matching_bytes_give_their_sha256() -> None:
    verifier = Verifier("u", {"sha256": SHA256, "md5": hashlib.md5(BODY).hexdigest()}, len(BODY))
    verifier.update(BODY[:5])
    verifier.update(BODY[5:])

    assert verifier.verify() == SHA256


def test_a_sha256_is_computed_even_when_only_another_hash_is_announced() -> None:
    verifier = Verifier("u", {"sha512": hashlib.sha512(BODY).hexdigest(), "nohash": "x"})
    verifier.update(BODY)

    assert verifier.verify() == SHA256


def test_a_wrong_digest_is_refused_naming_what() -> None:
    verifier = Verifier("u", {"sha256": "0" * 64}, what="metadata ")
    verifier.update(BODY)

    with pytest.raises(VerificationFailed, match="metadata sha256 mismatch"):
        verifier.verify()


def test_a_byte_past_the_size_is_refused_before_it_counts() -> None:
    verifier = Verifier("u", {"sha256": SHA256}, len(BODY))
    verifier.update(BODY)

    with pytest.raises(VerificationFailed, match="over"):
        verifier.update(b"!")
    assert verifier.received == len(BODY)


def test_too_few_bytes_are_refused() -> None:
    verifier = Verifier("u", {"sha256": SHA256}, len(BODY) + 1)
    verifier.update(BODY)

    with pytest.raises(VerificationFailed, match="received"):
        verifier.verify()


def test_the_upstream_length_is_expected_unless_the_page_said_another() -> None:
    unannounced = Verifier("u", {})
    unannounced.announced(3)
    assert unannounced.expected_size == 3

    announced = Verifier("u", {}, 4)
    announced.announced(None)
    assert announced.expected_size == 4
    with pytest.raises(VerificationFailed, match="page says 4"):
        announced.announced(3)
