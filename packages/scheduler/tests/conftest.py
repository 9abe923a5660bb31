"""Fixtures for scheduler tests: the real app on a fresh database, driven by Falcon's TestClient,
or the real process on a free port (``served``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from taskmill.common.db import Database
from taskmill.common.settings import DatabaseSettings
from taskmill.common.store import Decided, SubmitRow
from taskmill.scheduler import SchedulerSettings, create_app
from taskmill.testing import Stores

JSON = {"Content-Type": "application/json"}
#: The bearer token the real process of ``served`` accepts.
API_TOKEN = "test-token"
_DEADLINE = 60.0
_LISTENING = re.compile(r"listening on http://[^\s:]+:(\d+)")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A pool on the test's own migrated database, as the scheduler opens it."""
    database = Database(DatabaseSettings.from_url(database_url), prepare_statements=True)
    yield database
    database.close()


@pytest.fixture
def store(db: Database) -> Stores:
    """The task store on the test database, to arrange and inspect state directly."""
    return Stores(db)


@pytest.fixture
def settings(database_url: str) -> SchedulerSettings:
    """Default settings, with small limits so size tests stay small."""
    return SchedulerSettings(
        database=DatabaseSettings.from_url(database_url),
        max_payload_bytes=1024,
        max_batch_bytes=256 * 1024,
    )


@pytest.fixture
def client(settings: SchedulerSettings, db: Database) -> falcon.testing.TestClient:
    """A TestClient on the app; requests come from 127.0.0.1, so no token is needed."""
    return falcon.testing.TestClient(create_app(settings, db))


class SubmitSpy:
    """Stands in for the task store's insert in tests that must never reach it."""

    def __init__(self) -> None:
        self.calls: list[list[SubmitRow]] = []

    def __call__(self, tasks: Sequence[SubmitRow]) -> list[Decided | None]:
        self.calls.append(list(tasks))
        raise AssertionError("this request should never have reached the database")


class Api:
    """The app behind a TestClient, with the helpers tests share."""

    def __init__(
        self, client: falcon.testing.TestClient, db: Database, spy: SubmitSpy | None = None
    ) -> None:
        self.client = client
        self.db = db
        self.spy = spy

    def post(self, path: str, body: Any, **kwargs: Any) -> falcon.testing.Result:
        """POSTs ``body`` encoded as JSON."""
        headers = {**JSON, **kwargs.pop("headers", {})}
        return self.client.simulate_post(path, body=json.dumps(body), headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> falcon.testing.Result:
        """GETs ``path``."""
        return self.client.simulate_get(path, **kwargs)

    def submit(self, **fields: Any) -> dict[str, Any]:
        """Submits one task and returns it, failing the test unless it was created."""
        result = self.post("/v1/tasks", {"command": "echo", **fields})
        assert result.status_code == 201, result.text
        task: dict[str, Any] = result.json
        return task

    def put(self, path: str, body: Any, **kwargs: Any) -> falcon.testing.Result:
        """PUTs ``body`` encoded as JSON."""
        headers = {**JSON, **kwargs.pop("headers", {})}
        return self.client.simulate_put(path, body=json.dumps(body), headers=headers, **kwargs)

    def sql(self, text: str, **params: Any) -> list[list[Any]]:
        """Runs SQL on the app's database: to put tasks and workers in states no request
        makes."""
        with self.db.connection() as conn:
            return conn.execute(text, **params)

    def move(self, task: dict[str, Any], status: str) -> None:
        """Moves a submitted task to ``status`` as a claim or a report would."""
        self.sql(
            "UPDATE tasks SET status = :status, worker_id = 'w-test', dispatched_at = now(),"
            " finished_at = CASE WHEN :status IN ('succeeded', 'failed', 'cancelled')"
            " THEN now() END WHERE id = CAST(:id AS uuid)",
            status=status,
            id=task["id"],
        )

    def worker(self, queues: Sequence[str], handlers: Sequence[str], state: str = "active") -> str:
        """Adds a worker row that serves ``queues`` with ``handlers``; returns its id."""
        [[count]] = self.sql("SELECT count(*) FROM workers")
        worker_id = f"w-{count + 1}"
        self.sql(
            "INSERT INTO workers (id, address, capacity, coordinator_id, handlers, queues, state)"
            " VALUES (:id, '127.0.0.1:1', 4, 'c-test', CAST(:handlers AS text[]),"
            " CAST(:queues AS text[]), :state)",
            id=worker_id,
            handlers=list(handlers),
            queues=list(queues),
            state=state,
        )
        return worker_id

    def count_tasks(self) -> int:
        """How many tasks the database holds (or the offline app tried to store)."""
        if self.spy is not None:
            return sum(len(call) for call in self.spy.calls)
        with self.db.connection() as conn:
            return int(conn.execute("SELECT count(*) FROM tasks")[0][0])


@pytest.fixture
def api(client: falcon.testing.TestClient, db: Database) -> Api:
    """The app under test, with helpers."""
    return Api(client, db)


@pytest.fixture
def offline_api() -> Iterator[Api]:
    """The app with a database it never reaches, for requests refused before any query.

    Its inserts go to a ``SubmitSpy``; anything else touching the database gets a 503.
    """
    unreachable = DatabaseSettings.from_url("postgresql://postgres@127.0.0.1:9/none")
    db = Database(unreachable, connect_timeout=1)
    spy = SubmitSpy()
    settings = SchedulerSettings(
        database=unreachable, max_payload_bytes=1024, max_batch_bytes=256 * 1024
    )
    yield Api(falcon.testing.TestClient(create_app(settings, db, submit=spy)), db, spy)
    db.close()


def _scheduler_command() -> list[str]:
    script = shutil.which("taskmill-scheduler")
    return [script] if script else [sys.executable, "-m", "taskmill.scheduler"]


def _wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + _DEADLINE
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            pytest.fail(f"the scheduler exited: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    pytest.fail(f"the scheduler did not start: {log.read_text(errors='replace')}")


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The base URL of a real ``taskmill-scheduler`` process on a free port, on the test's
    database, accepting the bearer token ``API_TOKEN``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    env.update(TASKMILL_DATABASE_URL=database_url, TASKMILL_API_TOKENS=API_TOKEN)
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_scheduler_command(), "--host", "127.0.0.1", "--port", "0"], env=env, stderr=out
        )
    try:
        yield f"http://127.0.0.1:{_wait_for_port(process, log)}"
    finally:
        process.kill()
        process.wait(timeout=_DEADLINE)
        # Printed, so a failing test shows it: a 5xx's traceback is in the scheduler's log.
        print(log.read_text(errors="replace")[-20000:])
