"""The request middleware's pure parts: installers from User-Agents, request ids, kinds."""

from __future__ import annotations

import pytest

from mypypi2.routes.observed import RequestIds, installer_of, sane_request_id, target_of


@pytest.mark.parametrize(
    ("user_agent", "installer"),
    [
        ('pip/24.0 {"installer":{"name":"pip","version":"24.0"},"python":"3.12.1"}', "pip"),
        ('uv/0.5.11 {"installer":{"name":"uv","version":"0.5.11"}}', "uv"),
        ("poetry/1.8.3", "poetry"),
        ("Poetry/2.0.1", "poetry"),
        ("pip", "pip"),  # no version: still its product token
        ("curl/8.5.0", "other"),
        ("Mozilla/5.0 (X11; Linux x86_64)", "other"),
        ("pipx/1.0", "other"),
        ("uvicorn-test/1", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_installer_is_the_user_agents_product_token(user_agent: str | None, installer: str) -> None:
    assert installer_of(user_agent) == installer


@pytest.mark.parametrize(
    "incoming",
    [b"abc-123", b"0f" * 64, b"trace=1;span=2", b"!~"],
)
def test_a_sane_incoming_request_id_is_kept(incoming: bytes) -> None:
    assert sane_request_id(incoming) == incoming.decode()


@pytest.mark.parametrize(
    "incoming",
    [
        None,
        b"",
        b"x" * 129,  # too long
        b"two words",  # a space would split the access line's field
        b"line\nbreak",
        b"tab\there",
        b"nul\x00",
        "caf\u00e9".encode(),  # not ASCII
        b"\x7f",
    ],
)
def test_an_insane_incoming_request_id_is_replaced(incoming: bytes | None) -> None:
    assert sane_request_id(incoming) is None


def test_generated_request_ids_differ_within_and_across_workers() -> None:
    first, second = RequestIds(), RequestIds()
    ids = [first.next() for _ in range(1000)] + [second.next() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(sane_request_id(i.encode()) == i for i in ids)


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/pypi/simple/", ("pypi", None, "list")),
        ("/pypi/simple", ("pypi", None, "list")),
        ("/pypi/simple/v1+json/", ("pypi", None, "list")),
        ("/pypi/simple/demo/", ("pypi", "demo", "page")),
        ("/pypi/simple/Demo", ("pypi", "Demo", "page")),
        ("/pypi/simple/v1+html/demo/", ("pypi", "demo", "page")),
        ("/pypi/files/demo/demo-1.0.tar.gz", ("pypi", "demo", "file")),
        ("/pypi/files/demo/demo-1.0-py3-none-any.whl.metadata", ("pypi", "demo", "metadata")),
        ("/pypi/other", ("pypi", None, "other")),
        # Only configured repositories are named: a path cannot add a label value.
        ("/elsewhere/simple/demo/", (None, None, "other")),
        ("/-/health", (None, None, "other")),
        ("/", (None, None, "other")),
    ],
)
def test_the_path_names_repository_project_and_kind(
    path: str, target: tuple[str | None, str | None, str]
) -> None:
    assert target_of(path, frozenset({"pypi"})) == target
