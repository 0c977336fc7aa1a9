"""Configuration: frozen msgspec Structs, read once at start-up and passed down.

Sources, later ones winning: defaults, one config file (`config.toml`, `config.json` or
`config.yaml` in the working directory, or the file named with `--config`), then environment
variables `MYPYPI2_<KEY>` where nested keys are joined with `__` and repositories are
addressed by name: `MYPYPI2_DATABASE__URL`, `MYPYPI2_REPOSITORIES__PRIVATE__PASSWORD`.

Every option is declared once, in options.py: its type, its constraints and its description
(msgspec `Meta`), which both the error messages (explain.py) and `config.example.toml`
(example_config.py, through schema.py) use. Durations and sizes may be written with a unit
(values.py); `load` (loading.py) turns them into numbers before the Structs are built
(convert.py), so the rest of the code reads float seconds and int bytes. Environment
overrides: environment.py; `config --show`: show.py; the hand-off to workers: handoff.py.

This module only names what the rest of mypypi2 imports; the modules above import each
other directly, never this one.
"""

from mypypi2.config.handoff import (
    HANDOFF_VARIABLE,
    METRICS_DIR_VARIABLE,
    decode_handoff,
    encode_handoff,
)
from mypypi2.config.loading import data_dir, default_upstream, find_config_file, load
from mypypi2.config.options import (
    SERVERS,
    ClusterConfig,
    Config,
    DatabaseConfig,
    LogFormat,
    LoggingConfig,
    RepositoryConfig,
    ServerConfig,
    StorageConfig,
)
from mypypi2.config.schema import options
from mypypi2.config.show import to_toml
from mypypi2.config.values import (
    FORMS,
    FileHost,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from mypypi2.urls import REDACTED  # what `config --show` prints for a secret

__all__ = [
    "FORMS",
    "HANDOFF_VARIABLE",
    "METRICS_DIR_VARIABLE",
    "REDACTED",
    "SERVERS",
    "ClusterConfig",
    "Config",
    "DatabaseConfig",
    "FileHost",
    "LogFormat",
    "LoggingConfig",
    "RepositoryConfig",
    "ServerConfig",
    "StorageConfig",
    "data_dir",
    "decode_handoff",
    "default_upstream",
    "encode_handoff",
    "find_config_file",
    "format_duration",
    "format_size",
    "load",
    "options",
    "parse_duration",
    "parse_size",
    "to_toml",
]
