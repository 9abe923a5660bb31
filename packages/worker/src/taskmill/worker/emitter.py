"""What a held task's changes send: its ``execute`` span, and its status reports.

Apart from the executor, which decides when a task starts and ends; this module only says so.
Called with the executor's lock held.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from taskmill.common.attempts import Outcome, Report, ReportStatus
from taskmill.worker.job import Job
from taskmill.worker.tracing import TaskTracer

_RUNNING = Outcome(ReportStatus.RUNNING)


class Emitter:
    """Starts and ends an attempt's span and sends its reports.

    Args:
        tracer: Makes the ``execute`` and ``report`` spans.
        report: Takes each status report (the reporter's ``add``).
    """

    def __init__(self, tracer: TaskTracer, report: Callable[[Report], None]) -> None:
        self.tracer = tracer
        self._report = report

    def begin(self, job: Job) -> None:
        """Starts the attempt's span, as a slot takes the job."""
        job.span, job.traceparent = self.tracer.start(job.assignment)
        job.recording = job.span.is_recording()

    def running(self, job: Job) -> None:
        """Reports the attempt running (folded into its final report when that comes first)."""
        self._emit(job, _RUNNING)

    def settled(self, job: Job, outcome: Outcome) -> None:
        """Reports the attempt's outcome and ends its span."""
        if not job.recording and job.span is not None:
            self._emit(job, outcome)  # an unrecorded attempt: no span to end, none to make
            return
        report_span = self.tracer.report(job.span, job.assignment, outcome.status)
        self._emit(job, outcome)
        report_span.end()
        if job.span is not None:
            self.tracer.finish(job.span, outcome)

    def _emit(self, job: Job, outcome: Outcome) -> None:
        assignment = job.assignment
        self._report(
            Report(  # positional: binding a NamedTuple's keywords is dearer
                assignment.task_id,
                assignment.attempt,
                outcome.status,
                time.time(),
                outcome.result_json,
                outcome.error,
                job.traceparent or assignment.traceparent,
                # When the handler began, for a final report (its running report's own time says).
                None if outcome is _RUNNING else job.started_at,
                True,
                assignment.token,
            )
        )
