"""Overrides from environment variables `MYPYPI2_<KEY>`: nested keys joined with `__`,
repositories addressed by name (`MYPYPI2_REPOSITORIES__PRIVATE__PASSWORD`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

import msgspec
from msgspec import inspect as types

from mypypi2.config.convert import with_unit
from mypypi2.config.handoff import HANDOFF_VARIABLE
from mypypi2.config.options import Config, RepositoryConfig
from mypypi2.config.schema import unit_of
from mypypi2.errors import ConfigError

# The package's one logger, whichever of its modules warns.
log = logging.getLogger("mypypi2.config")

ENV_PREFIX = "MYPYPI2_"
# Variables with that prefix that are not config keys.
_ENV_NOT_CONFIG = {"MYPYPI2_TEST_DATABASE_URL", "MYPYPI2_LIVE", HANDOFF_VARIABLE}
# What Kubernetes injects into every pod for a Service named `mypypi2` (docker links did
# the same): MYPYPI2_SERVICE_HOST, MYPYPI2_SERVICE_PORT[_NAME], MYPYPI2_PORT[_8000_TCP...].
_KUBERNETES_SERVICE_VARIABLE = re.compile(
    r"^MYPYPI2_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)?)$"
)


def apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
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
    unit = unit_of(info)
    try:
        if structured:
            return msgspec.json.decode(value, type=type_)
        if unit is not None:
            return with_unit(value, info, unit)
        # Without the option's constraints: those are checked, and explained, with the rest.
        return msgspec.convert(value, bare, strict=False)
    except (ValueError, msgspec.DecodeError) as exc:  # ValidationError is a ValueError
        raise ConfigError(f"{variable}: {exc}") from exc
