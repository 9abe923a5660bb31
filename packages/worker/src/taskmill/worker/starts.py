"""Starts recorded before they happen: how a task that may run at most once survives its
worker's crash without running twice.

A worker's ``running`` report usually travels with, or after, the task's end (it is folded
into the final report); a worker killed meanwhile would leave its task ``dispatched``, which
recovery gives to another worker, as it cannot tell a task that started from one still
queued. So a task with no retry left (its attempt is its last) runs only once its start is
recorded: either by the claim itself (it went to an idle slot: ``Assignment.start_recorded``),
or by its token being in the worker's started tokens, the set the worker keeps in its
``workers`` row (``asker.py``), which recovery reads when the worker is lost. A task with a
retry left starts at once: a lost worker's task is retried anyway.

A start is asked for when a slot takes the task (the asks of all slots that became due while
the last call was in flight go in one call), and the slot waits for the answer: a round trip,
a millisecond or a few, which is little against a task of 50 ms or more (``SHORT_TASK_SECONDS``,
on a moving average of run times). For shorter tasks that wait would be a large part of each,
so the starts of the next ``window`` queued tasks are asked for ahead of the slots, in the
order the slots will take them. The window opens when a slot had to wait for a start the window
held back, widens by a quarter each time, narrows by one after a window's worth of slots found
their start recorded, and shuts when tasks grow long; it stays near the tasks a worker starts in
one round trip. Only tasks still queued count in it. A worker serving several queues takes turns
between their lanes (``lanes.py``), so it keeps a window per lane, over that lane's next tasks
(first in first out within a lane): each lane's stays near the tasks the slots take from it in
one round trip, and a lane whose tasks are taken as they come (a light queue beside another's
backlog) has them asked as they come, rather than widening a window over the backlog. The
price: a worker killed fails, besides the tasks its slots held, the queued tasks whose start was
asked ahead (``worker_lost``, like a running one), at most its windows' worth, and only while
its tasks are short; its other queued tasks go to another worker unharmed, as does everything a
live worker gives back itself (a drain). And one small write per call.

Not thread-safe: the executor calls it with its lock held.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection, Sequence

from taskmill.common.attempts import Held
from taskmill.worker.job import Job, JobState

#: Handlers shorter than this on average have starts asked ahead of the slots: a slot's wait
#: for the answer (a round trip, a millisecond or a few) would be a large part of each task.
#: Longer ones are asked for only when a slot takes them.
SHORT_TASK_SECONDS = 0.05


class _Lane:
    """The jobs of one lane of the executor's queue (the only one of a worker serving one queue)
    whose start is asked ahead, and its window."""

    __slots__ = ("ahead", "hits", "unasked", "window")

    def __init__(self) -> None:
        # Gated and queued, not asked, in queue order; jobs taken or settled meanwhile are
        # dropped as they come up.
        self.unasked: deque[Job] = deque()
        self.ahead: set[Job] = set()  # asked ahead and still queued
        self.window = 0
        self.hits = 0  # slots in a row that found their job's start recorded


class StartRecords:
    """Records the starts of the tasks that may run at most once before they run.

    Args:
        ask: Sends the tasks whose start must be recorded, the answer coming back to
            :meth:`answer`; ``None`` starts every task at once (nothing to record them with).
        most: The largest window: how many queued tasks may have their start asked for ahead
            of a slot in a lane (how many tasks the worker may hold).
        queues: The task queues served, as the executor's queue is given them (``lanes.py``):
            two or more have a lane each, and so a window each (their weights do not matter:
            each window follows the pace its lane is taken at).
    """

    def __init__(
        self,
        ask: Callable[[list[Held]], None] | None,
        *,
        most: int,
        queues: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._ask = ask
        self._most = most
        self._run_time: float | None = None  # a moving average of handlers' run times
        self._lane = _Lane()  # the one lane of a worker serving one queue
        self._lanes: dict[str, _Lane] | None = {} if len(queues) > 1 else None  # by queue
        self._waiting: dict[int, Job] = {}  # asked, not answered, by token
        self._held: set[int] = set()  # the tokens of the jobs asked for and not yet settled

    @property
    def window(self) -> int:
        """How many queued tasks may have their start asked for ahead of a slot now (in all
        lanes)."""
        if self._lanes is None:
            return self._lane.window
        return sum(lane.window for lane in self._lanes.values())

    def hold(self, job: Job) -> None:
        """Takes a newly queued job: one that may run only once waits for its start, asked
        for now if the window has room."""
        assignment = job.assignment
        if self._ask is None or not assignment.token:
            return  # no coordinator to record it with: a worker test, or one older than tokens
        if assignment.start_recorded:
            return  # claimed for an idle slot: the claim recorded its start
        if assignment.attempt < assignment.max_attempts:
            return  # a retry follows a lost worker anyway: no need to wait
        job.gated = True
        lane = self._lane_of(job)
        lane.unasked.append(job)
        self._fill(lane, [])
        job.deferred = not job.asked

    def begin(self, job: Job) -> None:
        """A slot took the job: asks for its start unless asked already, adapts the window,
        and asks for the next queued jobs' starts."""
        asks: list[Held] = []
        lane = self._lane_of(job)
        if job.asked:
            lane.ahead.discard(job)
        else:
            self._take(job, asks)
        if not job.recorded:
            job.gate = threading.Event()  # made only for a slot that waits: it costs
        self._adapt(lane, job)
        self._fill(lane, asks)

    @property
    def asked(self) -> list[int]:
        """The tokens of the jobs asked for and not settled yet."""
        return list(self._held)

    def settled(self, job: Job) -> None:
        """Forgets a settled job (its reports, until acknowledged, keep its token live)."""
        self._held.discard(job.assignment.token)
        self._lane_of(job).ahead.discard(job)  # one settled while queued: cancelled, given back

    def answer(self, recorded: Collection[int], refused: Collection[int]) -> list[Job]:
        """Opens the gates of the jobs whose start is recorded; returns the refused ones, for the
        executor to drop (their gates open when they are settled)."""
        for token in recorded:
            job = self._waiting.pop(token, None)
            if job is not None:
                job.recorded = True
                if job.gate is not None:
                    job.gate.set()
        return [job for token in refused if (job := self._waiting.pop(token, None)) is not None]

    def ran(self, seconds: float) -> None:
        """A handler ran this long: how much a wait for a start costs against it."""
        previous = self._run_time
        self._run_time = seconds if previous is None else previous + (seconds - previous) / 8

    def _lane_of(self, job: Job) -> _Lane:
        lanes = self._lanes
        if lanes is None:
            return self._lane
        lane = lanes.get(job.assignment.queue)
        if lane is None:
            lane = lanes[job.assignment.queue] = _Lane()
        return lane

    def _adapt(self, lane: _Lane, job: Job) -> None:
        """Widens the job's lane's window when a slot waits for a start that the window held
        back, while tasks are short (the wait is then a large part of each); narrows it slowly
        while slots find their start recorded, and shuts every window while tasks are long."""
        if self._run_time is None or self._run_time >= SHORT_TASK_SECONDS:
            lane.window = 0  # a round trip is little against the run: strict, queue intact
            if self._lanes:  # the run times are the worker's: every lane's shuts
                for other in self._lanes.values():
                    other.window = 0
        elif job.recorded:
            lane.hits += 1
            if lane.hits >= lane.window > 0:
                lane.window -= 1
                lane.hits = 0
        elif job.deferred:
            lane.hits = 0
            lane.window = min(self._most, lane.window + max(1, lane.window // 4))

    def _fill(self, lane: _Lane, asks: list[Held]) -> None:
        """Asks for starts (``asks`` and more) until ``window`` queued jobs of the lane have
        theirs asked."""
        ahead, unasked = lane.ahead, lane.unasked
        while unasked:
            job = unasked[0]
            if job.state is JobState.QUEUED and not job.asked:
                if len(ahead) >= lane.window:
                    break
                ahead.add(job)
                self._take(job, asks)
            unasked.popleft()  # asked now, or taken by a slot or settled since it was queued
        if asks:
            assert self._ask is not None
            self._ask(asks)  # one hand-over for all: the asker's wake-up costs

    def _take(self, job: Job, asks: list[Held]) -> None:
        task_id, token = job.assignment.task_id, job.assignment.token
        job.asked = True
        self._waiting[token] = job
        self._held.add(token)
        asks.append(Held(task_id, token))
