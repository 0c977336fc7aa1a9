"""Configuration: frozen msgspec Structs, read once at start-up and passed down.

Sources, later ones winning: defaults, one config file (`config.toml`, `config.json` or
`config.yaml` in the working directory, or the file named with `--config`), then environment
variables `MYPYPI2_<KEY>` where nested keys are joined with `__` and repositories are
addressed by name: `MYPYPI2_DATABASE__URL`, `MYPYPI2_REPOSITORIES__PRIVATE__PASSWORD`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_origin
from urllib.parse import urlsplit

import msgspec
import tomli_w
import yaml

from mypypi2.errors import ConfigError
from mypypi2.urls import REDACTED as REDACTED  # `config --show` output, tested
from mypypi2.urls import redact_url

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
SERVERS = ("granian", "hypercorn")


class RepositoryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """One cached index: served under `/{name}/simple/`, pulled from `upstream`."""

    name: str
    upstream: str
    # Seconds a project page is served without asking the upstream (the public index's
    # own CDN uses 600).
    ttl: float = 600.0
    # Seconds the project list is served without asking the upstream.
    list_ttl: float = 600.0
    # Seconds an upstream 404 is remembered before asking again.
    negative_ttl: float = 300.0
    # Seconds past the TTL during which a page is answered at once from the store while
    # one background request revalidates it (RFC 5861 stale-while-revalidate).
    stale_while_revalidate: float = 60.0
    # Seconds past the TTL during which a stored page is served, marked stale, when the
    # upstream fails (timeout, connection error, 5xx, bad page); "forever" for no limit.
    stale_if_error: float | Literal["forever"] = 86400.0
    # Consecutive upstream 404s before a project we hold is treated as gone; one flaky
    # answer never deletes a page.
    gone_after_404s: int = 3
    # Client `Cache-Control: no-cache` / `max-age=0` (older pips on every page, uv
    # --refresh) makes us revalidate with the upstream when the page was confirmed longer
    # ago than this many seconds (0: every time; -1: never, the TTL alone decides).
    no_cache_revalidate_after: float = 5.0
    # Cache-Control max-age sent to clients for pages; unset: the TTL.
    client_max_age: int | None = None
    connect_timeout: float = 10.0
    # Longest silence while reading a response.
    read_timeout: float = 30.0
    # Seconds a whole page fetch (or a .metadata file) may take, redirects included.
    total_timeout: float = 120.0
    # Seconds one distribution file may take to download in all, redirects included.
    download_timeout: float = 3600.0
    max_page_bytes: int = 32 * MIB
    max_list_bytes: int = 512 * MIB
    # Credentials for a private upstream: HTTP basic auth and/or extra request headers
    # (`https://user:password@host/` in `upstream` is basic auth too). They are sent to the
    # upstream's own origin only: never along a redirect or to a file URL elsewhere.
    username: str | None = None
    password: str | None = None
    headers: dict[str, str] = {}
    # Hosts besides the upstream's own that file and .metadata URLs (and redirects) may
    # lead to: "files.example", "*.files.example" (its subdomains) or "*" (any). A listed
    # host is trusted at any address. Empty: any host, but only at public addresses or at
    # addresses of the kind the upstream itself has, so a public upstream can never send
    # us to loopback, private or link-local addresses (such as 169.254.169.254).
    file_hosts: list[str] = []

    def __post_init__(self) -> None:
        if not _REPOSITORY_NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters, digits, '.', '_', '-'")
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream {self.upstream!r} is not an http(s) URL")
        for key in ("ttl", "list_ttl", "negative_ttl", "stale_while_revalidate"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key.replace('_', '-')} must be >= 0")
        for key in ("connect_timeout", "read_timeout", "total_timeout", "download_timeout"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key.replace('_', '-')} must be > 0")
        for key in ("max_page_bytes", "max_list_bytes"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key.replace('_', '-')} must be > 0")
        if self.stale_if_error != "forever" and self.stale_if_error < 0:
            raise ValueError('stale-if-error must be >= 0 or "forever"')
        if self.gone_after_404s < 1:
            raise ValueError("gone-after-404s must be >= 1")
        if self.no_cache_revalidate_after < -1:
            raise ValueError("no-cache-revalidate-after must be >= 0, or -1 for never")
        if self.client_max_age is not None and self.client_max_age < 0:
            raise ValueError("client-max-age must be >= 0")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if "@" in parts.netloc and self.username is not None:
            raise ValueError("credentials are both in the upstream URL and in username: use one")
        for pattern in self.file_hosts:
            host = pattern.removeprefix("*.")
            if pattern != "*" and (not host or any(c in host for c in "*/@: ")):
                raise ValueError(
                    f"file-hosts entry {pattern!r}: use a host (no port), '*.' + a domain, or '*'"
                )


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    host: str = "127.0.0.1"
    port: int = 8000
    # Worker processes; 0 means one per CPU core.
    workers: int = 0
    # The ASGI server `mypypi2 serve` runs: granian (default) or hypercorn.
    server: str = "granian"
    # Where clients reach us, when behind a reverse proxy under a path prefix
    # ("/mirror") or another host ("https://cache.example/mirror"). Empty: the URLs we emit
    # are root-relative.
    base_url: str = ""
    # Rendered pages kept in each worker's memory.
    cache_entries: int = 4096
    # Seconds a connection may take to send a complete request head, counted from when it
    # opened or its last response ended: half-sent (slowloris) and idle keep-alive
    # connections are closed after that.
    header_timeout: float = 10.0
    # Connections each worker holds open at once, idle and half-sent ones included (about
    # 20 KB each); more wait in the listen backlog. granian only: hypercorn has no cap.
    # At most half the open-file limit, which `serve` raises to its maximum.
    worker_connections: int = 4096
    # Connections the kernel queues until a worker accepts them (capped by the kernel's
    # net.core.somaxconn).
    backlog: int = 4096

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port must be between 1 and 65535")
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        if self.server not in SERVERS:
            raise ValueError(f"server must be one of {', '.join(SERVERS)}")
        if self.base_url:
            parts = urlsplit(self.base_url)
            if parts.query or parts.fragment or (parts.scheme and not parts.netloc):
                raise ValueError(f"base-url {self.base_url!r} must be a path or http(s) URL")
            if not parts.scheme and not self.base_url.startswith("/"):
                raise ValueError(f"base-url {self.base_url!r} must start with '/' or a scheme")
        if self.cache_entries < 1:
            raise ValueError("cache-entries must be >= 1")
        if self.header_timeout <= 0:
            raise ValueError("header-timeout must be > 0")
        if self.worker_connections < 1:
            raise ValueError("worker-connections must be >= 1")
        if self.backlog < 1:
            raise ValueError("backlog must be >= 1")


class DatabaseConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    # A PostgreSQL DSN. Empty: start the embedded PostgreSQL in `data-dir/postgres`.
    url: str = ""
    pool_min_size: int = 1
    pool_max_size: int = 10
    # Seconds a request waits for a free pooled connection before it is answered 503.
    pool_acquire_timeout: float = 3.0
    # Seconds any one statement may run, lock waits included (0: no limit).
    statement_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.url and urlsplit(self.url).scheme not in ("postgresql", "postgres"):
            raise ValueError("url must be a postgresql:// DSN")
        if not 0 <= self.pool_min_size <= self.pool_max_size or self.pool_max_size < 1:
            raise ValueError("need 0 <= pool-min-size <= pool-max-size and pool-max-size >= 1")
        if self.pool_acquire_timeout <= 0:
            raise ValueError("pool-acquire-timeout must be > 0")
        if self.statement_timeout < 0:
            raise ValueError("statement-timeout must be >= 0 (0: no limit)")


class StorageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """Where verified distribution files are kept."""

    # "disk" (a local directory) or "s3" (an S3-compatible bucket).
    backend: str = "disk"
    # disk: the directory. Empty: `files` inside the data directory.
    path: str = ""
    # s3: the bucket, a key prefix inside it, and how to reach it.
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""  # empty: the AWS endpoint of `region`
    region: str = ""
    access_key_id: str | None = None  # unset: the usual AWS credential chain
    secret_access_key: str | None = None
    addressing_style: str = "auto"  # auto, path or virtual
    # s3: answer stored files with a redirect to the object (a presigned URL, or
    # `public-url` + key for a public bucket or CDN); false: stream them through us.
    redirect: bool = True
    redirect_status: int = 308
    public_url: str = ""
    presign_seconds: int = 3600
    # s3: multipart part size in bytes; memory per upload stays at one part.
    part_size: int = 16 * MIB

    def __post_init__(self) -> None:
        if self.backend not in ("disk", "s3"):
            raise ValueError("backend must be disk or s3")
        if self.backend == "s3" and not self.bucket:
            raise ValueError("bucket is required with backend = s3")
        if self.endpoint_url and urlsplit(self.endpoint_url).scheme not in ("http", "https"):
            raise ValueError(f"endpoint-url {self.endpoint_url!r} is not an http(s) URL")
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ValueError("addressing-style must be auto, path or virtual")
        if self.redirect_status not in (301, 302, 303, 307, 308):
            raise ValueError("redirect-status must be one of 301, 302, 303, 307, 308")
        if self.presign_seconds <= 0:
            raise ValueError("presign-seconds must be > 0")
        if self.part_size < 5 * MIB:
            raise ValueError("part-size must be at least 5 MiB (the S3 minimum)")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access-key-id and secret-access-key, or neither")


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    # The embedded PostgreSQL, downloads in progress and (by default) stored files live here.
    data_dir: str = "data"
    # Never contact any upstream: serve what is stored, 404 for the rest.
    offline: bool = False
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    storage: StorageConfig = StorageConfig()
    # Empty: one repository "pypi" whose upstream is the index pip is configured with.
    repositories: tuple[RepositoryConfig, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for repository in self.repositories:
            if repository.name in seen:
                raise ValueError(f"repositories: duplicate repository name {repository.name!r}")
            seen.add(repository.name)

    def repository(self, name: str) -> RepositoryConfig | None:
        return next((r for r in self.repositories if r.name == name), None)


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
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
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
        if not (isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)):
            return None
        struct, index = field.type, index + 1
    return None


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
    """Tables and lists are given as JSON; scalars as plain text ("8000", "true")."""
    structured = get_origin(type_) in (dict, list, tuple) or type_ in (dict, list, tuple)
    try:
        if structured:
            return msgspec.json.decode(value, type=type_)
        return msgspec.convert(value, type_, strict=False)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
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
