"""A timed-out thread handler cannot be stopped, so its retry waits for it: running copies of a
task never overlap (issue 16, point 4), whichever worker takes the retry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskmill.dev.harness import Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SUPPORT = Path(__file__).parent / "support"


def _runs(path: Path) -> dict[tuple[int, str], float]:
    """When each attempt started and ended, as ``test.overrun`` noted them."""
    if not path.exists():
        return {}
    runs = {}
    for line in path.read_text().splitlines():
        _, attempt, event, at = line.split()
        runs[int(attempt), event] = float(at)
    return runs


def test_the_retry_of_a_timed_out_thread_handler_starts_after_it_ended(cluster: Cluster) -> None:
    runs = cluster.tmp / "overrun.txt"
    pythonpath = [str(SUPPORT), *filter(None, [cluster.env.get("PYTHONPATH")])]
    cluster.env.update(PYTHONPATH=os.pathsep.join(pythonpath), TASKMILL_TEST_OVERRUN_FILE=str(runs))
    cluster.start_scheduler()
    coordinator = cluster.start_coordinator("--retry-backoff-base", "0.1", "--poll-interval", "0.2")
    # One slot and no queue each: while the first copy holds its slot, only the other worker
    # can take the retry, and would run it beside that copy if the retry did not wait.
    for _ in range(2):
        cluster.start_worker(
            coordinator,
            *("--concurrency", "1", "--queue-size", "0", "--handlers", "overrun_test_handlers"),
        )
    task = cluster.submit("test.overrun", {"seconds": 3}, max_attempts=2, timeout_seconds=0.5)

    final = cluster.wait_final([task["id"]], timeout=60)[task["id"]]
    assert final["status"] == "failed", final
    assert final["error"]["type"] == "timeout", final
    assert final["attempt"] == 2, final
    # The last attempt is reported at its deadline; its copy ends later.
    noted = wait_for(lambda: len(_runs(runs)) == 4 and _runs(runs), 30, "both runs ended")
    assert noted[2, "start"] >= noted[1, "end"], noted
