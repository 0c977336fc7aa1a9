"""deploy/: what CI can check of the deployment files without Docker, a cluster or a network.

Schemas first: compose.yaml against the Compose specification (the copy check-jsonschema
ships), the Kubernetes manifests against the Kubernetes API's schemas (kubernetes-validate
ships them). Then what no schema knows: the configuration each replica gets (its config.toml
and its MYPYPI2_ variables) loads through mypypi2's own loader; every MYPYPI2_ variable
named anywhere in deploy/ is an option; probes and scrape paths are routes the app serves;
the files agree on ports, names and keys; the dashboard and the alert rules are PromQL over
metrics mypypi2 exports, with their labels; nginx -t accepts the load balancer's config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import urlsplit

import kubernetes_validate
import msgspec
import promql_parser
import pytest
import yaml
from starlette.types import Message

from mypypi2.app import create_app
from mypypi2.config import Config, RepositoryConfig, load, parse_duration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes the manifests are written for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
# With PIP_INDEX_URL set, load() never asks pip for the default upstream.
PIP_ENVIRON = {"PIP_INDEX_URL": "https://upstream.example/simple/"}
# What the downward API gives a pod, and what a compose replica finds its address to be.
POD_IP = "192.0.2.7"
CONTAINER_IP = "192.0.2.8"

# The metrics mypypi2 exports: name -> (type, labels).
EXPORTED: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in [
        ("mypypi2_requests_total", "counter", "repository kind outcome status"),
        ("mypypi2_request_duration_seconds", "histogram", "kind"),
        ("mypypi2_served_bytes_total", "counter", "repository kind"),
        ("mypypi2_upstream_requests_total", "counter", "repository kind result"),
        ("mypypi2_upstream_duration_seconds", "histogram", "repository kind"),
        ("mypypi2_upstream_bytes_total", "counter", "repository kind"),
        ("mypypi2_coalesced_waiters_total", "counter", "repository kind"),
        ("mypypi2_downloads_in_flight", "gauge", "repository"),
        ("mypypi2_verification_failures_total", "counter", "repository"),
        ("mypypi2_stale_served_total", "counter", "repository reason"),
        ("mypypi2_stored_files", "gauge", "repository"),
        ("mypypi2_stored_bytes", "gauge", "repository"),
        ("mypypi2_database_connections", "gauge", "state"),
        ("mypypi2_clients_total", "counter", "installer"),
    ]
}
# Labels Prometheus adds to every series it scrapes, and the series it makes itself.
SCRAPE_LABELS = frozenset({"job", "instance", "namespace"})
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}
# Grafana's own variables, replaced by a duration before an expression is parsed.
GRAFANA_RANGE = re.compile(r"\$__(rate_interval|interval|range)\b")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return compose


def _kustomization() -> dict[str, Any]:
    kustomization: dict[str, Any] = _yaml(KUBERNETES / "kustomization.yaml")
    return kustomization


def _kubernetes_resources() -> list[dict[str, Any]]:
    return [
        resource
        for name in _kustomization()["resources"]
        for resource in yaml.safe_load_all((KUBERNETES / name).read_text())
    ]


def _resource(kind: str) -> dict[str, Any]:
    (found,) = (r for r in _kubernetes_resources() if r["kind"] == kind)
    return found


def _variables(path: Path) -> dict[str, str]:
    """A .env file: NAME=value lines."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _interpolated(value: str, variables: dict[str, str]) -> str:
    """Compose's interpolation of ${NAME}, ${NAME:?message}, ${NAME:-default} and $$."""

    def one(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        return variables[name] if name in variables or default is None else default

    pattern = r"\$\{(?P<name>\w+)(?::\?[^}]*|:-(?P<default>[^}]*))?\}"
    return re.sub(pattern, one, value).replace("$$", "$")


def _image_environment() -> dict[str, str]:
    text = (ROOT / "Containerfile").read_text()
    return dict(re.findall(r"^ENV (\w+)=(\S+)$", text, re.MULTILINE))


def _compose_replica() -> dict[str, Any]:
    replica: dict[str, Any] = _compose()["services"]["mypypi2"]
    return replica


def _compose_environment() -> dict[str, str]:
    """A compose replica's environment, with deploy/.env.example's values."""
    variables = _variables(DEPLOY / ".env.example")
    replica = _compose_replica()
    environment = _image_environment()
    for name, value in replica["environment"].items():
        environment[name] = _interpolated(str(value), variables)
    # The replica's own address, exported by its command before mypypi2 starts.
    for name, port in re.findall(r'export (\w+)="http://\$\$\(.+\):(\d+)"', replica["command"][0]):
        environment[name] = f"http://{CONTAINER_IP}:{port}"
    return environment


def _container() -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = _resource("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _pod_environment() -> dict[str, str]:
    """The Deployment's environment as the kubelet resolves it, from secret.yaml's values."""
    secret = _resource("Secret")
    environment = _image_environment()
    for variable in _container()["env"]:
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            assert source["secretKeyRef"]["name"] == secret["metadata"]["name"]
            value = secret["stringData"][source["secretKeyRef"]["key"]]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "status.podIP"
            value = POD_IP
        else:
            # $(NAME) names a variable defined before this one.
            value = re.sub(r"\$\((\w+)\)", lambda m: environment[m[1]], variable["value"])
        environment[variable["name"]] = value
    return environment


def _configmap_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(_resource("ConfigMap")["data"]["config.toml"])
    return path


def _load_quietly(
    path: Path, environment: dict[str, str], caplog: pytest.LogCaptureFixture
) -> Config:
    """load(), failing on any warning (a variable that names no option is only a warning)."""
    with caplog.at_level(logging.WARNING, logger="mypypi2"):
        config = load(path, {**PIP_ENVIRON, **environment})
    assert [r.getMessage() for r in caplog.records] == []
    return config


def test_compose_file_follows_the_compose_specification() -> None:
    schema = ("--builtin-schema", "vendor.compose-spec")
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *schema, str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_follow_the_kubernetes_schemas(version: str) -> None:
    for resource in _kubernetes_resources():
        kubernetes_validate.validate(resource, version, strict=True)


def test_kustomization_applies_every_manifest_and_names_the_deployments_image() -> None:
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(_kustomization()["resources"]) == sorted(manifests)
    image = _container()["image"].rsplit(":", 1)[0]
    assert [i["name"] for i in _kustomization()["images"]] == [image]


def test_kustomize_builds_the_manifests_into_valid_resources() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    resources = list(yaml.safe_load_all(built.stdout))
    names = sorted((r["kind"], r["metadata"]["name"]) for r in resources)
    assert names == sorted((r["kind"], r["metadata"]["name"]) for r in _kubernetes_resources())
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSIONS[-1], strict=True)


def test_a_compose_replicas_configuration_loads(caplog: pytest.LogCaptureFixture) -> None:
    config = _load_quietly(DEPLOY / "config.toml", _compose_environment(), caplog)
    assert config.database.url.startswith("postgresql://mypypi2:")
    assert config.storage.backend == "s3"
    assert config.storage.secret_access_key is not None
    assert config.cluster.secret is not None
    assert config.cluster.advertise_url == f"http://{CONTAINER_IP}:{config.server.port}"


def test_a_pods_configuration_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _load_quietly(_configmap_file(tmp_path), _pod_environment(), caplog)
    assert config.database.url.startswith("postgresql://")
    assert config.storage.backend == "s3"
    assert config.storage.secret_access_key is not None
    assert config.cluster.secret is not None
    assert config.cluster.advertise_url == f"http://{POD_IP}:{config.server.port}"


def _option_variables(
    struct: type[msgspec.Struct] = Config, prefix: str = "MYPYPI2_"
) -> Iterator[str]:
    """A pattern for each variable naming an option (a repository's part: its name)."""
    for field in msgspec.structs.fields(struct):
        variable = prefix + field.encode_name.upper().replace("-", "_")
        section = get_args(field.type)[0] if get_origin(field.type) is Annotated else field.type
        if field.encode_name == "repositories":
            yield from _option_variables(RepositoryConfig, variable + "__[A-Z0-9_]+__")
        elif isinstance(section, type) and issubclass(section, msgspec.Struct):
            yield from _option_variables(section, variable + "__")
        else:
            yield variable


def test_every_mypypi2_variable_in_deploy_names_an_option() -> None:
    options = re.compile("|".join(_option_variables()))
    files = [ROOT / "Containerfile", *(p for p in DEPLOY.rglob("*") if p.is_file())]
    named = {v for path in files for v in re.findall(r"MYPYPI2_\w*[A-Z0-9]", path.read_text())}
    assert named, "no variables found: the pattern is broken"
    assert sorted(v for v in named if not options.fullmatch(v)) == []


async def _served(path: str) -> bool:
    """Whether the app routes `path` (its answer, without a database: anything but 404)."""
    config = load(None, PIP_ENVIRON)
    app = create_app(config, "postgresql://unused.example/mypypi2")
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    # A routed handler fails for want of its worker's state, after answering 500.
    with contextlib.suppress(Exception):
        await app(scope, receive, send)
    assert statuses, f"no answer for {path}"
    return statuses[0] != 404


def _probe_paths() -> dict[str, str]:
    """Where each probe and scraper asks: what -> path."""
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        paths[f"deployment {probe}"] = _container()[probe]["httpGet"]["path"]
    local = r"http://127\.0\.0\.1:\d+(/[^']*)'"
    (paths["compose healthcheck"],) = re.findall(
        local, " ".join(_compose_replica()["healthcheck"]["test"])
    )
    (paths["Containerfile HEALTHCHECK"],) = re.findall(local, (ROOT / "Containerfile").read_text())
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        (job,) = _yaml(DEPLOY / "prometheus" / name)["scrape_configs"]
        paths[name] = job["metrics_path"]
    return paths


async def test_probes_and_scrapers_ask_paths_the_app_serves() -> None:
    paths = _probe_paths()
    assert set(paths.values()) >= {"/-/health", "/-/ready", "/-/metrics"}
    assert not await _served("/-/no-such-path")
    unserved = {where: path for where, path in paths.items() if not await _served(path)}
    assert unserved == {}


def test_the_compose_files_agree_on_names_ports_and_paths() -> None:
    compose = _compose()
    services = compose["services"]
    config = load(DEPLOY / "config.toml", PIP_ENVIRON)
    port = config.server.port
    replica = _compose_replica()
    assert replica["deploy"]["replicas"] >= 2
    # Every file mounted from deploy/ exists; the config is the one the command reads.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).is_file(), volume
    assert "./config.toml:/etc/mypypi2/config.toml:ro" in replica["volumes"]
    assert "--config /etc/mypypi2/config.toml serve" in replica["command"][0]
    assert f":{port}/-/" in " ".join(replica["healthcheck"]["test"])
    # nginx and Prometheus find the replicas by the service's name.
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.findall(r"set \$replicas http://([\w-]+):(\d+);", nginx) == [("mypypi2", str(port))]
    (job,) = _yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    assert job["dns_sd_configs"] == [
        {"names": ["mypypi2"], "type": "A", "port": port, "refresh_interval": "15s"}
    ]
    # The bucket the one-shot creates, on the S3 service the replicas use.
    assert f"mc mb --ignore-existing s3/{config.storage.bucket}" in services["bucket"]["command"][0]
    assert urlsplit(config.storage.endpoint_url).hostname in services
    # Docker kills a replica still draining or finishing downloads at stop_grace_period.
    stopping = config.server.drain_time + config.server.stop_timeout
    assert parse_duration(replica["stop_grace_period"]) > stopping


def test_the_kubernetes_manifests_agree_on_names_ports_and_keys(tmp_path: Path) -> None:
    deployment = _resource("Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = _container()
    config = load(_configmap_file(tmp_path), PIP_ENVIRON)
    assert deployment["spec"]["replicas"] >= 2
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        _resource("Service")["spec"]["selector"],
        _resource("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    (http,) = (p for p in container["ports"] if p["name"] == "http")
    assert http["containerPort"] == config.server.port
    assert _resource("Service")["spec"]["ports"][0]["targetPort"] == "http"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    # The config file the command reads is the ConfigMap's, mounted.
    (volume,) = (v for v in pod["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == _resource("ConfigMap")["metadata"]["name"]
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert container["command"][1:3] == ["--config", f"{mount['mountPath']}/config.toml"]
    # One CPU per worker: 0 workers would count the node's cores.
    assert config.server.workers == int(container["resources"]["requests"]["cpu"])
    # The kubelet kills a pod still draining or finishing downloads at the grace period.
    stopping = config.server.drain_time + config.server.stop_timeout
    assert pod["spec"]["terminationGracePeriodSeconds"] > stopping


def test_nginx_accepts_the_load_balancers_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if nginx is None:
        pytest.skip("nginx is not installed")
    checked = subprocess.run(
        [nginx, "-t", "-c", str(DEPLOY / "nginx.conf"), "-p", str(tmp_path), "-e", "/dev/stderr"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


def _dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "mypypi2.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # Grafana's label_values(metric, label), not PromQL: its metric is.
            (metric,) = re.findall(r"^label_values\((\w+), *\w+\)$", variable["definition"])
            yield metric


def _alert_expressions() -> Iterator[str]:
    for group in _yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def _series(name: str) -> dict[str, frozenset[str]]:
    """The series names a metric family is scraped as, each with its labels."""
    kind, labels = EXPORTED[name]
    if kind != "histogram":
        return {name: labels}
    return {name + "_bucket": labels | {"le"}, name + "_sum": labels, name + "_count": labels}


def _selectors(expression: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(GRAFANA_RANGE.sub("5m", expression)), visit)
    return found


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_dashboard_and_alerts_query_metrics_mypypi2_exports(source: str) -> None:
    series = {s: labels for name in EXPORTED for s, labels in _series(name).items()}
    series |= PROMETHEUS_SERIES
    expressions = list(_dashboard_expressions() if source == "dashboard" else _alert_expressions())
    wrong = []
    for expression in expressions:
        for selector in _selectors(expression):
            name = selector.name or ""
            labels = {m.name for m in selector.matchers.matchers}
            if name not in series or not labels <= series[name] | SCRAPE_LABELS:
                wrong.append(str(selector))
    assert expressions
    assert wrong == []


def test_the_dashboard_shows_every_metric() -> None:
    shown = {s.name for e in _dashboard_expressions() for s in _selectors(e)}
    assert [name for name in EXPORTED if not set(_series(name)) & shown] == []
