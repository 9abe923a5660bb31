"""Fixtures for the static checks of the images and deployment files (see deploy_support)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# pytest runs in importlib mode: make the helpers importable by the test modules.
sys.path.insert(0, str(Path(__file__).parent))

from deploy_support import ROOT, Replay, make_build_context, replay_build


@pytest.fixture(scope="session")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `docker build .` would send from this checkout."""
    return make_build_context(tmp_path_factory.mktemp("context"))


@pytest.fixture(scope="session")
def replay(build_context: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`replay(service)` replays that service's Dockerfile once per session and gives the result."""
    done: dict[str, Replay] = {}

    def get(service: str) -> Replay:
        if service not in done:
            dockerfile = ROOT / "packages" / service / "Dockerfile"
            scratch = tmp_path_factory.mktemp(f"image-{service}")
            done[service] = replay_build(dockerfile, build_context, scratch)
        return done[service]

    return get


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    """.env.example as a mapping."""
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            values[name.strip()] = value.strip()
    return values


@pytest.fixture(scope="session")
def manifests() -> list[dict[str, Any]]:
    """Every Kubernetes object under infra/k8s, each with its file name under `_file`."""
    objects: list[dict[str, Any]] = []
    for path in sorted((ROOT / "infra" / "k8s").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                document["_file"] = str(path.relative_to(ROOT))
                objects.append(document)
    return objects
