"""The window of starts asked ahead of the slots (``starts.py``): opened only for short tasks,
whose wait for an answer would be a large part of each, and shut for long ones, so a killed
worker's queue of long tasks goes to another worker unharmed."""

from __future__ import annotations

import gc
import itertools
from collections import Counter

from taskmill.common.attempts import Assignment, Held
from taskmill.worker.job import Job, JobState
from taskmill.worker.lanes import job_queue
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


def test_a_job_settled_while_queued_gives_its_place_in_the_window_back() -> None:
    asked: list[Held] = []
    records = StartRecords(asked.extend, most=3)
    records.ran(SHORT_TASK_SECONDS / 10)
    jobs = _queue(records, 12)
    for job in jobs[:8]:
        _take(records, job)
    assert records.window == 3
    assert [token for _, token in asked[-3:]] == [job.assignment.token for job in jobs[8:11]]
    cancelled = jobs[9]  # asked ahead, behind one still queued
    cancelled.state = JobState.DONE
    records.settled(cancelled)
    _queue(records, 1)  # any change asks again: the next queued job takes its place
    assert asked[-1].token == jobs[11].assignment.token


def test_long_tasks_taken_are_not_kept() -> None:
    # With the window shut nothing is asked ahead; the jobs taken must not pile up meanwhile.
    asked: list[Held] = []
    records = StartRecords(asked.extend, most=10)
    records.ran(1.0)
    before = _jobs_alive()
    for _ in range(300):
        (job,) = _queue(records, 1)
        _take(records, job)
        records.answer([token for _, token in asked], [])
        asked.clear()
        job.state = JobState.DONE
        records.settled(job)
    del job
    assert _jobs_alive() - before < 10


def _jobs_alive() -> int:
    gc.collect()
    return sum(type(thing) is Job for thing in gc.get_objects())


# -- a worker serving several queues: its lanes ------------------------------------------------

#: The coordinator answers a call this many slot takes after it was sent (a round trip).
ROUND_TRIP = 2


class _Worker:
    """Start records and the executor's queue driven as the executor drives them, one slot
    take at a time, each task short and over as soon as it starts."""

    def __init__(self, queues: tuple[tuple[str, int], ...]) -> None:
        self.records = StartRecords(self._ask, most=200, queues=queues)
        self.records.ran(SHORT_TASK_SECONDS / 10)
        self.queue = job_queue(queues)
        self.calls: list[tuple[int, list[int]]] = []  # (takes when sent, tokens)
        self.queued: list[Job] = []
        self.taken = 0
        self.seen: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()  # slots that found their start recorded
        self.widest = 0  # the widest window
        self.most_asked = 0  # the most queued jobs asked ahead at once

    def _ask(self, held: list[Held]) -> None:
        self.calls.append((self.taken, [token for _, token in held]))

    def arrive(self, queue_name: str, count: int = 1) -> None:
        for _ in range(count):
            token = next(_tokens)
            job = Job(Assignment(f"t{token}", "x", token=token, queue=queue_name), handler=None)
            self.records.hold(job)
            self.queue.put(job)
            self.queued.append(job)

    def take(self) -> None:
        job = self.queue.get_nowait()
        assert job is not None
        self.taken += 1
        _take(self.records, job)
        self.seen[job.assignment.queue] += 1
        self.hits[job.assignment.queue] += job.recorded
        while self.calls and self.calls[0][0] <= self.taken - ROUND_TRIP:
            self.records.answer(self.calls.pop(0)[1], [])
        job.state = JobState.DONE
        self.records.settled(job)
        self.records.ran(SHORT_TASK_SECONDS / 10)
        self.queued = [job for job in self.queued if job.state is JobState.QUEUED]
        asked = sum(job.asked for job in self.queued)
        self.widest = max(self.widest, self.records.window)
        self.most_asked = max(self.most_asked, asked)


def test_starts_are_asked_ahead_in_each_lane_as_the_slots_take_them() -> None:
    # A burst of a, then some b: the slots take a and b in turn, so b's are asked ahead too,
    # and the window stays near the starts of one round trip, as with one queue.
    worker = _Worker((("a", 1), ("b", 1)))
    worker.arrive("a", 150)
    worker.arrive("b", 50)
    for _ in range(200):
        worker.take()
    assert worker.widest <= 10
    assert worker.most_asked <= 8  # not the whole queue: a crash fails only these
    assert worker.hits["b"] >= 25
    assert worker.hits.total() >= 130


def test_a_light_queue_beside_a_backlog_does_not_widen_the_window_over_the_backlog() -> None:
    # b's backlog waits its turns; a's tasks are taken as they come, before their start can be
    # recorded: that must not make the worker ask the backlog's starts.
    worker = _Worker((("a", 3), ("b", 1)))
    worker.arrive("b", 100)
    for step in range(400):
        worker.arrive("a" if step % 2 else "b")
        worker.take()
    assert worker.most_asked <= 6
    assert worker.widest <= 6
    assert worker.hits["b"] >= 0.6 * worker.seen["b"]


def test_one_queue_asks_as_it_always_did() -> None:
    # The lanes' windows add up to one queue's when a worker serves one queue.
    worker = _Worker((("a", 1),))
    worker.arrive("a", 200)
    for _ in range(200):
        worker.take()
    assert (worker.widest, worker.most_asked, worker.hits.total()) == (5, 5, 154)
