"""The resolved configuration as TOML, secrets redacted (`mypypi2 config --show`)."""

from __future__ import annotations

from typing import Any

import msgspec
import tomli_w

from mypypi2.config.options import Config
from mypypi2.urls import REDACTED, redact_url


def to_toml(config: Config, *, redact: bool) -> str:
    """The resolved configuration as TOML (for `mypypi2 config --show`).

    `redact` replaces passwords (also those inside the database and upstream URLs), secret
    keys, the cluster secret and extra upstream headers (tokens, mostly)."""
    settings = msgspec.to_builtins(config)
    if redact:
        if settings["storage"].get("secret-access-key") is not None:
            settings["storage"]["secret-access-key"] = REDACTED
        if settings["cluster"].get("secret") is not None:
            settings["cluster"]["secret"] = REDACTED
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
