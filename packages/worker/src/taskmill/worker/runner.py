"""One attempt's run on its slot thread: waiting for a recorded start, then the handler.

Timeouts of thread handlers: Python cannot kill a thread, so at a thread handler's deadline
(the watchdog's) its cancellation flag is set (cooperative handlers such as ``sleep`` then
return promptly), the attempt has failed with ``timeout``, and whatever it returns later is
discarded. Its slot stays occupied — and counted out of ``free_slots`` — until the function
returns, so a stuck handler shows up as lost capacity rather than as hidden extra threads
(the executor settles it: see ``Executor._time_out``). ``process=True`` handlers run in a child
process that the deadline kills.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from taskmill.common.attempts import Outcome
from taskmill.worker.execution import run_handler
from taskmill.worker.fence import Fence
from taskmill.worker.job import Job, JobState
from taskmill.worker.process import run_in_process
from taskmill.worker.tracing import TaskTracer
from taskmill.worker.watchdog import Watchdog

logger = logging.getLogger(__name__)

#: Seconds between looks at whether a job waiting for its start's answer, or for the fence,
#: was dropped meanwhile.
WAIT_STEP = 1.0


class Runner:
    """Runs a begun job's handler on the calling slot thread.

    Args:
        tracer: Activates the attempt's span around the handler.
        watchdog: Times out thread handlers.
        fence: Checked again after a wait for a recorded start.
        process_cancel_grace: Seconds a cancelled ``process=True`` handler may take to stop by
            itself before its process is killed.
        children: Called with +1 when a slot starts supervising a child process, -1 when done.
        begun: Called when a job whose start was recorded after its slot took it begins: marks
            it started and reports it running (sent before, the report would seldom be folded
            into the final one); ``False`` when the job was settled meanwhile.
    """

    def __init__(
        self,
        tracer: TaskTracer,
        watchdog: Watchdog[Job],
        fence: Fence,
        process_cancel_grace: float,
        children: Callable[[int], None],
        begun: Callable[[Job], bool],
    ) -> None:
        self._tracer = tracer
        self._watchdog = watchdog
        self._fence = fence
        self._process_cancel_grace = process_cancel_grace
        self._children = children
        self._begun = begun

    def run(self, job: Job) -> Outcome | None:
        """The job's outcome; ``None`` when it never ran (dropped while it waited to start)."""
        handler = job.handler
        assert handler is not None  # jobs without a handler are settled when admitted
        if job.gated and job.started_at is None:  # its start was not recorded when begun
            if not self._await_start(job):
                return None  # dropped: no longer this worker's, or the worker stopped
            if job.cancel.is_set():
                return Outcome.cancelled()  # asked to stop, or found stale, while it waited
            if not self._begun(job):
                return None  # settled meanwhile: given back in a drain
        deadline = time.monotonic() + job.timeout if job.timeout else None
        token = self._tracer.activate(job.span)  # handler logs and spans belong to the attempt
        try:
            if handler.process:
                return self._run_in_process(job, deadline)
            if deadline is not None:
                self._watchdog.watch(deadline, job)
            return run_handler(handler, job.assignment, job.cancel)
        except Exception as exc:
            logger.exception("task %s could not be run", job.assignment.task_id)
            return Outcome.failed(type(exc).__name__, f"the worker could not run the task: {exc}")
        finally:
            self._tracer.deactivate(token)

    def _await_start(self, job: Job) -> bool:
        """Waits until the job's start is recorded (``starts.py``), and the fence is open again
        if the wait outlasted it (an answer that names the job stale cancels it first); returns
        whether it may run."""
        gate = job.gate  # none when the start was recorded before the slot took the job
        while gate is not None and not gate.wait(WAIT_STEP):
            logger.debug("task %s waits for its start to be recorded", job.assignment.task_id)
        while job.state is JobState.RUNNING and not self._fence.wait_open(WAIT_STEP):
            logger.debug("no heartbeat acknowledged lately: starting nothing")
        return job.recorded and job.state is JobState.RUNNING

    def _run_in_process(self, job: Job, deadline: float | None) -> Outcome | None:
        assert job.handler is not None
        self._children(1)
        try:
            return run_in_process(
                job.handler,
                job.assignment,
                cancel=job.cancel,
                deadline=deadline,
                cancel_grace=self._process_cancel_grace,
                abandoned=lambda: job.state is JobState.DONE,
                traceparent=job.traceparent,
            )
        finally:
            self._children(-1)
