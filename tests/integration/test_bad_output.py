"""Bad output in a whole cluster (issue 16, point 5): a result or error the wire or the database
cannot hold fails its task once, clearly, and the worker goes on serving."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from taskmill.dev.harness import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

SUPPORT = Path(__file__).parent / "support"


def _load_handlers(cluster: Cluster) -> Path:
    """Lets the workers started from now on load the test handlers; returns their runs file."""
    runs = cluster.tmp / "runs.txt"
    pythonpath = [str(SUPPORT), *filter(None, [cluster.env.get("PYTHONPATH")])]
    cluster.env.update(PYTHONPATH=os.pathsep.join(pythonpath), TASKMILL_TEST_RUNS_FILE=str(runs))
    return runs


def test_bad_output_fails_its_task_once_and_the_worker_goes_on(cluster: Cluster) -> None:
    runs = _load_handlers(cluster)
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator()
    handlers = "cluster_test_handlers,bad_output_cluster_handlers"
    cluster.start_worker(coordinator, "--concurrency", "1", "--handlers", handlers)
    expected = {
        "bad.nul": ("result_not_serializable", "contains NUL"),
        "bad.lone_surrogate": ("result_not_serializable", "contains a lone surrogate"),
        "bad.raise_lone_surrogate": ("FileNotFoundError", "no such file: report-\\udcff.txt"),
    }
    bad = [cluster.submit(command, max_attempts=1) for command in expected]
    done = cluster.wait_final([t["id"] for t in bad])
    # The same worker, one slot: every report after the bad ones still arrives.
    after = [cluster.submit("test.record", {"n": n}) for n in range(3)]
    done |= cluster.wait_final([t["id"] for t in after])

    for task in bad:
        final = done[task["id"]]
        type_, text = expected[task["command"]]
        assert (final["status"], final["attempt"]) == ("failed", 1), final
        assert final["error"]["type"] == type_, final
        assert text in final["error"]["message"], final
    assert [done[t["id"]]["status"] for t in after] == ["succeeded"] * 3
    cluster.stop_all()  # nothing can run again
    lines = runs.read_text().splitlines()
    executions = Counter(line.split()[0] for line in lines)
    assert executions == Counter({t["id"]: 1 for t in [*bad, *after]}), executions
