"""The queues a worker serves: ``--queues``, their registration, and the slots' turns between
them (``lanes.py``)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from worker_test_handlers import NOTED, RELEASES
from worker_testkit import FakeCoordinator, assign_request, assignment, wait_for

from taskmill.common.attempts import Assignment
from taskmill.common.errors import ConfigError
from taskmill.worker.__main__ import build_parser, settings_from
from taskmill.worker.app import Worker
from taskmill.worker.job import Job
from taskmill.worker.lanes import Lanes
from taskmill.worker.settings import WorkerSettings


def _queues(argv: list[str], env: dict[str, str] | None = None) -> tuple[tuple[str, int], ...]:
    env = env or {}
    return settings_from(build_parser(env).parse_args(argv), env).queues


def test_queues_come_from_the_flag_or_the_variable_with_weight_1_by_default():
    assert _queues([]) == (("default", 1),)
    assert WorkerSettings().queues == (("default", 1),)
    assert _queues(["--queues", "a,b"]) == (("a", 1), ("b", 1))
    assert _queues(["--queues", "a=3, b=1,c"]) == (("a", 3), ("b", 1), ("c", 1))
    assert _queues(["--queues", "emails.v2:eu-west_1"]) == (("emails.v2:eu-west_1", 1),)
    env = {"TASKMILL_WORKER_QUEUES": "x=2,y"}
    assert _queues([], env) == (("x", 2), ("y", 1))
    assert _queues(["--queues", "z"], env) == (("z", 1),)  # the flag wins
    assert _queues([], {"TASKMILL_WORKER_QUEUES": ""}) == (("default", 1),)  # empty: unset


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty queue name"),
        ("a,,b", "empty queue name"),
        ("a,", "empty queue name"),
        ("=3", "empty queue name"),
        ("a,a", "'a' twice"),
        ("a=1,b,a=2", "'a' twice"),
        ("a=0", "weight of queue 'a'"),
        ("a=-1", "weight of queue 'a'"),
        ("a=+2", "weight of queue 'a'"),
        ("a=1.5", "weight of queue 'a'"),
        ("a=x", "weight of queue 'a'"),
        ("a=", "weight of queue 'a'"),
        ("a=1001", "weight of queue 'a'"),
        ("a b", "letters, digits"),
        ("a/b", "letters, digits"),
        ("q" * 101, "letters, digits"),
    ],
)
def test_a_bad_queues_value_is_refused_naming_the_flag(text: str, problem: str):
    with pytest.raises(ConfigError, match="--queues") as raised:
        _queues(["--queues", text])
    assert problem in raised.value.message
    with pytest.raises(ConfigError, match="--queues"):
        _queues([], {"TASKMILL_WORKER_QUEUES": text or ","})


def test_settings_check_the_queues_they_are_given():
    assert WorkerSettings(queues=(("a", 1000), ("b", 1))).queues == (("a", 1000), ("b", 1))
    for queues in [(), (("a", 0),), (("a", 1), ("a", 2)), (("", 1),), (("a", True),)]:
        with pytest.raises(ConfigError, match="--queues"):
            WorkerSettings(queues=queues)


def test_the_entry_point_refuses_bad_queues_in_one_line_and_exit_1():
    command = [sys.executable, "-m", "taskmill.worker", "--queues", "a=3,a"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr == "taskmill-worker: --queues names queue 'a' twice\n"


def test_registration_names_the_queues_with_their_weights(coordinator, start_worker):
    start_worker(queues=(("images", 3), ("emails", 1)))
    assert coordinator.served(1) == [("images", 3), ("emails", 1)]
    start_worker()
    assert coordinator.served(2) == [("default", 1)]


def test_registering_again_names_the_queues_again(coordinator, start_worker):
    start_worker(queues=(("a", 2), ("b", 1)))
    coordinator.wait_registered(1)
    coordinator.forget_all()  # as a restarted coordinator: the next heartbeat is NOT_FOUND
    assert coordinator.served(2) == [("a", 2), ("b", 1)]


# -- the slots' turns between queues ----------------------------------------------------------


def _run_order(
    coordinator: FakeCoordinator,
    worker: Worker,
    stub: Any,
    burst: list[tuple[str, int]],
    blocker_queue: str,
) -> list[str]:
    """The queues of the tasks of ``burst`` ((queue, how many)) in the order the worker's one slot
    ran them, all of them assigned in one batch while the slot was busy (with a task of
    ``blocker_queue``, whose lane is empty again by then: the turns begin at the burst's first
    queue)."""
    worker_id = wait_for(lambda: worker.worker_id, what="the worker registered")
    blocker = assignment("test.wait_for_release", queue=blocker_queue)
    RELEASES[blocker.task_id] = threading.Event()
    stub.AssignTasks(assign_request(worker_id, blocker))
    wait_for(lambda: blocker.task_id in NOTED, what="the slot taken")
    tasks = [assignment("test.note", queue=name) for name, count in burst for _ in range(count)]
    stub.AssignTasks(assign_request(worker_id, *tasks))
    RELEASES[blocker.task_id].set()
    for task in tasks:
        coordinator.wait_final(task.task_id)
    queue_of = {task.task_id: task.queue for task in tasks}
    return [queue_of[task_id] for task_id in NOTED if task_id in queue_of]


@pytest.fixture
def run_order(
    coordinator: FakeCoordinator, start_worker: Callable[..., Worker], worker_stub: Any
) -> Callable[..., list[str]]:
    def run(
        queues: tuple[tuple[str, int], ...], burst: list[tuple[str, int]], blocker_queue: str
    ) -> list[str]:
        worker = start_worker(concurrency=1, queue_size=40, queues=queues)
        return _run_order(coordinator, worker, worker_stub(worker), burst, blocker_queue)

    return run


def _positions(order: list[str], name: str) -> list[int]:
    return [n for n, queue_name in enumerate(order) if queue_name == name]


def test_a_burst_in_one_queue_does_not_hold_back_another(run_order):
    order = run_order((("a", 1), ("b", 1)), [("a", 20), ("b", 2)], "b")
    assert _positions(order, "b") == [1, 3]  # a b a b, then the rest of a
    assert len(order) == 22


def test_weights_give_each_queue_its_share_of_the_slots(run_order):
    order = run_order((("a", 3), ("b", 1)), [("a", 20), ("b", 4)], "b")
    assert _positions(order, "b") == [3, 7, 11, 15]  # a a a b, four times over
    order = run_order((("a", 1), ("b", 3)), [("a", 20), ("b", 4)], "a")
    assert _positions(order, "b") == [1, 2, 3, 5]  # a b b b a b, then the rest of a


def test_a_single_queue_worker_runs_its_tasks_in_arrival_order(run_order):
    # Even tasks of other queues (a coordinator older than queues sends any): one FIFO.
    order = run_order((("default", 1),), [("a", 20), ("b", 2), ("default", 3)], "default")
    assert order == ["a"] * 20 + ["b"] * 2 + ["default"] * 3


# -- the lanes themselves ---------------------------------------------------------------------


def _job(queue_name: str) -> Job:
    return Job(Assignment(str(uuid.uuid4()), "x", queue=queue_name), None)


def test_lanes_hand_out_a_stop_before_jobs_and_wake_a_waiting_slot():
    lanes = Lanes({"a": 1, "b": 1})
    with pytest.raises(queue.Empty):
        lanes.get_nowait()
    got: list[Job | None] = []
    slot = threading.Thread(target=lambda: got.append(lanes.get()))
    slot.start()
    job = _job("a")
    lanes.put(job)
    slot.join(15)
    assert got == [job]
    lanes.put(_job("b"))
    lanes.put(None)  # the executor stops its slots only once every job is settled
    assert lanes.get_nowait() is None
    assert lanes.get_nowait() is not None
    with pytest.raises(queue.Empty):
        lanes.get_nowait()


def test_a_queue_not_served_gets_a_lane_of_weight_1():
    lanes = Lanes({"a": 2, "b": 1})
    jobs = [_job(name) for name in ["a"] * 4 + ["old"] * 2 + ["b"] * 2]
    for job in jobs:
        lanes.put(job)
    taken = [lanes.get_nowait() for _ in jobs]
    assert [job.assignment.queue for job in taken if job is not None] == [
        *("a", "a", "old", "b", "a", "a", "old", "b"),
    ]
