"""docker-compose.yml and .env.example, checked without Docker."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_support import ROOT, SERVICES, parse_dockerfile

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ escapes a dollar.
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}")
BARE_VARIABLE = re.compile(r"(?<!\$)\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
PLACEHOLDER = re.compile(r"change-me[A-Za-z0-9_-]*")


def test_every_depends_on_names_a_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on unknown service {target}"


def test_every_build_has_the_repository_root_as_context_and_an_existing_dockerfile(
    compose: dict[str, Any],
) -> None:
    built = {}
    for name, service in compose["services"].items():
        if "build" in service:
            build = service["build"]
            assert build["context"] == ".", name
            assert (ROOT / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
            built[name] = build["dockerfile"]
    for service in SERVICES:
        assert built[service] == f"packages/{service}/Dockerfile"


def test_every_referenced_variable_is_in_env_example_or_has_a_default(
    env_example: dict[str, str],
) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not BARE_VARIABLE.search(text.replace("${", "")), "use ${NAME}, not $NAME"
    referenced = {m["name"]: m["op"] for m in VARIABLE.finditer(text)}
    assert referenced, "no variables found: the pattern is wrong"
    for name, op in referenced.items():
        has_default = op in (":-", "-")
        assert name in env_example or has_default, f"${{{name}}} has no default and no example"
    # The secrets must be set: compose stops with a message when one is missing.
    for secret in ("POSTGRES_PASSWORD", "TASKMILL_API_TOKENS", "TASKMILL_CLUSTER_TOKEN"):
        assert referenced.get(secret) == ":?", secret


def test_env_example_holds_placeholders_only(env_example: dict[str, str]) -> None:
    secrets = {k: v for k, v in env_example.items() if re.search("PASSWORD|TOKEN", k)}
    assert secrets
    for name, value in secrets.items():
        assert all(PLACEHOLDER.fullmatch(v) for v in value.split(",")), f"{name}={value}"
    assert ".env" in (ROOT / ".gitignore").read_text().split(), "git must ignore .env"


def test_only_the_scheduler_api_and_jaeger_ui_are_published(compose: dict[str, Any]) -> None:
    published = {
        name: [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
        for name, service in compose["services"].items()
        if service.get("ports")
    }
    assert published == {"scheduler": ["8081"], "jaeger": ["16686"]}
    for service in compose["services"].values():
        assert "expose" not in service and "network_mode" not in service


@pytest.mark.parametrize("service", ["coordinator", "worker"])
def test_scalable_services_have_no_fixed_name_or_host_port(
    compose: dict[str, Any], service: str
) -> None:
    definition = compose["services"][service]
    assert "container_name" not in definition and "hostname" not in definition
    assert "ports" not in definition


def test_workers_advertise_their_own_address_and_reach_the_coordinator(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]["environment"]
    coordinator = compose["services"]["coordinator"]["environment"]
    # With no advertise address, each replica advertises <its hostname>:<port>.
    assert "TASKMILL_WORKER_ADVERTISE_ADDRESS" not in worker
    assert worker["TASKMILL_WORKER_PORT"] == "9090"
    assert worker["TASKMILL_WORKER_COORDINATOR"] == (
        f"coordinator:{coordinator['TASKMILL_COORDINATOR_PORT']}"
    )
    dockerfile = parse_dockerfile(ROOT / "packages" / "worker" / "Dockerfile")
    assert dockerfile[-1].all("EXPOSE")[-1].args == worker["TASKMILL_WORKER_PORT"]


def test_services_start_after_a_successful_migration_and_do_not_migrate_themselves(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["migrate"]["entrypoint"] == ["taskmill-migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    for name in ("scheduler", "coordinator"):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["environment"]["TASKMILL_MIGRATE"] == "false"
        assert service["environment"]["TASKMILL_DATABASE_URL"].endswith("@postgres:5432/taskmill")
        assert service["restart"] == "unless-stopped"
    assert services["worker"]["depends_on"]["coordinator"]["condition"] == "service_healthy"


def test_services_send_traces_to_jaeger(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        assert environment["OTEL_SERVICE_NAME"] == f"taskmill-{name}"


def test_postgres_uses_the_repository_settings_and_a_named_volume(
    compose: dict[str, Any],
) -> None:
    postgres = compose["services"]["postgres"]
    mounts = dict(v.split(":", 2)[:2] for v in postgres["volumes"])
    assert mounts["./infra/postgres/postgresql.conf"] == "/etc/postgresql/postgresql.conf"
    assert "config_file=/etc/postgresql/postgresql.conf" in postgres["command"]
    assert mounts["pgdata"] == "/var/lib/postgresql/data" and "pgdata" in compose["volumes"]
    assert (ROOT / "infra" / "postgres" / "postgresql.conf").is_file()
