"""deploy/ checked as far as offline tools allow (issue 21): every YAML file lints and parses,
every variable the compose file, the Kubernetes manifests and the Dockerfile give Reverie is a
setting Reverie reads, their commands are Reverie's, and the Grafana dashboard plots metrics
Reverie makes. `docker compose config` runs where Docker Compose is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from reverie.settings import Settings
from reverie.starter.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
YAML_FILES = sorted(
    p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.name != ".yamllint.yaml"
)
# Variables read by the OpenTelemetry SDK or by Python itself rather than by Settings.
OTEL = re.compile(r"(OTEL_|PYTHON)[A-Z_]+")


def known_variables() -> set[str]:
    return {field.alias for field in Settings.model_fields.values() if field.alias}


def reverie_env_ok(names: set[str]) -> None:
    unknown = {n for n in names if n not in known_variables() and not OTEL.fullmatch(n)}
    assert not unknown, f"variables Reverie does not read: {sorted(unknown)}"


def test_yaml_files_lint_clean_and_parse() -> None:
    assert len(YAML_FILES) >= 8, YAML_FILES
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    for path in YAML_FILES:
        text = path.read_text()
        problems = [f"{p.line}:{p.column} {p.message}" for p in linter.run(text, config)]
        assert not problems, f"{path.relative_to(DEPLOY)}: {problems}"
        assert [doc for doc in yaml.safe_load_all(text) if doc], path


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_each_part_with_settings_reverie_reads() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"temporal", "temporal-db", "temporal-ui", "reverie-db", "worker", "api", "lb"} <= set(
        services
    )
    # Temporal keeps its state in its own PostgreSQL, not in Reverie's.
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "temporal-db"
    for role in ("worker", "api"):
        service = services[role]
        build_parser().parse_args(service["command"])  # a command Reverie has
        reverie_env_ok(set(service["environment"]))
        assert "reverie-db" in service["environment"]["DATABASE_URL"]
        assert re.fullmatch(r"\$\{REVERIE_[A-Z]+S:-\d+\}", str(service["deploy"]["replicas"]))
    # Every worker shares the workspace root.
    assert "workspaces:/workspaces" in services["worker"]["volumes"]
    assert services["worker"]["environment"]["REVERIE_WORKSPACE_ROOT"] == "/workspaces"


def test_compose_settings_with_nothing_set_are_usable_and_the_try_profile_runs_a_model() -> None:
    """With only the passwords chosen, every setting the compose file hands Reverie is valid
    and the model's URL, if given, a URL (an empty one would break every model call); without
    a model key, the `try` profile serves Reverie's simulated model (the file said an unset
    key meant simulated answers, but `reverie worker` then called Anthropic with no key)."""
    services = _compose()["services"]

    def substituted(value: str) -> str:
        value = re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "chosen", value)
        return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)

    env = {k: substituted(str(v)) for k, v in services["worker"]["environment"].items()}
    settings = Settings(**env)
    assert settings.anthropic_base_url is None or settings.anthropic_base_url.startswith("http")
    assert settings.payload_keys is None and settings.otlp_endpoint in (None, "")
    simulated = services["simulated-model"]
    assert simulated["profiles"] == ["try"]
    assert importlib.util.find_spec(simulated["entrypoint"][2]) is not None


def test_compose_has_no_default_passwords_and_keeps_what_has_no_login_on_this_host() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    # A password is chosen by whoever runs it (`:?` refuses to start without one).
    assert not re.findall(r"\$\{[A-Z_]*PASSWORD:-", text)
    assert re.findall(r"\$\{[A-Z_]*PASSWORD:\?", text)
    services = _compose()["services"]
    # The Web UI (which can terminate any workflow), Prometheus and Grafana have no login.
    for name in ("temporal-ui", "prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name
    for name in ("temporal", "temporal-db", "reverie-db"):
        assert "ports" not in services[name], name
    for role in ("worker", "api"):
        assert services[role]["read_only"] is True
        assert services[role]["deploy"]["resources"]["limits"]["memory"]


def test_kubernetes_manifests_run_workers_and_api_from_config_and_secret() -> None:
    folder = DEPLOY / "kubernetes"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    documents = [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((folder / name).read_text())
        if doc
    ]
    for doc in documents:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("Deployment", "reverie-worker"), ("Deployment", "reverie-api")} <= kinds
    assert ("PersistentVolumeClaim", "reverie-workspaces") in kinds
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    secret = yaml.safe_load((folder / "secret.example.yaml").read_text())
    reverie_env_ok(set(config["data"]) | set(secret["stringData"]))
    for doc in documents:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= (
            doc["spec"]["template"]["metadata"]["labels"].items()
        )
        (container,) = pod["containers"]
        build_parser().parse_args(container["args"])
        sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
        assert sources == {"reverie-config", "reverie-secrets"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["limits"]["memory"]
        writable = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/reverie"} <= writable  # scratch and REVERIE_HOME
    worker = next(d for d in documents if d["metadata"]["name"] == "reverie-worker")
    mounts = worker["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "workspaces", "mountPath": config["data"]["REVERIE_WORKSPACE_ROOT"]} in mounts


def test_dockerfile_sets_settings_reverie_reads_and_runs_its_commands() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    env_block = re.search(r"^ENV (.+?)(?=^\S)", text, re.S | re.M)
    assert env_block, "no ENV"
    reverie_env_ok(set(re.findall(r"([A-Z_]+)=", env_block.group(1))))
    assert 'ENTRYPOINT ["reverie"]' in text
    build_parser().parse_args(json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1)))
    assert "USER reverie" in text  # not root


def test_grafana_dashboard_plots_metrics_reverie_makes() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/reverie.json").read_text())
    made = {
        name
        for path in (DEPLOY.parent / "reverie/observability").glob("*.py")
        for name in re.findall(r'"(reverie_[a-z_]+)"', path.read_text())
    }
    plotted = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\breverie_[a-z_]+", target["expr"])
    }
    assert plotted and plotted <= made, plotted - made
    assert {
        "reverie_turns",
        "reverie_model_requests",
        "reverie_tool_duration",
        "reverie_task_queue_backlog",
        "reverie_webhook_deliveries",
        "reverie_dream_duration",
    } <= plotted


def _compose_cli() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(_compose_cli() is None, reason="Docker Compose is not installed here")
def test_docker_compose_accepts_the_file() -> None:
    command = _compose_cli() or []
    result = subprocess.run(
        [*command, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    """Every environment variable Reverie reads is listed for operators (issue 21: every
    setting has one): Settings' aliases and the few read straight from os.environ."""
    readme = (DEPLOY.parent / "README.md").read_text()
    table = readme.split("### Configuration", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    direct = {
        name
        for path in (DEPLOY.parent / "reverie").rglob("*.py")
        for name in re.findall(r'os\.environ\.get\("(REVERIE_[A-Z_]+)"', path.read_text())
    } - {"REVERIE_DEBUG", "REVERIE_DEMO_MODEL"}  # the CLI's and the demo's, in their sections
    missing = (known_variables() | direct) - listed
    assert not missing, f"settings missing from README's table: {sorted(missing)}"
