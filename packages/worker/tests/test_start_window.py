"""The window of starts asked ahead of the slots (``starts.py``): opened only for short tasks,
whose wait for an answer would be a large part of each, and shut for long ones, so a killed
worker's queue of long tasks goes to another worker unharmed."""

from __future__ import annotations

import itertools

from taskmill.common.attempts import Assignment, Held
from taskmill.worker.job import Job, JobState
from taskmill.worker.starts import SHORT_TASK_SECONDS, StartRecords

_tokens = itertools.count(1)


def _queue(records: StartRecords, count: int) -> list[Job]:
    jobs = []
    for _ in range(count):
        token = next(_tokens)
        job = Job(Assignment(f"t{token}", "x", token=token), handler=None)
        records.hold(job)
        jobs.append(job)
    return jobs


def _take(records: StartRecords, job: Job) -> None:
    job.state = JobState.RUNNING
    records.begin(job)


def test_long_tasks_are_asked_for_only_when_a_slot_takes_them() -> None:
    asked: list[Held] = []
    records = StartRecords(asked.extend, most=10)
    records.ran(1.0)
    jobs = _queue(records, 5)
    assert asked == []  # nothing asked for the queue
    for job in jobs[:3]:
        _take(records, job)
    assert [token for _, token in asked] == [job.assignment.token for job in jobs[:3]]
    assert records.window == 0


def test_short_tasks_widen_the_window_when_slots_wait_and_it_narrows_when_they_do_not() -> None:
    asked: list[Held] = []
    records = StartRecords(asked.extend, most=10)
    records.ran(SHORT_TASK_SECONDS / 10)
    jobs = _queue(records, 10)
    _take(records, jobs[0])  # its start was not asked ahead: the slot waits, the window opens
    assert records.window == 1
    assert [token for _, token in asked] == [jobs[0].assignment.token, jobs[1].assignment.token]
    records.answer([job.assignment.token for job in jobs[:2]], [])
    _take(records, jobs[1])  # recorded before its slot took it: no wait
    assert records.window == 0  # a window's worth of slots did not wait: it narrows
    for _ in range(40):
        records.ran(1.0)  # the tasks grew long
    _take(records, jobs[2])
    assert records.window == 0


def test_the_window_never_exceeds_the_queue() -> None:
    records = StartRecords(lambda tokens: None, most=3)
    records.ran(SHORT_TASK_SECONDS / 10)
    jobs = _queue(records, 12)
    for job in jobs[:8]:
        _take(records, job)  # each slot waited: the window widens, up to the queue's size
    assert records.window == 3
