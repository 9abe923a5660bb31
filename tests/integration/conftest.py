"""Whole-cluster fixtures: ``cluster`` runs the real services as processes against a fresh
database (see ``taskmill.dev.harness``), and prints their logs when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmill.common.migrate import migrate
from taskmill.dev.harness import Cluster
from taskmill.dev.pgserver import PostgresServer
from taskmill.testing import throwaway_server


@pytest.fixture
def cluster(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKMILL_", "OTEL_"))}
    env.update(TASKMILL_DATABASE_URL=database_url, TASKMILL_MIGRATE="false")
    cluster = Cluster(database_url, tmp_path, env)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop and start again on the same data
    and port: the other tests' server is never touched."""
    with throwaway_server("taskmill-own-") as server:
        yield server


@pytest.fixture
def own_database_url(server: PostgresServer) -> str:
    """``server``'s database, migrated: a module's ``database_url`` override returns it."""
    migrate(server.url)
    return server.url


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
