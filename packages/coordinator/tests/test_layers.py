"""The coordinator's layers: only the worker client and the gRPC transport know gRPC."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import taskmill.coordinator

PACKAGE = Path(taskmill.coordinator.__file__).parent
#: The modules that may speak gRPC: the worker client and the server's transport.
TRANSPORT = {"worker_client.py", "servicer.py", "server.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _speaks_grpc(name: str) -> bool:
    top = name.split(".")[0]
    return top == "grpc" or top.startswith("grpc_") or name.startswith("taskmill.v1")


RULES = ["dispatch.py", "service.py", "fleet.py", "calls.py", "liveness.py", "listener.py"]


@pytest.mark.parametrize("module", RULES)
def test_the_rules_import_no_grpc(module: str) -> None:
    assert [name for name in _imports(PACKAGE / module) if _speaks_grpc(name)] == []


@pytest.mark.parametrize("module", RULES)
def test_the_rules_reach_no_grpc_through_the_transport(module: str) -> None:
    # The rules see the workers through calls.WorkerCalls, not the gRPC client itself.
    transport = {f"taskmill.coordinator.{name.removesuffix('.py')}" for name in TRANSPORT}
    assert _imports(PACKAGE / module) & transport == set()


def test_only_the_transport_imports_grpc() -> None:
    speaking = {
        path.name
        for path in PACKAGE.glob("*.py")
        if any(_speaks_grpc(name) for name in _imports(path))
    }
    assert speaking <= TRANSPORT
    assert "worker_client.py" in speaking  # the check sees imports at all
