"""Capture real upstream pages into the parser corpus (run by hand; needs the network).

    python -m tests.corpus.capture index six idna requests packaging django
    python -m tests.corpus.capture static-tree numpy importlib-metadata
    python -m tests.corpus.capture --expected handmade      # recompute, then review the diff

`index` is the index pip is configured with here (PIP_INDEX_URL, pip's configuration, else
pip's default), fetched as JSON and as HTML; `static-tree` is the first `file://` extra index
in pip's configuration. Long file lists are trimmed to about 20 entries (the yanked ones and
the newest, in their order) by cutting whole entries out of the bytes. Every host is
rewritten to upstream.example (the index) or files.example (file hosts) BEFORE anything is
written, and the capture stops if an original host name survives anywhere in the bytes.

Each case is `<source>/<case>.body` plus `<case>.meta.json` (see README.md); `expected` is
what the parser returns today: review it before committing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from mypypi2 import names
from mypypi2.config import default_upstream
from mypypi2.upstream.parse import parse_project_list, parse_project_page

CORPUS = Path(__file__).parent
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
HTML_ACCEPT = "text/html"
UPSTREAM = "upstream.example"
KEEP_FILES = 20
LIST_HEAD_BYTES = 4096
_URL_HOST = re.compile(rb"(?:https?:)?//([A-Za-z0-9.-]+(?::[0-9]+)?)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="index | static-tree | a corpus directory (--expected)")
    parser.add_argument("projects", nargs="*")
    parser.add_argument("--expected", action="store_true", help="recompute expected results")
    parser.add_argument("--list", action="store_true", help="also capture the project list")
    args = parser.parse_args()
    if args.expected:
        for meta_path in sorted((CORPUS / args.source).glob("*.meta.json")):
            write_expected(meta_path)
        return 0
    if args.source == "index":
        capture_index(args.projects, with_list=args.list)
    elif args.source == "static-tree":
        capture_static_tree(args.projects)
    else:
        parser.error(f"unknown source {args.source!r}")
    return 0


def capture_index(projects: list[str], *, with_list: bool) -> None:
    base = default_upstream(dict(os.environ)).rstrip("/") + "/"
    index_host = urlsplit(base).netloc
    out = CORPUS / "index"
    out.mkdir(exist_ok=True)
    for project in projects:
        name = names.normalize(project)
        url = f"{base}{name}/"
        json_body, json_type = _get(url, JSON_ACCEPT)
        html_body, html_type = _get(url, HTML_ACCEPT)
        kept = _keep(json_body) if json_type.startswith(JSON_ACCEPT) else None
        hosts = _host_map(index_host, json_body + html_body)
        page_url = _rewrite(url.encode(), hosts).decode()
        if kept is not None:
            _write(
                out, f"{name}-json", _trim_json(json_body, kept), json_type, page_url, name, hosts
            )
        _write(out, f"{name}-html", _trim_html(html_body, kept), html_type, page_url, name, hosts)
    if with_list:
        for accept, case in ((JSON_ACCEPT, "list-json"), (HTML_ACCEPT, "list-html")):
            head, content_type = _get(base, accept, limit=LIST_HEAD_BYTES)
            hosts = _host_map(index_host, head)
            body = _list_head(head, content_type)
            _write(
                out, case, body, content_type, _rewrite(base.encode(), hosts).decode(), None, hosts
            )


def capture_static_tree(projects: list[str]) -> None:
    root = _static_tree_root()
    out = CORPUS / "static-tree"
    out.mkdir(exist_ok=True)
    # Served as a web server would serve the tree (file:// links are never HTTP URLs).
    base = f"https://{UPSTREAM}/static/simple/"
    for project in projects:
        name = names.normalize(project)
        body = (root / name / "index.html").read_bytes()
        _write(out, name, body, "text/html", f"{base}{name}/", name, {})
    listing = (root / "index.html").read_bytes()
    _write(
        out, "list", _list_head(listing[:LIST_HEAD_BYTES], "text/html"), "text/html", base, None, {}
    )


def _static_tree_root() -> Path:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("extra-index-url"):
            for url in value.strip("'\"").split():
                if url.startswith("file://"):
                    return Path(urlsplit(url).path)
    raise SystemExit("pip's configuration names no file:// extra index")


def _get(url: str, accept: str, limit: int | None = None) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read(limit) if limit else response.read()
        return body, response.headers.get("Content-Type", "")


def _keep(json_body: bytes) -> list[str]:
    """The filenames kept: all yanked ones (a few), then the newest, in page order."""
    files = json.loads(json_body)["files"]
    if len(files) <= KEEP_FILES:
        return [f["filename"] for f in files]
    yanked = [f["filename"] for f in files if f.get("yanked")][:6]
    newest = [f["filename"] for f in files if f["filename"] not in yanked]
    chosen = set(yanked + newest[-(KEEP_FILES - len(yanked)) :])
    return [f["filename"] for f in files if f["filename"] in chosen]


def _trim_json(body: bytes, kept: list[str]) -> bytes:
    doc = json.loads(body)
    # Re-encoding keeps the bytes only if the server writes what json.dumps writes.
    if json.dumps(doc).encode() != body:
        raise SystemExit("the JSON page is not re-encodable byte for byte; trim it by hand")
    doc["files"] = [f for f in doc["files"] if f["filename"] in kept]
    return json.dumps(doc).encode()


def _trim_html(body: bytes, kept: list[str] | None) -> bytes:
    if kept is None:
        return body
    wanted = {name.encode() for name in kept}
    lines = body.split(b"\n")
    anchor_text = re.compile(rb"<a [^>]*>([^<]*)</a>")
    kept_lines = [
        line for line in lines if (match := anchor_text.search(line)) is None or match[1] in wanted
    ]
    return b"\n".join(kept_lines)


def _list_head(head: bytes, content_type: str) -> bytes:
    """The first KBs of a project list, cut after its last whole entry and closed again."""
    if "json" in content_type:
        cut = head.rfind(b"}, ")
        return head[: cut + 1] + b"]}" if cut > 0 else head
    cut = head.rfind(b"</a>")
    return head[: cut + 4] + b"\n</body></html>\n"


def _host_map(index_host: str, body: bytes) -> dict[bytes, bytes]:
    hosts = {index_host.encode(): UPSTREAM.encode()}
    for found in dict.fromkeys(_URL_HOST.findall(body)):
        if found not in hosts:
            number = sum(1 for v in hosts.values() if v.startswith(b"files"))
            hosts[found] = f"files{number + 1 if number else ''}.example".encode()
    return hosts


def _rewrite(body: bytes, hosts: dict[bytes, bytes]) -> bytes:
    for original, placeholder in hosts.items():
        body = body.replace(b"//" + original, b"//" + placeholder)
    for original in hosts:
        bare = original.split(b":")[0]
        if bare not in (UPSTREAM.encode(), b"files.example") and bare in body:
            raise SystemExit(f"a host name survived the rewrite in a {len(body)}-byte body")
    return body


def _write(
    out: Path,
    case: str,
    body: bytes,
    content_type: str,
    url: str,
    project: str | None,
    hosts: dict[bytes, bytes],
) -> None:
    body = _rewrite(body, hosts)
    (out / f"{case}.body").write_bytes(body)
    meta: dict[str, Any] = {
        "kind": "list" if project is None else "page",
        "content_type": content_type,
        "url": url,
        "project": project,
        "expected": None,
    }
    meta_path = out / f"{case}.meta.json"
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    write_expected(meta_path)
    print(f"{meta_path.relative_to(CORPUS)}: {len(body)} bytes")


def write_expected(meta_path: Path) -> None:
    meta = json.loads(meta_path.read_text())
    body = meta_path.with_name(meta_path.name.removesuffix(".meta.json") + ".body").read_bytes()
    if meta["kind"] == "page":
        model: Any = parse_project_page(body, meta["content_type"], meta["url"], meta["project"])
    else:
        model = parse_project_list(body, meta["content_type"])
    meta["expected"] = msgspec.to_builtins(model)
    meta_path.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
