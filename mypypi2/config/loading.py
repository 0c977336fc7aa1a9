"""Loading: defaults, then one config file, then the environment; validated once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from mypypi2.config.convert import numbers_for_units
from mypypi2.config.environment import apply_env
from mypypi2.config.explain import explained
from mypypi2.config.options import Config, RepositoryConfig
from mypypi2.config.schema import config_type
from mypypi2.errors import ConfigError

CONFIG_FILENAMES = ("config.toml", "config.json", "config.yaml")


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
    apply_env(raw, environ)
    try:
        config = msgspec.convert(numbers_for_units(raw, config_type(), ""), Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration ({where}): {explained(exc)}") from exc
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


def data_dir(config: Config) -> Path:
    return Path(os.path.abspath(config.data_dir))
