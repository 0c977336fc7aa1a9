"""Every option: its type, constraints, default and description, declared once.

The descriptions (msgspec `Meta`) are what `config.example.toml` (example_config.py) says
of each option and what an error message about it quotes; a section's description is its
Struct's docstring. Rules between options live in each Struct's `__post_init__`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from mypypi2.config.values import Bytes, FileHost, Seconds, WholeSeconds

_REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
MIB = 1024 * 1024

ServerName = Literal["granian", "hypercorn"]
SERVERS: tuple[ServerName, ...] = get_args(ServerName)


class RepositoryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """One cached index: served under `/{name}/simple/`, pulled from `upstream`."""

    name: Annotated[
        str,
        Meta(
            description="Required. The first part of the URL path: lowercase letters, digits, "
            "'.', '_' and '-'."
        ),
    ]
    upstream: Annotated[
        str,
        Meta(
            description="Required. The upstream's Simple API root, an http(s) URL. Credentials "
            "in it (https://user:password@host/) are sent as basic auth and never shown."
        ),
    ]
    # The public index's own CDN keeps pages for 600 seconds too.
    ttl: Annotated[
        Seconds,
        Meta(ge=0, description="How long a project page is served without asking the upstream."),
    ] = 600.0
    list_ttl: Annotated[
        Seconds,
        Meta(ge=0, description="How long the project list is served without asking the upstream."),
    ] = 600.0
    negative_ttl: Annotated[
        Seconds,
        Meta(ge=0, description="How long an upstream 404 is remembered before asking again."),
    ] = 300.0
    # RFC 5861 stale-while-revalidate.
    stale_while_revalidate: Annotated[
        Seconds,
        Meta(
            ge=0,
            description="How long past the TTL a page is answered at once from the store while "
            "one background request revalidates it.",
        ),
    ] = 60.0
    stale_if_error: Annotated[
        Annotated[Seconds, Meta(ge=0)] | Literal["forever"],
        Meta(
            description="How long past the TTL a stored page is still served (marked with "
            "X-Mypypi2-Stale) when the upstream fails (timeout, connection error, 5xx, bad "
            'page); "forever" for no limit.'
        ),
    ] = 86400.0
    gone_after_404s: Annotated[
        int,
        Meta(
            ge=1,
            description="Consecutive upstream 404s before a stored project is treated as gone "
            "(one flaky answer never deletes a page).",
        ),
    ] = 3
    no_cache_revalidate_after: Annotated[
        Seconds,
        Meta(
            ge=-1,
            description="A client's Cache-Control no-cache / max-age=0 (older pips send it on "
            "every page, uv with --refresh) revalidates the page with the upstream when it was "
            "confirmed longer ago than this; 0: every time; -1: never (the TTL alone decides).",
        ),
    ] = 5.0
    client_max_age: Annotated[
        Annotated[WholeSeconds, Meta(ge=0)] | None,
        Meta(
            description="Cache-Control max-age sent to clients with pages; unset: the TTL.",
            examples=[600],
        ),
    ] = None
    connect_timeout: Annotated[
        Seconds, Meta(gt=0, description="How long to wait for a connection to the upstream.")
    ] = 10.0
    read_timeout: Annotated[
        Seconds, Meta(gt=0, description="Longest silence while reading an upstream response.")
    ] = 30.0
    total_timeout: Annotated[
        Seconds,
        Meta(
            gt=0,
            description="How long a whole upstream page fetch (or .metadata file) may take, "
            "redirects included.",
        ),
    ] = 120.0
    download_timeout: Annotated[
        Seconds,
        Meta(
            gt=0,
            description="How long one distribution file may take to download in all, redirects "
            "included (read-timeout still bounds each silence).",
        ),
    ] = 3600.0
    max_page_bytes: Annotated[
        Bytes, Meta(gt=0, description="Largest project page accepted from the upstream.")
    ] = 32 * MIB
    max_list_bytes: Annotated[
        Bytes, Meta(gt=0, description="Largest project list accepted from the upstream.")
    ] = 512 * MIB
    username: Annotated[
        str | None,
        Meta(
            description="HTTP basic auth user for a private upstream. Default: none.",
            examples=["reader"],
        ),
    ] = None
    password: Annotated[
        str | None,
        Meta(
            description="Its password (needs username). Default: none. Better kept out of "
            "files: MYPYPI2_REPOSITORIES__<NAME>__PASSWORD.",
            examples=["change-me"],
        ),
    ] = None
    headers: Annotated[
        dict[str, str],
        Meta(
            description="Extra HTTP headers sent with every upstream request (to the upstream's "
            "own origin only, never along a redirect or to a file host). Default: none.",
            examples=[{"X-Token": "change-me"}],
        ),
    ] = {}
    file_hosts: Annotated[
        list[str],
        Meta(
            description="Hosts besides the upstream's own that file URLs, .metadata URLs and "
            'redirects may lead to: "files.example", "*.cdn.example" (its subdomains) or "*" '
            "(any); a listed host is trusted at any address. Empty: any host, but only at "
            "public addresses or at addresses of the kind the upstream itself has, so a public "
            "upstream never sends the cache to loopback, private or link-local addresses "
            "(169.254.169.254)."
        ),
    ] = []
    max_bytes: Annotated[
        Annotated[Bytes, Meta(gt=0)] | None,
        Meta(
            description="A cap on this repository's stored files, applied like storage.max-bytes "
            "(which counts them too). Default: none.",
            examples=["50GB"],
        ),
    ] = None
    evict_unused_after: Annotated[
        Annotated[Seconds, Meta(gt=0)] | None,
        Meta(
            description="This repository's own storage.evict-unused-after. Default: the store's.",
            examples=["7d"],
        ),
    ] = None

    def __post_init__(self) -> None:
        if not _REPOSITORY_NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters, digits, '.', '_', '-'")
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream {self.upstream!r} is not an http(s) URL")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if "@" in parts.netloc and self.username is not None:
            raise ValueError("credentials are both in the upstream URL and in username: use one")
        for entry in self.file_hosts:
            FileHost.parse(entry)


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """The HTTP server started by `mypypi2 serve` (its options override these)."""

    host: Annotated[str, Meta(description="Address to listen on.")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535, description="TCP port to listen on.")] = 8000
    workers: Annotated[
        int, Meta(ge=0, description="Worker processes; 0 starts one per CPU core.")
    ] = 0
    server: Annotated[
        ServerName, Meta(description='The ASGI server: "granian" or "hypercorn".')
    ] = "granian"
    base_url: Annotated[
        str,
        Meta(
            description="Where clients reach the cache when it sits behind a reverse proxy: a "
            'path prefix ("/mirror") or a full URL ("https://cache.example/mirror"). Empty: the '
            "URLs in pages are root-relative."
        ),
    ] = ""
    cache_entries: Annotated[
        int, Meta(ge=1, description="Rendered pages each worker keeps in memory (a count).")
    ] = 4096
    page_memory: Annotated[
        Bytes,
        Meta(
            gt=0,
            description="Memory each worker gives to the renderings of the pages it keeps "
            "(bodies and their compressed forms); the least recently used go first. Pages "
            "rendered in the store (store-pages-above) do not count: they are not held.",
            examples=["256MB"],
        ),
    ] = 64 * MIB
    store_pages_above: Annotated[
        Bytes,
        Meta(
            gt=0,
            description="Pages whose rendering would be larger than this (the project list of "
            "a large index, pages of thousands of files) are rendered and compressed once per "
            "revision for the whole deployment, kept in the store (under .pages/) and streamed "
            "from there; no worker holds them.",
            examples=["1MB"],
        ),
    ] = 4 * MIB
    header_timeout: Annotated[
        Seconds,
        Meta(
            gt=0,
            description="How long a connection may take to send a complete request head, "
            "counted from when it opened or from its last response: connections that never "
            "finish their headers (slowloris) and idle keep-alive ones are closed after that.",
        ),
    ] = 10.0
    worker_connections: Annotated[
        int,
        Meta(
            ge=1,
            description="Connections each worker holds open at once, idle and half-sent ones "
            "included (about 20 KB of memory each); more wait in the backlog. granian only "
            "(hypercorn has no cap). At most half the open-file limit, which serve raises to "
            "its hard maximum.",
        ),
    ] = 4096
    backlog: Annotated[
        int,
        Meta(
            ge=1,
            description="Connections the kernel queues until a worker accepts them (the kernel "
            "caps it at net.core.somaxconn).",
        ),
    ] = 4096
    drain_time: Annotated[
        Seconds,
        Meta(
            ge=0,
            description="On SIGTERM, how long every worker goes on serving while /-/ready "
            "answers 503, before the server stops taking connections: the time load balancers "
            "get to notice and send clients elsewhere. SIGINT (Ctrl-C) skips it.",
        ),
    ] = 5.0
    stop_timeout: Annotated[
        Seconds,
        Meta(
            gt=0,
            description="Once the server stops taking connections, how long requests and "
            "downloads in flight get to finish before the workers are killed. drain-time "
            "plus this should fit the orchestrator's grace period (Kubernetes: 30 s).",
        ),
    ] = 20.0

    def __post_init__(self) -> None:
        if self.base_url:
            parts = urlsplit(self.base_url)
            if parts.query or parts.fragment or (parts.scheme and not parts.netloc):
                raise ValueError(f"base-url {self.base_url!r} must be a path or http(s) URL")
            if not parts.scheme and not self.base_url.startswith("/"):
                raise ValueError(f"base-url {self.base_url!r} must start with '/' or a scheme")


class DatabaseConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """PostgreSQL, shared by every worker and replica."""

    url: Annotated[
        str,
        Meta(
            description="A postgresql:// DSN. Empty: start the embedded PostgreSQL in "
            "<data-dir>/postgres."
        ),
    ] = ""
    pool_min_size: Annotated[int, Meta(ge=0, description="Connections each worker keeps open.")] = 1
    pool_max_size: Annotated[int, Meta(ge=1, description="Most connections each worker opens.")] = (
        10
    )
    pool_acquire_timeout: Annotated[
        Seconds,
        Meta(
            gt=0,
            description="How long a request waits for a free connection of its worker's pool; "
            "then it is answered 503 (a full pool never hangs a request).",
        ),
    ] = 3.0
    statement_timeout: Annotated[
        Seconds,
        Meta(
            ge=0,
            description="How long any one statement may run, lock waits included; 0: no limit.",
        ),
    ] = 15.0

    def __post_init__(self) -> None:
        if self.url and urlsplit(self.url).scheme not in ("postgresql", "postgres"):
            raise ValueError("url must be a postgresql:// DSN")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool-min-size must be <= pool-max-size")


class StorageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Where verified distribution files are kept: a local directory or an S3-compatible
    bucket."""

    backend: Annotated[
        Literal["disk", "s3"],
        Meta(description='"disk" (a local directory) or "s3" (an S3-compatible bucket).'),
    ] = "disk"
    path: Annotated[
        str, Meta(description="disk: the directory. Empty: files/ inside data-dir.")
    ] = ""
    bucket: Annotated[str, Meta(description='s3: the bucket; required with backend = "s3".')] = ""
    prefix: Annotated[str, Meta(description="s3: a key prefix inside the bucket.")] = ""
    endpoint_url: Annotated[
        str,
        Meta(
            description="s3: the service's http(s) URL (MinIO, Ceph, R2, ...). Empty: the AWS "
            "endpoint of region."
        ),
    ] = ""
    region: Annotated[
        str, Meta(description="s3: the region. Empty: the one the AWS configuration names.")
    ] = ""
    access_key_id: Annotated[
        str | None,
        Meta(
            description="s3: the access key, set together with secret-access-key. Default: "
            "none, the usual AWS credential chain (environment, profile, instance role).",
            examples=["change-me"],
        ),
    ] = None
    secret_access_key: Annotated[
        str | None,
        Meta(
            description="s3: its secret. Default: none. Better kept out of files: "
            "MYPYPI2_STORAGE__SECRET_ACCESS_KEY.",
            examples=["change-me"],
        ),
    ] = None
    addressing_style: Annotated[
        Literal["auto", "path", "virtual"],
        Meta(
            description='s3: "auto", "path" (endpoint/bucket/key) or "virtual" '
            "(bucket.endpoint/key)."
        ),
    ] = "auto"
    redirect: Annotated[
        bool,
        Meta(
            description="s3: answer a stored file with a redirect to the object (a presigned "
            "URL, or public-url + key); false: stream it through the cache."
        ),
    ] = True
    redirect_status: Annotated[
        Literal[301, 302, 303, 307, 308],
        Meta(description="s3: the status of that redirect: 301, 302, 303, 307 or 308."),
    ] = 308
    public_url: Annotated[
        str,
        Meta(
            description="s3: base URL of a public bucket or of a CDN in front of it; redirects "
            "then go there instead of to a presigned URL. Empty: presign."
        ),
    ] = ""
    presign_seconds: Annotated[
        WholeSeconds, Meta(gt=0, description="s3: how long a presigned URL stays valid.")
    ] = 3600
    part_size: Annotated[
        Bytes,
        Meta(
            ge=5 * MIB,
            description="s3: multipart upload part size, at least 5 MiB (the S3 minimum); each "
            "upload holds one part in memory.",
        ),
    ] = 16 * MIB
    max_bytes: Annotated[
        Annotated[Bytes, Meta(gt=0)] | None,
        Meta(
            description="A cap on the bytes of stored files (pages and .metadata live in "
            "PostgreSQL and do not count). Over it, the least recently used files are evicted "
            "until usage is under 90% of the cap (the low-water mark); an evicted file is "
            "fetched again when next asked for. Default: no cap.",
            examples=["200GB"],
        ),
    ] = None
    evict_unused_after: Annotated[
        Annotated[Seconds, Meta(gt=0)] | None,
        Meta(
            description="Evict stored files not used for this long. Default: never.",
            examples=["30d"],
        ),
    ] = None

    def __post_init__(self) -> None:
        if self.backend == "s3" and not self.bucket:
            raise ValueError("bucket is required with backend = s3")
        if self.endpoint_url and urlsplit(self.endpoint_url).scheme not in ("http", "https"):
            raise ValueError(f"endpoint-url {self.endpoint_url!r} is not an http(s) URL")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access-key-id and secret-access-key, or neither")


class ClusterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Replicas on several hosts: a file still downloading on one replica streams to the
    clients of the others over an internal, authenticated relay (GET /-/relay/...)."""

    secret: Annotated[
        str | None,
        Meta(
            description="A shared secret, the same on every replica, that authenticates relay "
            "requests between them. Default: none, and then no replica relays: a client of "
            "another host waits, receiving nothing, until the file is stored. Better kept out "
            "of files: MYPYPI2_CLUSTER__SECRET. At least 16 characters.",
            examples=["change-me-to-32-random-characters"],
        ),
    ] = None
    advertise_url: Annotated[
        str,
        Meta(
            description="Where the other replicas reach this one's serving port, as "
            '"http://address:port" (a pod IP, a host name). Empty: http://<server host>:<port> '
            "when the host is one address rather than a loopback or wildcard one; else this "
            "replica relays to nobody (it still streams from others).",
            examples=["http://10.0.3.7:8000"],
        ),
    ] = ""

    def __post_init__(self) -> None:
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("secret must have at least 16 characters")
        if self.advertise_url:
            parts = urlsplit(self.advertise_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"advertise-url {self.advertise_url!r} is not an http(s) URL")
            if parts.query or parts.fragment or parts.path.strip("/"):
                raise ValueError(
                    f"advertise-url {self.advertise_url!r} must be a scheme, host and port only"
                )


LogFormat = Literal["text", "json"]


class LoggingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """What the service logs: one access line per request (on stdout), other lines on
    stderr, both in one format."""

    format: Annotated[
        LogFormat,
        Meta(
            description='"text": an access line in the common log format followed by '
            'key=value fields, other lines as "LEVEL logger: message"; "json": one JSON '
            "object per line, for both."
        ),
    ] = "text"
    access_log: Annotated[
        bool,
        Meta(
            description="Write one access line per request (with its request id, repository, "
            "outcome, bytes and duration)."
        ),
    ] = True


def _section(struct: type[msgspec.Struct]) -> Meta:
    return Meta(description=" ".join((struct.__doc__ or "").split()))


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    data_dir: Annotated[
        str,
        Meta(
            description="Directory for the embedded PostgreSQL, downloads in progress and (by "
            "default) stored files, relative to the working directory."
        ),
    ] = "data"
    offline: Annotated[
        bool,
        Meta(
            description="Never contact any upstream: serve what is stored, 404 for the rest "
            "(also `mypypi2 serve --offline`)."
        ),
    ] = False
    # A section's description is its Struct's docstring.
    server: Annotated[ServerConfig, _section(ServerConfig)] = ServerConfig()
    database: Annotated[DatabaseConfig, _section(DatabaseConfig)] = DatabaseConfig()
    storage: Annotated[StorageConfig, _section(StorageConfig)] = StorageConfig()
    cluster: Annotated[ClusterConfig, _section(ClusterConfig)] = ClusterConfig()
    logging: Annotated[LoggingConfig, _section(LoggingConfig)] = LoggingConfig()
    repositories: Annotated[
        tuple[RepositoryConfig, ...],
        Meta(
            description="One [[repositories]] table per cached index, served under "
            "/<name>/simple/. With none, one repository named pypi caches the index pip itself "
            "is configured with (PIP_INDEX_URL, pip's config files, else pip's default)."
        ),
    ] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for repository in self.repositories:
            if repository.name in seen:
                raise ValueError(f"repositories: duplicate repository name {repository.name!r}")
            seen.add(repository.name)

    def repository(self, name: str) -> RepositoryConfig | None:
        return next((r for r in self.repositories if r.name == name), None)
