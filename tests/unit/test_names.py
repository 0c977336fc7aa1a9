from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mypypi2 import names

# No example database in the work tree; no deadline (speed is measured in bench/).
PROPERTY = settings(deadline=None, database=None)
CANONICAL = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*", re.ASCII)
# PEP 508's name grammar, written out here independently of the code under test.
VALID = re.compile(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]", re.ASCII)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("requests", "requests"),
        ("Foo.Bar_baz", "foo-bar-baz"),
        ("a--b", "a-b"),
        ("A._-B", "a-b"),
        ("zope.interface", "zope-interface"),
        ("x", "x"),
        ("0", "0"),
        ("a" * names.MAX_NAME_LENGTH, "a" * names.MAX_NAME_LENGTH),
    ],
)
def test_canonical_name_of_a_valid_name(name: str, expected: str) -> None:
    assert names.canonical_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        # Letters that case-fold to ASCII ones: the long s, the dotless i, the Kelvin sign.
        pytest.param("\u017fix", id="long-s"),
        pytest.param("\u0131dna", id="dotless-i"),
        pytest.param("\u212a", id="kelvin-sign"),
        pytest.param("caf\u00e9", id="latin-1"),
        pytest.param("\uff41", id="fullwidth-a"),
        pytest.param("\u0661", id="arabic-indic-one"),
        # `$` in a regex also matches before a final newline.
        pytest.param("six\n", id="trailing-newline"),
        pytest.param("six\x00", id="nul"),
        pytest.param("", id="empty"),
        pytest.param("-", id="dash"),
        pytest.param("-six", id="leading-dash"),
        pytest.param("six_", id="trailing-underscore"),
        pytest.param(".six", id="leading-dot"),
        pytest.param("six six", id="space"),
        pytest.param("six/", id="slash"),
        pytest.param("..", id="dot-dot"),
        pytest.param("v1+json", id="plus"),
        pytest.param("a" * (names.MAX_NAME_LENGTH + 1), id="over-the-cap"),
    ],
)
def test_canonical_name_of_an_invalid_name_is_none(name: str) -> None:
    assert names.canonical_name(name) is None


def test_names_over_the_cap_are_not_memoized() -> None:
    names.canonical_name("x" * 300)
    size = names._canonical_name.cache_info().currsize
    for length in (201, 5_000, 100_000):
        assert names.canonical_name("b" * length) is None
    assert names._canonical_name.cache_info().currsize == size


@PROPERTY
@given(st.text())
@example("\u017fix")
@example("\u0131dna")
@example("six\n")
def test_canonical_name_of_any_text_is_none_or_canonical(name: str) -> None:
    canonical = names.canonical_name(name)
    if canonical is None:
        assert len(name) > names.MAX_NAME_LENGTH or not VALID.fullmatch(name)
    else:
        assert CANONICAL.fullmatch(canonical)
        assert canonical == names.normalize(name)
        assert names.canonical_name(canonical) == canonical


@PROPERTY
@given(st.from_regex(VALID, fullmatch=True).filter(lambda n: len(n) <= names.MAX_NAME_LENGTH))
def test_every_valid_name_has_a_canonical_name(name: str) -> None:
    assert names.canonical_name(name) == names.normalize(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Foo.Bar_baz", "foo-bar-baz"), ("a--b", "a-b"), ("A-_.-b", "a-b"), ("UPPER", "upper")],
)
def test_normalize_is_pep_503(name: str, expected: str) -> None:
    assert names.normalize(name) == expected


@PROPERTY
@given(st.text(st.characters() | st.sampled_from("-_.")))
def test_normalize_of_any_text_is_pep_503_s_expression(name: str) -> None:
    assert names.normalize(name) == re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(
    ("filename", "safe"),
    [
        ("demo-1.0.tar.gz", True),
        ("demo-1.0-py3-none-any.whl", True),
        ("", False),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("a\\b", False),
        ("a\x00b", False),
    ],
)
def test_is_safe_filename(filename: str, safe: bool) -> None:
    assert names.is_safe_filename(filename) is safe


@pytest.mark.parametrize(
    ("filename", "project", "version"),
    [
        ("demo-1.0-py3-none-any.whl", "demo", "1.0"),
        ("my_pkg-2.0b1-1-cp311-cp311-linux_x86_64.whl", "my-pkg", "2.0b1"),
        ("my-pkg-1.0.tar.gz", "my-pkg", "1.0"),
        ("My.Pkg-1.0.zip", "my-pkg", "1.0"),
        # Formats and versions packaging's parsers refuse: old releases still have them.
        ("demo-1.0.tar.bz2", "demo", "1.0"),
        ("demo-2004d.tar.gz", "demo", "2004d"),
        ("demo-1.0-py2.7.egg", "demo", "1.0"),
        ("demo-1.0.tgz", "demo", "1.0"),
        # Not this project's, or no version to tell.
        ("other-1.0.tar.gz", "demo", None),
        ("other-1.0-py3-none-any.whl", "demo", None),
        ("demo-.tar.gz", "demo", None),
        ("demo.tar.gz", "demo", None),
        ("demo-1.0.exe", "demo", None),
    ],
)
def test_version_from_filename(filename: str, project: str, version: str | None) -> None:
    assert names.version_from_filename(filename, project) == version


@PROPERTY
@given(st.text(), st.text())
def test_version_from_any_filename_never_raises(filename: str, project: str) -> None:
    version = names.version_from_filename(filename, project)
    assert version is None or (version and version in filename)
