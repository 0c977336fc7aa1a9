"""The local upstream index: a static PEP 503 / PEP 691 tree served by nginx.

    simple/index.html, index.json                 the project list
    simple/<project>/index.html, index.json       project pages (sha256, size, core-metadata)
    files/<project>/<filename>[.metadata]         the files and their PEP 658 metadata

One nginx serves the tree on two loopback ports: the *upstream* port, which the caches
pull from and whose access log we parse to count upstream requests, and the *direct* port,
the physical reference (no cache in between, no access log).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bench.corpus import Corpus
from bench.dists import Dist
from bench.proc import Service, Services, free_port, wait_http

JSON_V1 = "application/vnd.pypi.simple.v1+json"
_UPLOADED = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def write_tree(corpus: Corpus, root: Path) -> None:
    """Write the whole index under `root` (replacing what was there)."""
    if root.exists():
        shutil.rmtree(root)
    (root / "simple").mkdir(parents=True)
    names = sorted(corpus.projects)
    _write(root / "simple", _list_html(names), _list_json(names))
    for name, dists in corpus.projects.items():
        folder = root / "files" / name
        folder.mkdir(parents=True)
        for dist in dists:
            (folder / dist.filename).write_bytes(dist.content)
            (folder / f"{dist.filename}.metadata").write_bytes(dist.metadata)
        page = root / "simple" / name
        page.mkdir()
        _write(page, _page_html(name, dists), _page_json(name, dists))


def _write(folder: Path, html_text: str, json_text: str) -> None:
    (folder / "index.html").write_text(html_text)
    (folder / "index.json").write_text(json_text)


def _list_html(names: list[str]) -> str:
    links = "".join(f'    <a href="/simple/{n}/">{n}</a><br />\n' for n in names)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{links}  </body>\n</html>\n"
    )


def _list_json(names: list[str]) -> str:
    return json.dumps(
        {
            "meta": {"api-version": "1.1", "_last-serial": 1},
            "projects": [{"name": n} for n in names],
        }
    )


def _url(name: str, dist: Dist) -> str:
    # Root-relative, like a CDN path: valid on both ports and resolvable from any page URL.
    return f"/files/{name}/{dist.filename}"


def _uploaded(index: int) -> str:
    return (_UPLOADED + dt.timedelta(hours=index)).isoformat().replace("+00:00", "Z")


def _page_html(name: str, dists: list[Dist]) -> str:
    rows = []
    for dist in dists:
        attributes = [f'href="{_url(name, dist)}#sha256={dist.sha256}"']
        if dist.requires_python:
            attributes.append(f'data-requires-python="{html.escape(dist.requires_python)}"')
        attributes.append(f'data-dist-info-metadata="sha256={dist.metadata_sha256}"')
        attributes.append(f'data-core-metadata="sha256={dist.metadata_sha256}"')
        rows.append(f"    <a {' '.join(attributes)}>{dist.filename}</a><br />\n")
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>Links for {name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {name}</h1>\n{''.join(rows)}  </body>\n</html>\n"
    )


def _page_json(name: str, dists: list[Dist]) -> str:
    files = []
    for index, dist in enumerate(dists):
        entry: dict[str, object] = {
            "filename": dist.filename,
            "url": _url(name, dist),
            "hashes": {"sha256": dist.sha256},
        }
        if dist.requires_python:
            entry["requires-python"] = dist.requires_python
        entry["core-metadata"] = {"sha256": dist.metadata_sha256}
        entry["data-dist-info-metadata"] = {"sha256": dist.metadata_sha256}
        entry["size"] = len(dist.content)
        entry["upload-time"] = _uploaded(index)
        entry["yanked"] = False
        files.append(entry)
    versions = list(dict.fromkeys(d.version for d in dists))
    return json.dumps(
        {
            "meta": {"api-version": "1.1", "_last-serial": 1},
            "name": name,
            "versions": versions,
            "files": files,
        }
    )


_NGINX_CONF = """\
{user}worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
daemon off;

events {{
    worker_connections 4096;
}}

http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {work}/tmp/client;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;

    # PEP 691 content negotiation: JSON when the client accepts it (q > 0), else HTML.
    map $http_accept $simple_index {{
        default index.html;
        "~*application/vnd\\.pypi\\.simple\\.v1\\+json\\s*;\\s*q=0(\\.0*)?\\s*(,|$)" index.html;
        "~*application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }}

    log_format bench '$msec\\t$request_method\\t$request_uri\\t$status\\t$body_bytes_sent'
                     '\\t$http_user_agent';

    server {{
        listen 127.0.0.1:{upstream_port};
        root {tree};
        access_log {work}/upstream.log bench;
        include {work}/locations.conf;
    }}

    server {{
        listen 127.0.0.1:{direct_port} reuseport;
        root {tree};
        access_log off;
        include {work}/locations.conf;
    }}
}}
"""

_LOCATIONS = """\
location /simple/ {
    types {
        text/html html;
        application/vnd.pypi.simple.v1+json json;
    }
    charset utf-8;
    add_header Vary Accept;
    try_files $uri$simple_index $uri/$simple_index =404;
}

location /files/ {
    types { }
    default_type application/octet-stream;
}
"""


@dataclass
class Request:
    at: float
    method: str
    path: str
    status: int
    bytes: int
    user_agent: str


class AccessLog:
    """The upstream port's access log, read incrementally (offsets are marks)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, mark: int, *, settle: float = 0.3) -> list[Request]:
        time.sleep(settle)  # nginx writes the line once the response is done
        try:
            with open(self.path, "rb") as log:
                log.seek(mark)
                data = log.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        requests = []
        for line in data.splitlines():
            parts = line.split("\t")
            if len(parts) < 6:
                continue
            at, method, uri, status, size, agent = parts[:6]
            path = unquote(urlsplit(uri).path)
            requests.append(Request(float(at), method, path, int(status), int(size), agent))
        return requests

    def gets(self, mark: int) -> Counter[str]:
        """GETs per path since `mark`."""
        return Counter(r.path for r in self.since(mark) if r.method == "GET")


class Upstream:
    """nginx over the tree; `url` is what the caches pull from, `direct_url` the reference."""

    def __init__(self, nginx: str, work: Path, tree: Path, workers: int) -> None:
        self.nginx = nginx
        self.work = work.resolve()
        self.tree = tree.resolve()
        self.workers = workers
        self.port = free_port()
        self.direct_port = free_port()
        self.log = AccessLog(work / "upstream.log")
        self.service: Service | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.direct_port}/simple/"

    def start(self, services: Services) -> Service:
        for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.work / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        (self.work / "locations.conf").write_text(_LOCATIONS)
        conf = self.work / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(
                # As root, workers would drop to "nobody"; keep them able to read the tree.
                user="user root;\n" if os.geteuid() == 0 else "",
                workers=self.workers,
                work=self.work,
                tree=self.tree,
                upstream_port=self.port,
                direct_port=self.direct_port,
            )
        )
        self.service = services.start(
            "nginx",
            [self.nginx, "-p", str(self.work), "-e", str(self.work / "error.log"), "-c", str(conf)],
            log=self.work / "nginx.out",
            stop_signal=15,
        )
        wait_http(self.url, self.service, timeout=30)
        wait_http(self.direct_url, self.service, timeout=30)
        return self.service
