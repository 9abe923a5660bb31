"""The bounded queue and the executor slots that run handlers.

Room: a worker holds at most ``concurrency + queue_size`` tasks; ``concurrency`` slot threads take
them from the queue (``lanes.py``: in order, or by turns between task queues). A batch that does
not fit is refused whole, never waited for.

Timeouts of thread handlers (see ``runner.py``): when a retry may follow, the
failure is reported only once the function has returned, the task staying ``running`` (held,
listed in heartbeats) meanwhile: the coordinator schedules the retry on that report, so on
whatever worker it runs, it never runs beside the earlier copy. The last attempt, or one whose
cancellation was asked for, is reported at the deadline, as no retry follows it; for that same
reason a cancellation asked for while the report waits reports the attempt ``cancelled`` at
once. ``process=True`` handlers run in a child process that the deadline kills, so they too are
reported at the deadline.

Costs: a short task takes the executor's lock twice, once when admitted (with its batch) and
once when its slot settles it and, in the same hold, begins the next queued task. The lock is a
plain ``Lock``; the condition on it serves only ``drain`` and ``stop``, which wait for it, and is
notified only while one of them may be waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from taskmill.common.attempts import Assignment, Held, Outcome, Report
from taskmill.common.errors import TaskmillError
from taskmill.worker.emitter import Emitter
from taskmill.worker.execution import TIMEOUT, WORKER_SHUTDOWN
from taskmill.worker.fence import Fence
from taskmill.worker.holding import Holding
from taskmill.worker.job import Job, JobState, sort_out, unstarted
from taskmill.worker.lanes import job_queue
from taskmill.worker.registry import Handler
from taskmill.worker.runner import WAIT_STEP, Runner
from taskmill.worker.starts import StartRecords
from taskmill.worker.tracing import TaskTracer
from taskmill.worker.watchdog import Watchdog

logger = logging.getLogger(__name__)

_STOP_WAIT_SECONDS = 5.0


class Draining(TaskmillError):
    """The worker is shutting down and accepts no more tasks."""

    retryable = True


class NoRoom(TaskmillError):
    """The worker has no room for the whole batch."""

    retryable = True


class Executor:
    """Holds assigned tasks, runs them on slot threads, and reports every state change.

    Args:
        handlers: The handlers by command name.
        concurrency: Number of slot threads (tasks running at once).
        queue_size: How many more tasks may wait for a slot.
        report: Receives each :class:`Report`; called with the executor's lock held, so it must
            be quick and must not call back into the executor.
        process_cancel_grace: Seconds a cancelled ``process=True`` handler may take to stop by
            itself before its process is killed.
        tracer: Makes the spans of attempts (default: from the global tracer provider).
        fence: Whether a task may start now; a slot waits while it is closed (default: always
            open).
        ask: Sends a ``running`` report that records a start before the handler runs, for the
            tasks that may run at most once (``starts.py``); ``None`` starts every task at once.
        queues: The task queues served, with their weights: two or more share the slots.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int,
        queue_size: int,
        report: Callable[[Report], None],
        process_cancel_grace: float = 2.0,
        tracer: TaskTracer | None = None,
        fence: Fence | None = None,
        ask: Callable[[list[Held]], None] | None = None,
        queues: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._fence = fence or Fence()
        self._starts = StartRecords(ask, most=queue_size, queues=queues)
        self._emitter = Emitter(tracer or TaskTracer(), report)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # for drain and stop, which wait
        room = concurrency + queue_size
        self._holding = Holding(handlers, room, self._starts, self._emitter, self._changed)
        self._children = 0  # slot threads supervising a child process
        self._queue = job_queue(queues)
        self._watchdog: Watchdog[Job] = Watchdog(self._time_out)
        self._runner = Runner(
            self._emitter.tracer,
            self._watchdog,
            self._fence,
            process_cancel_grace,
            self._count_child,
            self._begin_gated,
        )
        self._threads = [
            threading.Thread(target=self._slot_loop, name=f"taskmill-slot-{n}", daemon=True)
            for n in range(concurrency)
        ]

    @property
    def concurrency(self) -> int:
        """How many tasks run at once (the slot threads)."""
        return len(self._threads)

    @property
    def capacity(self) -> int:
        """How many tasks the worker can hold at once."""
        return self._holding.capacity

    @property
    def handler_names(self) -> list[str]:
        """The commands this executor can run."""
        return sorted(self._holding.handlers)

    def start(self) -> None:
        """Starts the slot threads."""
        self._watchdog.start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stops at once: held tasks are abandoned unreported, their flags set, children killed.

        Waits a few seconds for the children of ``process=True`` handlers to be killed. A slot
        thread stuck in a thread handler is left behind (slot threads are daemons).
        """
        with self._lock:
            self._holding.abandon()
            self._holding.draining = True
            self._holding.waiting = True
            self._changed.wait_for(lambda: self._children == 0, _STOP_WAIT_SECONDS)
        for _ in self._threads:
            self._queue.put(None)
        self._watchdog.stop()

    def free_slots(self) -> int:
        """How many more tasks the worker accepts now (0 while draining)."""
        with self._lock:
            return self._holding.free()

    def held(self) -> list[Held]:
        """The tasks the worker holds, queued or running, with their assignments' tokens."""
        with self._lock:
            jobs = self._holding.jobs
            return [Held(task_id, job.assignment.token) for task_id, job in jobs.items()]

    def drop_stale(self, tokens: Collection[int]) -> int:
        """Stops the copies of tasks that are no longer this worker's (see ``fence``): a queued
        one is dropped unrun, a running one is cancelled, and nothing they report changes the
        task (their token is stale). Returns how many it found."""
        with self._lock:
            jobs = self._holding.jobs.values()
            stale = [job for job in jobs if job.assignment.token in tokens]
            news = [job for job in stale if not job.cancel.is_set()]  # logged once, not per beat
            for job in stale:
                job.cancel.set()
                if job.state is JobState.QUEUED:
                    self._holding.drop(job, Outcome.cancelled())
                elif job.state is JobState.OVERDUE:
                    self._holding.settle(job, _timed_out(job))
        for job in news:
            logger.warning(
                "task %s attempt %d is no longer this worker's: %s",
                job.assignment.task_id,
                job.assignment.attempt,
                "dropped unrun" if job.span is None else "stopped",
            )
        return len(stale)

    def admit(self, assignments: Sequence[Assignment]) -> int:
        """Accepts a whole batch or none of it; returns the free slots left.

        A task the worker already holds is skipped (a repeated delivery), not run twice.

        Raises:
            Draining: The worker is shutting down.
            NoRoom: The new tasks of the batch exceed the free slots.
        """
        with self._lock:
            holding = self._holding
            if holding.draining:
                raise Draining()
            fresh, replaced = sort_out(holding.jobs, assignments)
            free = holding.free() + len(replaced)
            if len(fresh) > free:
                raise NoRoom(f"the batch has {len(fresh)} new tasks but only {free} slots are free")
            for old in replaced:  # queued, and its token is stale: its report changes nothing
                holding.drop(old, Outcome.cancelled())
            queued = [job for assignment in fresh if (job := holding.hold(assignment))]
            free = holding.free()
        # Queued once the lock is free: a slot thread woken while it is held would only wake to
        # wait for it. A job settled meanwhile (cancelled) is skipped by the slot that takes it.
        for job in queued:
            self._queue.put(job)
        return free

    def asked(self) -> list[int]:
        """The tokens of the held tasks whose start was asked to be recorded (``starts.py``)."""
        with self._lock:
            return self._starts.asked

    def started(self, recorded: Collection[int], refused: Collection[int]) -> None:
        """The answers to the starts asked (``starts.py``): recorded ones may run, refused ones
        are given back unrun."""
        with self._lock:
            for job in self._starts.answer(recorded, refused):
                if job.state is not JobState.DONE:
                    self._holding.drop(job, Outcome.rejected())
                    logger.warning(
                        "task %s: its start could not be recorded; given back unrun",
                        job.assignment.task_id,
                    )

    def cancel(self, task_id: str) -> bool:
        """Flags a held task for cancellation; returns whether the worker held it.

        A task still in the queue is settled ``cancelled`` at once and never runs; a running one
        sees its flag and is reported when its handler stops; one past its timeout, whose report
        waits for its handler, is settled ``cancelled`` at once (no retry follows a cancel).
        """
        with self._lock:
            job = self._holding.jobs.get(task_id)
            if job is None:
                return False
            job.cancel.set()
            if job.state in (JobState.QUEUED, JobState.OVERDUE):
                self._holding.drop(job, Outcome.cancelled())
            return True

    def drain(self, grace: float) -> None:
        """Stops accepting, gives queued tasks back, and lets running ones finish.

        Queued tasks, and those whose slot still waits for their start to be recorded, are
        reported ``rejected`` (the coordinator assigns them again without counting an attempt).
        Running tasks get ``grace`` seconds; any still running then are
        flagged cancelled and reported ``failed`` with ``worker_shutdown`` (or ``timeout``, when
        past their timeout already).
        """
        deadline = time.monotonic() + grace
        with self._lock:
            holding = self._holding
            holding.draining = True
            holding.waiting = True
            for job in [job for job in holding.jobs.values() if unstarted(job)]:
                holding.drop(job, Outcome.rejected())  # never ran: given back, attempt unused
            while holding.running() and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            message = f"the worker shut down before the task finished (grace {grace:g} s)"
            for job in holding.running():
                job.cancel.set()
                if job.state is JobState.OVERDUE:
                    holding.settle(job, _timed_out(job))
                else:
                    holding.settle(job, Outcome.failed(WORKER_SHUTDOWN, message))

    # -- internals: the helpers below expect the lock held unless they take it themselves ------

    def _time_out(self, job: Job) -> None:
        """At a thread handler's deadline: reports the timeout now if no retry can follow it,
        else holds the report until the function returns (see the module docstring)."""
        with self._lock:
            if job.state is not JobState.RUNNING:
                return
            assignment = job.assignment
            # Only a cancellation sets the flag of a running job before its deadline, and the
            # coordinator retries no task whose cancellation was asked for.
            no_retry = job.cancel.is_set() or assignment.attempt >= assignment.max_attempts
            job.cancel.set()
            if no_retry:
                self._holding.settle(job, _timed_out(job))
                return
            job.state = JobState.OVERDUE
            logger.warning(
                "task %s attempt %d timed out; its retry waits for its handler to return",
                assignment.task_id,
                assignment.attempt,
            )

    # -- slot threads --------------------------------------------------------------------------

    def _count_child(self, change: int) -> None:
        with self._lock:
            self._children += change
            if change < 0:
                self._changed.notify_all()  # stop may wait for the children to be gone

    def _begin_gated(self, job: Job) -> bool:
        """A slot that waited for the job's start begins it, unless it was settled meanwhile
        (given back in a drain, which takes the lock too: never both)."""
        with self._lock:
            if job.state is not JobState.RUNNING:
                return False
            job.started_at = time.time()
            self._emitter.running(job)
            return True

    def _slot_loop(self) -> None:
        job = self._next(None, None)
        while job is not None:
            job = self._next(job, self._runner.run(job))

    def _next(self, done: Job | None, outcome: Outcome | None) -> Job | None:
        """Settles the slot's last job and begins its next; ``None`` when the slot stops.

        A job already queued is begun in the same lock hold as the settling; only an empty
        queue, or a closed fence, makes the slot block, outside the lock.
        """
        with self._lock:
            if done is not None:
                self._finish(done, outcome)
            while self._fence.is_open():
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    return None
                if self._begin(job):
                    return job
        while (job := self._queue.get()) is not None:
            # Checked again after a wait, as close to the start as can be: a fence that closed
            # meanwhile opens only once the tasks no longer this worker's are dropped.
            while job.state is JobState.QUEUED and not self._fence.wait_open(WAIT_STEP):
                logger.debug("no heartbeat acknowledged lately: starting nothing")
            with self._lock:
                if self._begin(job):
                    return job
        return None

    def _begin(self, job: Job) -> bool:
        if job.state is not JobState.QUEUED:
            return False  # cancelled or given back while it waited
        holding = self._holding
        holding.queued -= 1
        holding.busy += 1
        job.state = JobState.RUNNING
        self._emitter.begin(job)
        if job.assignment.start_recorded:
            job.started_at = time.time()  # running already: the final report says when it began
            return True
        if job.gated:
            self._starts.begin(job)
            if not job.recorded:
                return True  # the slot waits for it, then reports it running (runner.py)
            job.started_at = time.time()  # recorded ahead: its slot need not wait
        self._emitter.running(job)  # folded into the final report when that comes first
        return True

    def _finish(self, job: Job, outcome: Outcome | None) -> None:
        self._holding.busy -= 1
        if job.state is JobState.RUNNING and outcome is not None:
            if job.started_at is not None:
                self._starts.ran(time.time() - job.started_at)
            self._holding.settle(job, outcome)
        elif job.state is JobState.OVERDUE:
            # The copy is gone now, so a retry may start; what it returned late is discarded.
            self._holding.settle(job, _timed_out(job))
        elif job.state is JobState.DONE and job.gated and job.started_at is None:
            pass  # dropped before its start was recorded: it never ran
        else:
            logger.warning(
                "task %s attempt %d returned after it was settled; its result is discarded",
                job.assignment.task_id,
                job.assignment.attempt,
            )


def _timed_out(job: Job) -> Outcome:
    return Outcome.failed(TIMEOUT, f"the task exceeded its timeout of {job.timeout:g} s")
