"""Configuration: frozen msgspec Structs, read once at start-up and passed down.

Sources, later ones winning: defaults, one config file (`config.toml`, `config.json` or
`config.yaml` in the working directory, or the file named with `--config`), then environment
variables `MYPYPI2_<KEY>` where nested keys are joined with `__` and repositories are
addressed by name: `MYPYPI2_DATABASE__URL`, `MYPYPI2_REPOSITORIES__PRIVATE__PASSWORD`.

Every option is declared once: its type, its constraints and its description (msgspec
`Meta`), which both the error messages and `config.example.toml` (example_config.py) use.
Durations and sizes may be written with a unit; `load` turns them into numbers before the
Structs are built, so the rest of the code reads float seconds and int bytes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
import tomli_w
import yaml
from msgspec import Meta
from msgspec import inspect as types

from mypypi2.errors import ConfigError
from mypypi2.urls import REDACTED as REDACTED  # `config --show` output, tested
from mypypi2.urls import normalize_host, redact_url

log = logging.getLogger(__name__)

CONFIG_FILENAMES = ("config.toml", "config.json", "config.yaml")
ENV_PREFIX = "MYPYPI2_"
# How `serve` hands the resolved configuration to its worker processes (see asgi.py).
HANDOFF_VARIABLE = "MYPYPI2_WORKER_CONFIG"
# Variables with that prefix that are not config keys.
_ENV_NOT_CONFIG = {"MYPYPI2_TEST_DATABASE_URL", "MYPYPI2_LIVE", HANDOFF_VARIABLE}
# What Kubernetes injects into every pod for a Service named `mypypi2` (docker links did
# the same): MYPYPI2_SERVICE_HOST, MYPYPI2_SERVICE_PORT[_NAME], MYPYPI2_PORT[_8000_TCP...].
_KUBERNETES_SERVICE_VARIABLE = re.compile(
    r"^MYPYPI2_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)?)$"
)
_REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
MIB = 1024 * 1024

# --- durations and sizes -------------------------------------------------------------------

# An option of one of these types also takes a string with a unit ("15m", "512MiB").
Seconds = Annotated[float, Meta(extra={"unit": "duration"})]
WholeSeconds = Annotated[int, Meta(extra={"unit": "duration"})]
Bytes = Annotated[int, Meta(extra={"unit": "size"})]
Unit = Literal["duration", "size"]

# Unit names are matched case-insensitively; none means seconds or bytes.
_UNITS: dict[Unit, dict[str, int]] = {
    "duration": {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400},
    "size": {
        **{"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12},
        **{"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40},
    },
}
# What each accepts, for error messages and config.example.toml.
FORMS: dict[Unit, str] = {
    "duration": 'a number of seconds, or a number and s, m, h or d ("90s", "15m", "36h", "7d")',
    "size": "a number of bytes, or a number and kB, MB, GB, TB (powers of 1000) or KiB, MiB, "
    'GiB, TiB (powers of 1024), such as "512MiB" or "200GB"',
}
_QUANTITY = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "1.5m", "36h", "7d"; ValueError naming the accepted forms."""
    return float(_quantity(text, "duration"))


def parse_size(text: str) -> int:
    """Bytes in "1000", "512MiB", "200GB" (GB = 10**9, GiB = 2**30); ValueError otherwise."""
    amount = _quantity(text, "size")
    if amount.denominator != 1:
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(amount)


def _quantity(text: str, unit: Unit) -> Fraction:
    match = _QUANTITY.fullmatch(text)
    scale = _UNITS[unit].get(match[2].lower()) if match else None
    if match is None or scale is None:
        raise ValueError(f"{text!r} is not a {unit}: {FORMS[unit]}")
    return Fraction(match[1]) * scale


def format_duration(seconds: float) -> str:
    """The shortest exact spelling with a unit: 600 -> "10m", 90 -> "90s"."""
    for name, scale in sorted(_UNITS["duration"].items(), key=lambda item: -item[1]):
        if seconds and name and seconds % scale == 0:
            return f"{int(seconds // scale)}{name}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """The shortest exact binary spelling: 16777216 -> "16MiB", 1000 -> "1000B"."""
    for name in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS["size"][name.lower()]
        if size and size % scale == 0:
            return f"{size // scale}{name}"
    return f"{size}B"


# --- file-hosts entries --------------------------------------------------------------------


class FileHost(NamedTuple):
    """One `file-hosts` entry: a host, "*." + a domain (its subdomains), or "*" (any host)."""

    host: str  # normalized; empty for "*"
    subdomains: bool

    @classmethod
    def parse(cls, entry: str) -> FileHost:
        if entry == "*":
            return cls("", subdomains=True)
        host = entry.removeprefix("*.")
        if not host or any(c in host for c in "*/@: "):
            raise ValueError(
                f"file-hosts entry {entry!r}: use a host (no port), '*.' + a domain, or '*'"
            )
        return cls(normalize_host(host), subdomains=host != entry)

    def matches(self, host: str) -> bool:
        host = normalize_host(host)
        if not self.subdomains:
            return host == self.host
        return not self.host or host.endswith(f".{self.host}")


# --- the options ---------------------------------------------------------------------------

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


# --- what the options are made of ----------------------------------------------------------


class Option(NamedTuple):
    """One option of a Struct: what `config.example.toml` says of it."""

    attribute: str
    name: str  # as written in a config file
    description: str
    unit: Unit | None
    example: object  # Meta(examples=[...]): shown for an option unset by default


@functools.cache
def options(struct: type[msgspec.Struct]) -> tuple[Option, ...]:
    info = types.type_info(struct)
    assert isinstance(info, types.StructType)
    return tuple(
        Option(
            f.name,
            f.encode_name,
            _description(f.type, f"{struct.__name__}.{f.name}"),
            _unit(f.type),
            _schema(f.type).get("examples", [None])[0],
        )
        for f in info.fields
    )


def _schema(type_: types.Type) -> dict[str, Any]:
    return (type_.extra_json_schema if isinstance(type_, types.Metadata) else None) or {}


def _description(type_: types.Type, where: str) -> str:
    description = _schema(type_).get("description")
    if not description:
        raise TypeError(f"{where} has no Meta(description=...)")
    return str(description)


@functools.cache
def _config_type() -> types.StructType:
    info = types.type_info(Config)
    assert isinstance(info, types.StructType)
    return info


def _bare(type_: types.Type) -> types.Type:
    return type_.type if isinstance(type_, types.Metadata) else type_


def _members(type_: types.Type) -> tuple[types.Type, ...]:
    """The alternatives of a union (each with its own metadata), else `type_` alone."""
    bare = _bare(type_)
    return bare.types if isinstance(bare, types.UnionType) else (type_,)


def _unit(type_: types.Type) -> Unit | None:
    for member in (type_, *_members(type_)):
        if isinstance(member, types.Metadata) and member.extra and "unit" in member.extra:
            unit: Unit = member.extra["unit"]
            return unit
    return None


def _choices(type_: types.Type) -> tuple[object, ...]:
    return tuple(
        value
        for member in _members(type_)
        if isinstance(bare := _bare(member), types.LiteralType)
        for value in bare.values
    )


def _with_unit(text: str, type_: types.Type, unit: Unit) -> object:
    """The number `text` means for an option of `type_` ("forever" stays, where allowed)."""
    choices = _choices(type_)
    if text in choices:
        return text
    if unit == "size":
        return parse_size(text)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        if not choices:
            raise
        raise ValueError(f"{exc}; or {', '.join(json.dumps(c) for c in choices)}") from None
    if any(isinstance(_bare(m), types.IntType) for m in _members(type_)):
        if not seconds.is_integer():
            raise ValueError(f"{text!r} is not a whole number of seconds")
        return int(seconds)
    return seconds


def _numbers_for_units(value: Any, type_: types.Type, path: str) -> Any:
    """`value` (config data for `type_`) with durations and sizes written as strings turned
    into numbers; ValueError naming the option (`repositories[0].ttl`) for a bad one."""
    bare = _bare(type_)
    if isinstance(bare, types.StructType) and isinstance(value, dict):
        for field in bare.fields:
            if field.encode_name in value:
                where = f"{path}.{field.encode_name}" if path else field.encode_name
                value[field.encode_name] = _numbers_for_units(
                    value[field.encode_name], field.type, where
                )
    elif isinstance(bare, types.VarTupleType) and isinstance(value, list):
        return [_numbers_for_units(v, bare.item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    elif isinstance(value, str) and (unit := _unit(type_)) is not None:
        try:
            return _with_unit(value, type_, unit)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return value


def _rule(type_: types.Type) -> str:
    """What a value of `type_` must be ("between 1 and 65535"); "" when its type says it all."""
    members = _members(type_)
    if len(members) > 1:
        return " or ".join(rule for rule in map(_rule, members) if rule)
    bare = _bare(type_)
    if isinstance(bare, types.LiteralType):
        shown = ", ".join(json.dumps(v) for v in bare.values)
        return shown if len(bare.values) == 1 else f"one of {shown}"
    if not isinstance(bare, (types.IntType, types.FloatType)):
        return ""

    def show(bound: float) -> str:
        return format_size(int(bound)) if bound and _unit(type_) == "size" else str(bound)

    if bare.ge is not None and bare.le is not None:
        return f"between {show(bare.ge)} and {show(bare.le)}"
    bounds = ((">=", bare.ge), (">", bare.gt), ("<=", bare.le), ("<", bare.lt))
    return " and ".join(f"{op} {show(v)}" for op, v in bounds if v is not None)


def _field_at(path: str) -> types.Field | None:
    """The option at `path` ("repositories[0].ttl"), None for a section or list entry."""
    type_: types.Type = _config_type()
    field = None
    for part in re.findall(r"\[\d+\]|[^.\[]+", path):
        bare = _bare(type_)
        if part.startswith("[") and isinstance(bare, types.VarTupleType):
            type_, field = bare.item_type, None
        elif isinstance(bare, types.StructType):
            field = next((f for f in bare.fields if f.encode_name == part), None)
            if field is None:
                return None
            type_ = field.type
        else:
            return None
    return field


_AT = re.compile(r"(?P<reason>.*) - at `\$\.?(?P<path>[^`]*)`")


def _explained(error: msgspec.ValidationError) -> str:
    """msgspec's message with the option first ("server.port must be between 1 and 65535
    (TCP port to listen on)"): the rule and description come from the option's Meta."""
    match = _AT.fullmatch(str(error))
    if match is None:
        return str(error)
    reason, path = match["reason"], match["path"]
    field = _field_at(path)
    if field is None:
        return f"{path}: {reason}" if path else reason
    rule, unit = _rule(field.type), _unit(field.type)
    given = reason.removeprefix("Invalid enum value ")
    if rule and (given != reason or (reason.startswith("Expected `") and ", got " not in reason)):
        summary = _description(field.type, path).split(". ")[0].removesuffix(".")
        return (
            f"{path} must be {rule}"
            + (f", not {given}" if given != reason else "")
            + f" ({summary})"
        )
    if unit is not None and ", got " in reason:
        return f"{path}: expected a {unit} ({FORMS[unit]}), got {reason.split(', got ', 1)[1]}"
    return f"{path}: {reason}"


def find_config_file(directory: Path) -> Path | None:
    found = [directory / name for name in CONFIG_FILENAMES if (directory / name).is_file()]
    if len(found) > 1:
        raise ConfigError(
            f"several config files in {directory}: {', '.join(p.name for p in found)}"
        )
    return found[0] if found else None


def load(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read `path` (None: defaults only), apply env overrides, validate, fill the default repo."""
    raw = _read_file(path) if path is not None else {}
    where = str(path) if path is not None else "defaults"
    _apply_env(raw, environ)
    try:
        config = msgspec.convert(_numbers_for_units(raw, _config_type(), ""), Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration ({where}): {_explained(exc)}") from exc
    except ValueError as exc:  # a duration or size that is neither
        raise ConfigError(f"invalid configuration ({where}): {exc}") from exc
    if not config.repositories:
        default = RepositoryConfig(name="pypi", upstream=default_upstream(environ))
        config = msgspec.structs.replace(config, repositories=(default,))
    return config


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data: object = tomllib.loads(text.decode())
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: use a .toml, .json or .yaml file")
    except yaml.MarkedYAMLError as exc:
        # One line, like the TOML and JSON errors: YAML's own message spans several.
        mark = exc.problem_mark
        where = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"config file {path} is not valid yaml: {exc.problem}{where}") from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a table/object")
    return data


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for variable, value in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable in _ENV_NOT_CONFIG:
            continue
        if _KUBERNETES_SERVICE_VARIABLE.match(variable):
            continue
        keys = [part.lower().replace("_", "-") for part in variable[len(ENV_PREFIX) :].split("__")]
        field_type = _field_type(keys)
        if field_type is None:
            # Not ours to refuse: a typo, or another tool's variable that shares the prefix.
            log.warning("ignoring %s: it names no configuration key", variable)
            continue
        _set_override(raw, keys, _convert_env_value(value, field_type, variable), variable)


def _field_type(keys: list[str]) -> Any:
    """The declared type of the key path `keys`, or None when it names no key."""
    struct: type[msgspec.Struct] = Config
    index = 0
    while index < len(keys):
        key = keys[index]
        field = next((f for f in msgspec.structs.fields(struct) if f.encode_name == key), None)
        if field is None:
            return None
        if key == "repositories":
            # Repositories are a list; the next part of the variable names one of them.
            if index + 2 >= len(keys):
                return None
            struct, index = RepositoryConfig, index + 2
            continue
        if index == len(keys) - 1:
            return field.type
        section = _unannotated(field.type)
        if not (isinstance(section, type) and issubclass(section, msgspec.Struct)):
            return None
        struct, index = section, index + 1
    return None


def _unannotated(type_: Any) -> Any:
    return get_args(type_)[0] if get_origin(type_) is Annotated else type_


def _set_override(raw: dict[str, Any], keys: list[str], value: Any, variable: str) -> None:
    """Set `raw[keys...] = value` for a key path `_field_type` accepted."""
    node = raw
    index = 0
    while index < len(keys) - 1:
        key = keys[index]
        if key == "repositories":
            entries = node.setdefault("repositories", [])
            if not isinstance(entries, list):
                raise ConfigError(f"{variable}: repositories must be a list")
            name = keys[index + 1]
            # Matched like the variable was spelled: MY_REPO addresses "my_repo" and "my-repo".
            entry = next(
                (
                    e
                    for e in entries
                    if isinstance(e, dict) and str(e.get("name")).lower().replace("_", "-") == name
                ),
                None,
            )
            if entry is None:
                entry = {"name": name}
                entries.append(entry)
            node, index = entry, index + 2
            continue
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{variable}: {key!r} must be a table")
        node, index = child, index + 1
    node[keys[-1]] = value


def _convert_env_value(value: str, type_: Any, variable: str) -> Any:
    """Tables and lists are given as JSON; scalars as plain text ("8000", "true", "15m")."""
    bare = _unannotated(type_)
    structured = get_origin(bare) in (dict, list, tuple) or bare in (dict, list, tuple)
    info = types.type_info(type_)
    unit = _unit(info)
    try:
        if structured:
            return msgspec.json.decode(value, type=type_)
        if unit is not None:
            return _with_unit(value, info, unit)
        # Without the option's constraints: those are checked, and explained, with the rest.
        return msgspec.convert(value, bare, strict=False)
    except (ValueError, msgspec.DecodeError) as exc:  # ValidationError is a ValueError
        raise ConfigError(f"{variable}: {exc}") from exc


def default_upstream(environ: Mapping[str, str]) -> str:
    """The index pip itself would use: PIP_INDEX_URL, pip's configuration, pip's default."""
    if environ.get("PIP_INDEX_URL"):
        return environ["PIP_INDEX_URL"].split()[0]
    configured = _pip_config_value("index-url", environ)
    if configured:
        return configured
    try:
        from pip._internal.models.index import PyPI
    except ImportError as exc:
        raise ConfigError(
            "no repository is configured and pip is not installed to name a default upstream;"
            " add a [[repositories]] entry"
        ) from exc
    return str(PyPI.simple_url)


def _pip_config_value(key: str, environ: Mapping[str, str]) -> str | None:
    """Ask pip (`pip config list`) so every place pip reads its config is honoured."""
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(environ),
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # Lines look like `global.index-url='https://...'`; later scopes override earlier ones.
    found = None
    for line in listing.splitlines():
        scope_key, _, quoted = line.partition("=")
        if scope_key.split(".", 1)[-1] == key and scope_key.split(".", 1)[0] in (
            "global",
            "install",
            ":env:",
        ):
            found = quoted.strip().strip("'\"").split()[0] if quoted.strip("'\" ") else None
    return found


def to_toml(config: Config, *, redact: bool) -> str:
    """The resolved configuration as TOML (for `mypypi2 config --show`).

    `redact` replaces passwords (also those inside the database and upstream URLs), secret
    keys and extra upstream headers (tokens, mostly)."""
    settings = msgspec.to_builtins(config)
    if redact:
        if settings["storage"].get("secret-access-key") is not None:
            settings["storage"]["secret-access-key"] = REDACTED
        settings["database"]["url"] = redact_url(settings["database"]["url"])
        for repository in settings["repositories"]:
            if repository.get("password") is not None:
                repository["password"] = REDACTED
            repository["headers"] = {name: REDACTED for name in repository.get("headers", {})}
            repository["upstream"] = redact_url(repository["upstream"])
    return tomli_w.dumps(_without_none(settings))


def _without_none(value: Any) -> Any:
    # TOML has no null: a key left unset is simply absent.
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):  # to_builtins keeps tuples (repositories)
        return [_without_none(v) for v in value]
    return value


class WorkerHandoff(msgspec.Struct, frozen=True):
    """What `serve` resolved once (config, database) for its worker processes."""

    config: Config
    dsn: str


def encode_handoff(config: Config, dsn: str) -> str:
    return msgspec.json.encode(WorkerHandoff(config, dsn)).decode()


def decode_handoff(text: str) -> WorkerHandoff:
    return msgspec.json.decode(text, type=WorkerHandoff)


def data_dir(config: Config) -> Path:
    return Path(os.path.abspath(config.data_dir))
