from __future__ import annotations

import json
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tomli_w
import yaml
from pip._internal.models.index import PyPI

from mypypi2 import config, example_config
from mypypi2.config import (
    ClusterConfig,
    Config,
    DatabaseConfig,
    RepositoryConfig,
    ServerConfig,
    StorageConfig,
)
from mypypi2.errors import ConfigError

UPSTREAM = "https://upstream.example/simple/"
# With PIP_INDEX_URL set, load() never asks pip for the default upstream.
ENVIRON = {"PIP_INDEX_URL": "https://default.example/simple/"}
EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "config.example.toml"

FULL: dict[str, Any] = {
    "data-dir": "/srv/mypypi2",
    "server": {
        "host": "0.0.0.0",
        "port": 8080,
        "workers": 4,
        "server": "hypercorn",
        "base-url": "/mirror",
        "cache-entries": 100,
    },
    "database": {
        "url": "postgresql://cache@db.example/cache",
        "pool-min-size": 2,
        "pool-max-size": 20,
    },
    "repositories": [
        {
            "name": "pypi",
            "upstream": UPSTREAM,
            "ttl": 60.5,
            "list-ttl": 120.0,
            "negative-ttl": 30.0,
            "connect-timeout": 1.5,
            "read-timeout": 2.5,
            "total-timeout": 9.0,
            "max-page-bytes": 1000,
            "max-list-bytes": 2000,
        },
        {
            "name": "private",
            "upstream": "https://private.example/simple/",
            "username": "reader",
            "password": "from-file",
            "headers": {"X-Token": "abc"},
        },
    ],
}

FULL_CONFIG = Config(
    data_dir="/srv/mypypi2",
    server=ServerConfig(
        host="0.0.0.0",
        port=8080,
        workers=4,
        server="hypercorn",
        base_url="/mirror",
        cache_entries=100,
    ),
    database=DatabaseConfig(
        url="postgresql://cache@db.example/cache", pool_min_size=2, pool_max_size=20
    ),
    repositories=(
        RepositoryConfig(
            name="pypi",
            upstream=UPSTREAM,
            ttl=60.5,
            list_ttl=120.0,
            negative_ttl=30.0,
            connect_timeout=1.5,
            read_timeout=2.5,
            total_timeout=9.0,
            max_page_bytes=1000,
            max_list_bytes=2000,
        ),
        RepositoryConfig(
            name="private",
            upstream="https://private.example/simple/",
            username="reader",
            password="from-file",
            headers={"X-Token": "abc"},
        ),
    ),
)


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def _load_toml(tmp_path: Path, text: str, environ: dict[str, str] = ENVIRON) -> Config:
    return config.load(_write(tmp_path, "config.toml", text), environ)


def _repository_toml(**options: object) -> str:
    entry = {"name": "pypi", "upstream": UPSTREAM, **options}
    return tomli_w.dumps({"repositories": [entry]})


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dump"),
    [
        ("config.toml", tomli_w.dumps),
        ("config.json", json.dumps),
        ("config.yaml", yaml.safe_dump),
    ],
)
def test_every_format_loads_the_same_config(tmp_path: Path, name: str, dump: Any) -> None:
    path = _write(tmp_path, name, dump(FULL))

    assert config.load(path, ENVIRON) == FULL_CONFIG


def test_defaults(tmp_path: Path) -> None:
    loaded = config.load(None, ENVIRON)

    assert loaded == Config(
        repositories=(RepositoryConfig(name="pypi", upstream="https://default.example/simple/"),)
    )
    assert loaded.data_dir == "data"
    assert loaded.server == ServerConfig(
        host="127.0.0.1", port=8000, workers=0, server="granian", base_url="", cache_entries=4096
    )
    assert loaded.database == DatabaseConfig(url="", pool_min_size=1, pool_max_size=10)
    repository = loaded.repositories[0]
    assert (repository.ttl, repository.list_ttl, repository.negative_ttl) == (600, 600, 300)
    assert (repository.username, repository.password, repository.headers) == (None, None, {})


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert _load_toml(tmp_path, "") == config.load(None, ENVIRON)


def test_a_configured_repository_replaces_the_default_one(tmp_path: Path) -> None:
    loaded = _load_toml(tmp_path, _repository_toml())

    assert loaded.repositories == (RepositoryConfig(name="pypi", upstream=UPSTREAM),)
    assert loaded.repository("pypi") == loaded.repositories[0]
    assert loaded.repository("other") is None


_BAD_CONFIGS = [
    pytest.param("bogus = 1\n", "bogus", id="unknown-top-level-key"),
    pytest.param("[server]\nbogus = 1\n", "bogus", id="unknown-server-key"),
    pytest.param(_repository_toml(bogus=1), "bogus", id="unknown-repository-key"),
    pytest.param("[database]\nbogus = 1\n", "bogus", id="unknown-database-key"),
    pytest.param('[server]\nport = "eighty"\n', "server.port", id="wrong-type-port"),
    pytest.param("data-dir = 3\n", "data-dir", id="wrong-type-data-dir"),
    pytest.param(_repository_toml(ttl="long"), "ttl", id="wrong-type-ttl"),
    pytest.param(_repository_toml(headers="x"), "headers", id="wrong-type-headers"),
    pytest.param("repositories = 3\n", "repositories", id="repositories-not-a-list"),
    pytest.param(
        tomli_w.dumps(
            {"repositories": [{"name": "a", "upstream": UPSTREAM}] * 2},
        ),
        "duplicate repository name 'a'",
        id="duplicate-repository",
    ),
    pytest.param(
        tomli_w.dumps({"repositories": [{"upstream": UPSTREAM}]}), "name", id="missing-name"
    ),
    pytest.param(
        tomli_w.dumps({"repositories": [{"name": "a"}]}), "upstream", id="missing-upstream"
    ),
    pytest.param(
        _repository_toml(upstream="ftp://upstream.example/simple/"), "upstream", id="ftp-upstream"
    ),
    pytest.param(
        _repository_toml(upstream="upstream.example/simple/"), "upstream", id="no-scheme-upstream"
    ),
    pytest.param(_repository_toml(upstream="https:///simple/"), "upstream", id="no-host-upstream"),
    pytest.param(_repository_toml(name="PyPI"), "name 'PyPI'", id="uppercase-name"),
    pytest.param(_repository_toml(name="my repo"), "name 'my repo'", id="space-in-name"),
    pytest.param(_repository_toml(name="-x"), "name '-x'", id="name-starts-with-dash"),
    pytest.param(_repository_toml(ttl=-1.0), "ttl", id="negative-ttl"),
    pytest.param(_repository_toml(**{"list-ttl": -1.0}), "list-ttl", id="negative-list-ttl"),
    pytest.param(
        _repository_toml(**{"negative-ttl": -0.5}), "negative-ttl", id="negative-negative-ttl"
    ),
    pytest.param(
        _repository_toml(**{"connect-timeout": 0.0}), "connect-timeout", id="zero-connect-timeout"
    ),
    pytest.param(_repository_toml(**{"read-timeout": 0.0}), "read-timeout", id="zero-read-timeout"),
    pytest.param(
        _repository_toml(**{"total-timeout": 0.0}), "total-timeout", id="zero-total-timeout"
    ),
    pytest.param(
        _repository_toml(**{"max-page-bytes": 0}), "max-page-bytes", id="zero-max-page-bytes"
    ),
    pytest.param(_repository_toml(password="secret"), "password", id="password-no-username"),
    pytest.param('[server]\nbase-url = "mirror"\n', "base-url", id="base-url-relative"),
    pytest.param(
        '[server]\nbase-url = "https://cache.example/m?x=1"\n', "base-url", id="base-url-query"
    ),
    pytest.param('[server]\nbase-url = "https:/mirror"\n', "base-url", id="base-url-no-host"),
    pytest.param('[server]\nserver = "uvicorn"\n', "server must be one of", id="unknown-server"),
    pytest.param("[server]\nport = 0\n", "port", id="port-zero"),
    pytest.param("[server]\nport = 65536\n", "port", id="port-too-big"),
    pytest.param("[server]\nworkers = -1\n", "workers", id="negative-workers"),
    pytest.param("[server]\ncache-entries = 0\n", "cache-entries", id="zero-cache-entries"),
    pytest.param('[database]\nurl = "mysql://db.example/x"\n', "url", id="database-not-pg"),
    pytest.param(
        "[database]\npool-min-size = 5\npool-max-size = 2\n", "pool-min-size", id="pool-sizes"
    ),
]


@pytest.mark.parametrize(("text", "names"), _BAD_CONFIGS)
def test_a_bad_config_is_one_error_naming_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load_toml(tmp_path, text)

    message = str(caught.value)
    assert names in message
    assert "config.toml" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("config.toml", "port = \n", "not valid toml"),
        ("config.toml", "[server]\nport = 1\nport = 2\n", "not valid toml"),
        ("config.json", '{"server": {', "not valid json"),
        ("config.json", '{"server": {"port": 1,}}', "not valid json"),
        ("config.yaml", "server: [\n", "not valid yaml"),
        ("config.yaml", "server:\n  port: 1\n port: 2\n", "not valid yaml"),
    ],
)
def test_invalid_syntax(tmp_path: Path, name: str, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(_write(tmp_path, name, text), ENVIRON)

    message = str(caught.value)
    assert expected in message
    assert name in message
    assert "line" in message  # says where
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "text"),
    [("config.json", "[1, 2]"), ("config.json", '"text"'), ("config.yaml", "- 1\n- 2\n")],
)
def test_top_level_must_be_a_table(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(ConfigError, match="top level must be a table"):
        config.load(_write(tmp_path, name, text), ENVIRON)


def test_unknown_file_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.ini: use a \.toml, \.json or \.yaml file"):
        config.load(_write(tmp_path, "config.ini", "[server]\n"), ENVIRON)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path / "config.toml", ENVIRON)


def test_find_config_file(tmp_path: Path) -> None:
    assert config.find_config_file(tmp_path) is None
    (tmp_path / "config.yml").write_text("")  # not one of the names looked for
    assert config.find_config_file(tmp_path) is None

    json_file = _write(tmp_path, "config.json", "{}")
    assert config.find_config_file(tmp_path) == json_file


def test_several_config_files_in_one_directory(tmp_path: Path) -> None:
    _write(tmp_path, "config.toml", "")
    _write(tmp_path, "config.yaml", "")

    with pytest.raises(ConfigError) as caught:
        config.find_config_file(tmp_path)

    assert "several config files" in str(caught.value)
    assert "config.toml" in str(caught.value)
    assert "config.yaml" in str(caught.value)


# --- environment overrides -----------------------------------------------------------------


def test_env_overrides_scalars(tmp_path: Path) -> None:
    loaded = _load_toml(
        tmp_path,
        '[server]\nport = 8080\nhost = "0.0.0.0"\n',
        {
            **ENVIRON,
            "MYPYPI2_DATA_DIR": "/var/cache/mypypi2",
            "MYPYPI2_SERVER__PORT": "9001",
            "MYPYPI2_SERVER__WORKERS": "3",
            "MYPYPI2_DATABASE__URL": "postgresql://env@db.example/cache",
        },
    )

    assert loaded.data_dir == "/var/cache/mypypi2"
    assert loaded.server.port == 9001
    assert isinstance(loaded.server.port, int)
    assert loaded.server.workers == 3
    assert loaded.server.host == "0.0.0.0"  # not overridden: kept from the file
    assert loaded.database.url == "postgresql://env@db.example/cache"


def test_env_overrides_a_repository_from_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "config.toml", tomli_w.dumps(FULL))

    loaded = config.load(path, {**ENVIRON, "MYPYPI2_REPOSITORIES__PRIVATE__PASSWORD": "from-env"})

    private = loaded.repository("private")
    assert private == msgspec.structs.replace(FULL_CONFIG.repositories[1], password="from-env")
    assert loaded.repositories[0] == FULL_CONFIG.repositories[0]
    assert len(loaded.repositories) == 2


def test_env_addresses_a_repository_whose_name_has_an_underscore(tmp_path: Path) -> None:
    text = tomli_w.dumps(
        {"repositories": [{"name": "my_repo", "upstream": UPSTREAM, "username": "u"}]}
    )

    loaded = _load_toml(
        tmp_path, text, {**ENVIRON, "MYPYPI2_REPOSITORIES__MY_REPO__PASSWORD": "from-env"}
    )

    assert loaded.repositories == (
        RepositoryConfig(name="my_repo", upstream=UPSTREAM, username="u", password="from-env"),
    )


def test_env_alone_creates_a_repository() -> None:
    loaded = config.load(
        None,
        {
            **ENVIRON,
            "MYPYPI2_REPOSITORIES__LOCAL__UPSTREAM": UPSTREAM,
            "MYPYPI2_REPOSITORIES__LOCAL__TTL": "30",
            "MYPYPI2_REPOSITORIES__LOCAL__HEADERS": '{"X-Token": "abc", "X-Other": "d"}',
        },
    )

    assert loaded.repositories == (
        RepositoryConfig(
            name="local", upstream=UPSTREAM, ttl=30.0, headers={"X-Token": "abc", "X-Other": "d"}
        ),
    )


def test_variables_that_are_not_config_keys_are_ignored() -> None:
    loaded = config.load(
        None,
        {
            **ENVIRON,
            "MYPYPI2_TEST_DATABASE_URL": "postgresql://test.example/x",
            config.HANDOFF_VARIABLE: "{}",
            "OTHER_SERVER__PORT": "1",
        },
    )

    assert loaded == config.load(None, ENVIRON)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MYPYPI2_SERVER__PORT", "abc"),
        ("MYPYPI2_SERVER__PORT", "80.5"),
        ("MYPYPI2_REPOSITORIES__LOCAL__TTL", "soon"),
        ("MYPYPI2_REPOSITORIES__LOCAL__HEADERS", "X-Token: abc"),
        ("MYPYPI2_REPOSITORIES__LOCAL__HEADERS", '{"X-Token": 1}'),
        ("MYPYPI2_SERVER", "1"),
    ],
)
def test_a_bad_env_override_names_the_variable(variable: str, value: str) -> None:
    environ = {**ENVIRON, "MYPYPI2_REPOSITORIES__LOCAL__UPSTREAM": UPSTREAM, variable: value}

    with pytest.raises(ConfigError) as caught:
        config.load(None, environ)

    assert str(caught.value).startswith(f"{variable}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "variable",
    [
        "MYPYPI2_BOGUS",
        "MYPYPI2_SERVER__BOGUS",
        "MYPYPI2_REPOSITORIES__LOCAL__BOGUS",
        "MYPYPI2_REPOSITORIES__LOCAL",
        "MYPYPI2_SERVER__PORT__NUMBER",
    ],
)
def test_an_env_variable_that_names_no_key_is_a_warning(
    variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {**ENVIRON, "MYPYPI2_REPOSITORIES__LOCAL__UPSTREAM": UPSTREAM, variable: "1"}

    loaded = config.load(None, environ)

    assert [r.getMessage() for r in caplog.records] == [
        f"ignoring {variable}: it names no configuration key"
    ]
    local = loaded.repository("local")
    assert local is not None and local.upstream == UPSTREAM and local.ttl == 600.0


def test_kubernetes_service_variables_are_ignored_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the kubelet injects into every pod for a Service named `mypypi2`.
    environ = {
        **ENVIRON,
        "MYPYPI2_PORT": "tcp://10.0.0.1:8000",
        "MYPYPI2_SERVICE_HOST": "10.0.0.1",
        "MYPYPI2_SERVICE_PORT": "8000",
        "MYPYPI2_SERVICE_PORT_HTTP": "8000",
        "MYPYPI2_PORT_8000_TCP": "tcp://10.0.0.1:8000",
        "MYPYPI2_PORT_8000_TCP_PROTO": "tcp",
        "MYPYPI2_PORT_8000_TCP_PORT": "8000",
        "MYPYPI2_PORT_8000_TCP_ADDR": "10.0.0.1",
        "MYPYPI2_SERVER__PORT": "9000",
    }

    loaded = config.load(None, environ)

    assert loaded.server.port == 9000
    assert caplog.records == []


def test_an_env_override_is_validated_like_the_file() -> None:
    with pytest.raises(ConfigError, match="port must be between 1 and 65535"):
        config.load(None, {**ENVIRON, "MYPYPI2_SERVER__PORT": "0"})


# --- the zero-config default upstream ------------------------------------------------------


@pytest.fixture
def pip_config(tmp_path: Path) -> Path:
    path = tmp_path / "pip.conf"
    path.write_text("[global]\nindex-url = https://mirror.example/simple/\n")
    return path


def _pip_environ(tmp_path: Path, **variables: str) -> dict[str, str]:
    # A home of our own, so the user's own pip config files are never read.
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), **variables}


def _default_upstream(environ: dict[str, str]) -> str:
    return config.load(None, environ).repositories[0].upstream


def test_pip_index_url_wins(tmp_path: Path, pip_config: Path) -> None:
    environ = _pip_environ(
        tmp_path,
        PIP_INDEX_URL="https://env.example/simple/",
        PIP_CONFIG_FILE=str(pip_config),
    )

    assert _default_upstream(environ) == "https://env.example/simple/"


def test_pips_config_file_is_honoured(tmp_path: Path, pip_config: Path) -> None:
    environ = _pip_environ(tmp_path, PIP_CONFIG_FILE=str(pip_config))
    assert "PIP_INDEX_URL" not in environ

    loaded = config.load(None, environ)

    assert loaded.repositories == (
        RepositoryConfig(name="pypi", upstream="https://mirror.example/simple/"),
    )


def test_pips_default_index(tmp_path: Path) -> None:
    environ = _pip_environ(tmp_path, PIP_CONFIG_FILE=os.devnull)

    assert _default_upstream(environ) == PyPI.simple_url


# --- writing TOML --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "original", [FULL_CONFIG, Config(repositories=(RepositoryConfig("pypi", UPSTREAM),))]
)
def test_to_toml_round_trips(original: Config) -> None:
    text = config.to_toml(original, redact=False)

    assert msgspec.convert(tomllib.loads(text), Config) == original


def test_handoff_round_trips() -> None:
    handoff = config.decode_handoff(config.encode_handoff(FULL_CONFIG, "postgresql://db/x"))

    assert handoff.config == FULL_CONFIG
    assert handoff.dsn == "postgresql://db/x"


# --- config.example.toml -------------------------------------------------------------------


def test_example_file_is_up_to_date() -> None:
    assert EXAMPLE_FILE.read_text() == example_config.render(), (
        "config.example.toml is stale: run `python -m mypypi2.example_config`"
    )


def test_example_file_loads_with_the_defaults() -> None:
    loaded = config.load(EXAMPLE_FILE, {})

    assert loaded == Config(repositories=(example_config.EXAMPLE_REPOSITORY,))
    assert loaded.repositories[0].upstream == "https://upstream.example/simple/"


def _option_paths(struct: type[msgspec.Struct], prefix: str) -> set[str]:
    paths = set()
    for option, field in zip(config.options(struct), msgspec.structs.fields(struct), strict=True):
        path = f"{prefix}.{option.name}" if prefix else option.name
        paths.add(path)
        nested = typing.get_args(field.type)[0]  # every field is Annotated with its Meta
        if typing.get_origin(nested) is tuple:
            nested = typing.get_args(nested)[0]
        if isinstance(nested, type) and issubclass(nested, msgspec.Struct):
            paths |= _option_paths(nested, path)
    return paths


def test_every_option_is_described_and_in_the_example_file() -> None:
    text = EXAMPLE_FILE.read_text()
    paths = _option_paths(Config, "")

    assert {"server.port", "repositories.ttl", "storage.part-size"} <= paths
    for path in paths:
        key = path.rsplit(".", 1)[-1]
        assert f"\n{key} = " in text or f"\n# {key} = " in text or f"[{path}]" in text, path


def test_an_option_without_a_description_is_refused() -> None:
    class Undescribed(msgspec.Struct):
        size: int = 1

    with pytest.raises(TypeError, match=r"Undescribed.size has no Meta\(description=...\)"):
        config.options(Undescribed)


def test_commented_out_examples_are_valid(tmp_path: Path) -> None:
    settings = msgspec.to_builtins(Config(repositories=(example_config.EXAMPLE_REPOSITORY,)))
    sections = [
        (Config, "", settings),
        (ServerConfig, "server", settings["server"]),
        (DatabaseConfig, "database", settings["database"]),
        (StorageConfig, "storage", settings["storage"]),
        (ClusterConfig, "cluster", settings["cluster"]),
        (RepositoryConfig, "repositories", settings["repositories"][0]),
    ]
    examples: list[tuple[str, str]] = []
    for struct, section, table in sections:
        for option in config.options(struct):
            if table[option.name] in (None, {}):  # only these are written with an example
                assert option.example is not None, option.name
                table[option.name] = option.example
                examples.append((section, option.attribute))

    loaded = _load_toml(tmp_path, tomli_w.dumps(settings))

    assert {a for _, a in examples} >= {"username", "password", "headers", "client_max_age"}
    for section, attribute in examples:
        table = loaded.repositories[0] if section == "repositories" else getattr(loaded, section)
        assert getattr(table, attribute) not in (None, {}), (section, attribute)


def test_to_toml_redacts_secrets_unless_asked() -> None:
    secret = Config(
        repositories=(
            RepositoryConfig(
                "private", UPSTREAM, username="u", password="p4ss", headers={"X": "t0k"}
            ),
        )
    )
    redacted = config.to_toml(secret, redact=True)
    assert "p4ss" not in redacted and "t0k" not in redacted
    assert tomllib.loads(redacted)["repositories"][0]["password"] == config.REDACTED
    assert "p4ss" in config.to_toml(secret, redact=False)


# --- the upstream client's options (file-hosts, download-timeout, URL credentials) ----------


def test_to_toml_redacts_passwords_inside_urls() -> None:
    secret = Config(
        database=DatabaseConfig(url="postgresql://cache:db-pa55@db.example/cache"),
        repositories=(
            RepositoryConfig("private", "https://reader:up-pa55@upstream.example/simple/"),
            RepositoryConfig("token", "https://tok3n@other.example/simple/"),
        ),
    )

    redacted = config.to_toml(secret, redact=True)

    for leaked in ("db-pa55", "up-pa55", "tok3n"):
        assert leaked not in redacted
    shown = tomllib.loads(redacted)
    assert shown["database"]["url"] == "postgresql://cache:<redacted>@db.example/cache"
    assert (
        shown["repositories"][0]["upstream"] == "https://reader:<redacted>@upstream.example/simple/"
    )
    assert shown["repositories"][1]["upstream"] == "https://<redacted>@other.example/simple/"
    assert "up-pa55" in config.to_toml(secret, redact=False)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        pytest.param({"download-timeout": 0.0}, "download-timeout", id="zero-download-timeout"),
        pytest.param({"file-hosts": ["https://files.example/"]}, "file-hosts", id="url-host"),
        pytest.param({"file-hosts": ["files.example:443"]}, "file-hosts", id="host-with-port"),
        pytest.param({"file-hosts": ["files.*.example"]}, "file-hosts", id="inner-wildcard"),
        pytest.param({"file-hosts": [""]}, "file-hosts", id="empty-host"),
        pytest.param({"file-hosts": ["*."]}, "file-hosts", id="bare-wildcard-dot"),
        pytest.param(
            {"upstream": "https://u:p@upstream.example/simple/", "username": "u"},
            "username",
            id="credentials-twice",
        ),
    ],
)
def test_bad_upstream_client_options(tmp_path: Path, options: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load_toml(tmp_path, _repository_toml(**options))

    assert names in str(caught.value)


def test_file_hosts_and_download_timeout_from_file_and_env(tmp_path: Path) -> None:
    text = _repository_toml(**{"file-hosts": ["files.example", "*.cdn.example", "*"]})
    environ = {**ENVIRON, "MYPYPI2_REPOSITORIES__PYPI__DOWNLOAD_TIMEOUT": "600"}

    [loaded] = _load_toml(tmp_path, text, environ).repositories

    assert loaded.file_hosts == ["files.example", "*.cdn.example", "*"]
    assert loaded.download_timeout == 600.0
    assert RepositoryConfig("pypi", UPSTREAM).download_timeout == 3600.0


# --- constraints msgspec checks, named in kebab-case with their path ------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            _repository_toml(ttl=-1),
            "repositories[0].ttl must be >= 0 (How long a project page is served",
            id="negative-ttl",
        ),
        pytest.param(
            '[server]\nserver = "uvicorn"\n',
            'server.server must be one of "granian", "hypercorn", not \'uvicorn\'',
            id="unknown-server",
        ),
        pytest.param(
            "[server]\nworkers = -3\n",
            "server.workers must be >= 0 (Worker processes; 0 starts one per CPU core)",
            id="negative-workers",
        ),
        pytest.param(
            "[server]\nport = 65536\n", "server.port must be between 1 and 65535", id="port"
        ),
        pytest.param(
            '[storage]\npart-size = "1MiB"\n', "storage.part-size must be >= 5MiB", id="part-size"
        ),
        pytest.param(
            '[storage]\naddressing-style = "dns"\n',
            'storage.addressing-style must be one of "auto", "path", "virtual"',
            id="addressing-style",
        ),
        pytest.param(
            _repository_toml(**{"stale-if-error": -5}),
            'repositories[0].stale-if-error must be >= 0 or "forever"',
            id="stale-if-error",
        ),
        pytest.param(
            tomli_w.dumps(
                {
                    "repositories": [
                        {"name": "a", "upstream": UPSTREAM},
                        {"name": "b", "upstream": UPSTREAM, "max-list-bytes": 0},
                    ]
                }
            ),
            "repositories[1].max-list-bytes must be > 0",
            id="second-repository",
        ),
    ],
)
def test_a_constraint_violation_names_the_option_and_its_rule(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load_toml(tmp_path, text)

    prefix = f"invalid configuration ({tmp_path / 'config.toml'}): "
    assert str(caught.value).startswith(prefix + message)
    assert "\n" not in str(caught.value)


# --- durations and sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("36h", 129600.0),
        ("7d", 604800.0),
        ("1.5m", 90.0),
        (" 2 H ", 7200.0),
        ("0", 0.0),
        ("-1", -1.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "soon", "15 min", "1w", "1h30m", "1e3", "inf", "m15"])
def test_a_bad_duration_says_what_a_duration_is(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        config.parse_duration(text)

    assert str(caught.value) == f"{text!r} is not a duration: {config.FORMS['duration']}"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("512B", 512),
        ("1kB", 1000),
        ("1KiB", 1024),
        ("200GB", 200 * 10**9),
        ("512MiB", 512 * 2**20),
        ("512 mib", 512 * 2**20),
        ("1.5GiB", 3 * 2**29),
        ("2TB", 2 * 10**12),
        ("1TiB", 2**40),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert config.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "big", "12 parsecs", "1M", "1 GiBs", "5e9"])
def test_a_bad_size_says_what_a_size_is(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        config.parse_size(text)

    assert str(caught.value) == f"{text!r} is not a size: {config.FORMS['size']}"


def test_a_size_must_be_whole_bytes() -> None:
    with pytest.raises(ValueError, match=r"'1\.5B' is not a whole number of bytes"):
        config.parse_size("1.5B")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(600.0, "10m"), (90.0, "90s"), (86400.0, "1d"), (7200.0, "2h"), (1.5, "1.5s")],
)
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert config.format_duration(seconds) == text
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("size", "text"), [(16 * 2**20, "16MiB"), (2**30, "1GiB"), (1000, "1000B"), (1536, "1536B")]
)
def test_format_size_reads_back(size: int, text: str) -> None:
    assert config.format_size(size) == text
    assert config.parse_size(text) == size


def test_durations_and_sizes_load_as_numbers(tmp_path: Path) -> None:
    text = _repository_toml(
        ttl="15m",
        **{
            "stale-if-error": "forever",
            "download-timeout": "2h",
            "client-max-age": "1m",
            "max-page-bytes": "64MiB",
            "max-list-bytes": "1GB",
        },
    )
    text += '[database]\nstatement-timeout = "30s"\n[storage]\npart-size = "8MiB"\n'

    loaded = _load_toml(tmp_path, text)

    [repository] = loaded.repositories
    assert (repository.ttl, repository.stale_if_error) == (900.0, "forever")
    assert isinstance(repository.ttl, float)
    assert repository.download_timeout == 7200.0
    assert (repository.client_max_age, type(repository.client_max_age)) == (60, int)
    assert (repository.max_page_bytes, repository.max_list_bytes) == (64 * 2**20, 10**9)
    assert loaded.database.statement_timeout == 30.0
    assert loaded.storage.part_size == 8 * 2**20
    # Numbers the rest of the code reads: they survive `config --show` and the worker handoff.
    assert msgspec.convert(tomllib.loads(config.to_toml(loaded, redact=False)), Config) == loaded
    assert (
        config.decode_handoff(config.encode_handoff(loaded, "postgresql://db/x")).config == loaded
    )


def test_plain_numbers_still_load(tmp_path: Path) -> None:
    loaded = _load_toml(tmp_path, _repository_toml(ttl=60, **{"max-page-bytes": 1000}))

    assert (loaded.repositories[0].ttl, loaded.repositories[0].max_page_bytes) == (60.0, 1000)


def test_durations_and_sizes_from_the_environment() -> None:
    loaded = config.load(
        None,
        {
            **ENVIRON,
            "MYPYPI2_REPOSITORIES__LOCAL__UPSTREAM": UPSTREAM,
            "MYPYPI2_REPOSITORIES__LOCAL__TTL": "36h",
            "MYPYPI2_REPOSITORIES__LOCAL__NEGATIVE_TTL": "45",
            "MYPYPI2_REPOSITORIES__LOCAL__STALE_IF_ERROR": "forever",
            "MYPYPI2_SERVER__HEADER_TIMEOUT": "1m",
            "MYPYPI2_STORAGE__PART_SIZE": "32MiB",
        },
    )

    [local] = loaded.repositories
    assert (local.ttl, local.negative_ttl, local.stale_if_error) == (129600.0, 45.0, "forever")
    assert loaded.server.header_timeout == 60.0
    assert loaded.storage.part_size == 32 * 2**20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"ttl": "soon"},
            "repositories[0].ttl: 'soon' is not a duration: a number of seconds",
            id="bad-duration",
        ),
        pytest.param(
            {"stale-if-error": "never"},
            "repositories[0].stale-if-error: 'never' is not a duration: a number of seconds, or "
            'a number and s, m, h or d ("90s", "15m", "36h", "7d"); or "forever"',
            id="bad-duration-or-forever",
        ),
        pytest.param(
            {"ttl": "forever"}, "repositories[0].ttl: 'forever' is not a duration", id="no-forever"
        ),
        pytest.param(
            {"client-max-age": "1.5s"},
            "repositories[0].client-max-age: '1.5s' is not a whole number of seconds",
            id="whole-seconds",
        ),
        pytest.param(
            {"max-page-bytes": "lots"},
            "repositories[0].max-page-bytes: 'lots' is not a size: a number of bytes",
            id="bad-size",
        ),
        pytest.param(
            {"read-timeout": True},
            "repositories[0].read-timeout: expected a duration (a number of seconds",
            id="duration-of-the-wrong-type",
        ),
        pytest.param(
            {"connect-timeout": "0s"},
            "repositories[0].connect-timeout must be > 0",
            id="zero-duration",
        ),
    ],
)
def test_a_bad_duration_or_size_names_the_option(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load_toml(tmp_path, _repository_toml(**options))

    assert message in str(caught.value)
    assert "config.toml" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_duration_in_the_environment_names_the_variable() -> None:
    environ = {
        **ENVIRON,
        "MYPYPI2_REPOSITORIES__LOCAL__UPSTREAM": UPSTREAM,
        "MYPYPI2_REPOSITORIES__LOCAL__TTL": "15 minutes",
    }

    with pytest.raises(ConfigError) as caught:
        config.load(None, environ)

    assert str(caught.value).startswith(
        "MYPYPI2_REPOSITORIES__LOCAL__TTL: '15 minutes' is not a duration: "
    )
