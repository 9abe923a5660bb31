"""What the chaos test (``test_chaos.py``) runs beside its chaos: the load it submits, its
questions to the cluster, and the runs its handler noted (``chaos_test_handlers.py``)."""

from __future__ import annotations

import http.client
import random
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from taskmill.dev.harness import Cluster

BATCH, MIN_BATCHES, MAX_BATCHES, PACE = 100, 20, 40, 0.5
SLOW, RETRIED, DELAYED = 0.02, 0.1, 0.1
UNFINISHED = ("scheduled", "dispatched", "running")


def epoch(text: str) -> float:
    """Epoch seconds of a time the API gives."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def new_task(rng: random.Random) -> dict[str, Any]:
    """Mostly instant, ``max_attempts = 1`` and due now; some slow, retried or delayed."""
    seconds = round(rng.uniform(1, 3), 2) if rng.random() < SLOW else 0
    task: dict[str, Any] = {"command": "chaos.run", "payload": {"seconds": seconds}}
    task["max_attempts"] = 3 if rng.random() < RETRIED else 1
    if rng.random() < DELAYED:
        due = datetime.now(UTC) + timedelta(seconds=rng.uniform(1, 5))
        task["scheduled_at"] = due.isoformat()
    return task


class Submitter:
    """Submits batches from a thread, every ``PACE`` seconds, while its ``with`` block runs (and
    at least ``MIN_BATCHES``, unless the block failed).

    A batch the scheduler did not answer (killed, or its database away) is sent again, the same
    body under the same ``Idempotency-Key``: stored once whether or not the first one was.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.tasks: dict[str, dict[str, Any]] = {}
        self._over = threading.Event()
        self._failed = False
        self._error: BaseException | None = None
        self._rng = random.Random(16)
        self._thread = threading.Thread(target=self._run, name="chaos-submitter", daemon=True)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, failed: type[BaseException] | None, *_: object) -> None:
        self._failed = failed is not None
        self._over.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the submitter is stuck"
        if self._error is not None and not failed:
            raise self._error

    def _run(self) -> None:
        try:
            for n in range(MAX_BATCHES):
                if self._over.is_set() and (n >= MIN_BATCHES or self._failed):
                    return
                batch = [new_task(self._rng) for _ in range(BATCH)]
                for task in self._send(batch, f"chaos-batch-{n}"):
                    self.tasks[task["id"]] = task
                self._over.wait(PACE)
        except BaseException as exc:  # noqa: BLE001 - raised again by __exit__
            self._error = exc

    def _send(self, batch: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = self.cluster.request(
                    "POST", "/v1/tasks/batch", {"tasks": batch}, {"Idempotency-Key": key}
                )
            except (OSError, ValueError, http.client.HTTPException):
                status, body = 0, None  # no answer, or half of one: it may be stored
            if status in (200, 201):
                return list(body["tasks"])
            assert status in (0, 503), f"{key}: {status} {body}"
            assert time.monotonic() < deadline and not self._failed, f"{key} not accepted"
            time.sleep(0.2)


def list_tasks(cluster: Cluster, **query: str) -> list[dict[str, Any]]:
    """Every task ``GET /v1/tasks`` lists with this query, page after page."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = {"limit": "1000", **query, **({"cursor": cursor} if cursor else {})}
        status, body = cluster.request("GET", f"/v1/tasks?{urllib.parse.urlencode(page)}")
        assert status == 200, body
        tasks += body["tasks"]
        cursor = body["next_cursor"]
        if not cursor:
            return tasks


def unfinished(cluster: Cluster) -> bool:
    """Whether any task is not final yet."""
    for status in UNFINISHED:
        code, body = cluster.request("GET", f"/v1/tasks?status={status}&limit=1")
        assert code == 200, body
        if body["tasks"]:
            return True
    return False


def worker_ids(cluster: Cluster, address: str) -> set[str]:
    """The ids the worker at ``address`` was listed under."""
    return {w["id"] for w in cluster.workers() if w["address"] == address}


def held_by(cluster: Cluster, ids: set[str]) -> list[dict[str, Any]]:
    """The tasks these worker ids hold (dispatched or running)."""
    held = list_tasks(cluster, status="running") + list_tasks(cluster, status="dispatched")
    return [task for task in held if task["worker_id"] in ids]


def answers(cluster: Cluster) -> bool:
    """Whether the scheduler answers, and is ready."""
    try:
        return cluster.request("GET", "/readyz")[0] == 200
    except (OSError, ValueError, http.client.HTTPException):
        return False


class Run(NamedTuple):
    """One run of a task's handler, as it noted it."""

    attempt: int
    at: float  # epoch seconds
    runs: Path  # the file: which worker ran it


def noted_runs(files: Iterable[Path]) -> dict[str, list[Run]]:
    """Each task's runs, in the order they started, from the files the workers noted them in."""
    runs: dict[str, list[Run]] = defaultdict(list)
    for file in files:
        lines = file.read_text().splitlines() if file.exists() else []
        for task_id, attempt, at in (line.split() for line in lines):
            runs[task_id].append(Run(int(attempt), float(at), file))
    return {task_id: sorted(ran, key=lambda run: run.at) for task_id, ran in runs.items()}
