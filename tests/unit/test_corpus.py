"""Every page of tests/corpus/ (every source directory) parses to its expected result."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mypypi2.upstream.parse import ProjectListParser, parse_project_list, parse_project_page

CORPUS = Path(__file__).parent.parent / "corpus"
CASES = sorted(CORPUS.glob("*/*.meta.json"))
# Hosts a corpus body may name: placeholders and the loopback a peer server ran on.
_ALLOWED_HOST = re.compile(r"([a-z0-9-]+\.)*example|127\.0\.0\.1|localhost|\[::1\]")
_HOST = re.compile(rb"(?:https?:)?//([^/\"'\s<>?#:]+)")


def _case_id(meta_path: Path) -> str:
    return str(meta_path.relative_to(CORPUS)).removesuffix(".meta.json")


def _load(meta_path: Path) -> tuple[dict[str, Any], bytes]:
    meta = json.loads(meta_path.read_text())
    body = meta_path.with_name(meta_path.name.removesuffix(".meta.json") + ".body").read_bytes()
    return meta, body


def _parse(meta: dict[str, Any], body: bytes) -> Any:
    if meta["kind"] == "page":
        return parse_project_page(body, meta["content_type"], meta["url"], meta["project"])
    return parse_project_list(body, meta["content_type"])


def _builtins(model: Any) -> Any:
    return json.loads(msgspec.json.encode(model))


def test_the_corpus_is_there() -> None:
    sources = {path.parent.name for path in CASES}
    assert {"index", "handmade", "static-tree"} <= sources
    assert len(CASES) >= 20


@pytest.mark.parametrize("meta_path", CASES, ids=_case_id)
def test_case_parses_to_its_expected_result(meta_path: Path) -> None:
    meta, body = _load(meta_path)
    assert set(meta) == {"kind", "content_type", "url", "project", "expected"}
    assert meta["kind"] in ("page", "list")
    assert _builtins(_parse(meta, body)) == meta["expected"]


@pytest.mark.parametrize(
    "meta_path", [p for p in CASES if json.loads(p.read_text())["kind"] == "list"], ids=_case_id
)
def test_list_case_parses_the_same_in_small_chunks(meta_path: Path) -> None:
    meta, body = _load(meta_path)
    parser = ProjectListParser(meta["content_type"])
    for start in range(0, len(body), 7):
        parser.feed(body[start : start + 7])
    assert _builtins(parser.close()) == meta["expected"]


def _pairs() -> list[tuple[Path, Path]]:
    by_stem = {p.with_name(p.name.removesuffix(".meta.json")): p for p in CASES}
    return [
        (path, by_stem[stem.with_name(stem.name.removesuffix("-json") + "-html")])
        for stem, path in by_stem.items()
        if stem.name.endswith("-json")
        and stem.with_name(stem.name.removesuffix("-json") + "-html") in by_stem
    ]


@pytest.mark.parametrize("pair", _pairs(), ids=lambda pair: _case_id(pair[0]))
def test_json_and_html_of_one_page_list_the_same_files(pair: tuple[Path, Path]) -> None:
    # HTML cannot carry size, upload-time or the serial; real indexes also order the two
    # differently, so the files are compared as a set.
    keys = ("filename", "url", "hashes", "requires_python", "yanked", "core_metadata", "provenance")
    files = []
    for meta_path in pair:
        expected = json.loads(meta_path.read_text())["expected"]
        files.append(sorted(json.dumps({k: f[k] for k in keys}) for f in expected["files"]))
    assert files[0] == files[1]
    assert files[0]


@pytest.mark.parametrize("meta_path", CASES, ids=_case_id)
def test_no_real_host_is_named(meta_path: Path) -> None:
    meta, body = _load(meta_path)
    hosts = {h.decode().lower() for h in _HOST.findall(body + meta["url"].encode())}
    assert all(_ALLOWED_HOST.fullmatch(host) for host in hosts), hosts
