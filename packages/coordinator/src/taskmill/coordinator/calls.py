"""What the coordinator's rules need of its workers: the calls, their answers and failures.

The rules (``dispatch.py``, ``service.py``) depend on :class:`WorkerCalls`, not on how the
calls travel; ``worker_client.py`` makes them over gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from taskmill.common.errors import TaskmillError
from taskmill.common.store import ClaimedTask


class WorkerCallFailed(TaskmillError):
    """A call to a worker failed."""


class AssignRefused(WorkerCallFailed):
    """The worker did not take the tasks.

    The message says why: the status code's name and the worker's details (``DEADLINE_EXCEEDED:
    Deadline Exceeded``), or ``the worker left`` when there is no channel to it.

    Attributes:
        full: The worker answered it has no room (``RESOURCE_EXHAUSTED``): it takes tasks again
            as soon as a slot frees. Any other refusal (draining, unreachable, wrong id, too
            late) waits for the worker's next heartbeat.
        declined: The worker certainly took none of them: it answered no (full, draining,
            wrong id, a bad assignment), or nothing was sent. Unreachable or too late, it may
            have taken them all the same.
    """

    def __init__(self, message: str, *, full: bool = False, declined: bool = False) -> None:
        super().__init__(message)
        self.full = full
        self.declined = declined or full


class AssignResult(NamedTuple):
    """A worker's answer to an assignment.

    Attributes:
        free_slots: The room the worker says it has left.
        seconds: How long the call took, from sending the request to the answer.
    """

    free_slots: int
    seconds: float


class WorkerCalls(Protocol):
    """The calls the coordinator makes to its workers."""

    def assign(
        self,
        worker_id: str,
        tasks: Sequence[ClaimedTask],
        traceparents: Sequence[str],
        timeout: float,
    ) -> AssignResult:
        """Sends a worker its tasks in one call.

        Raises:
            AssignRefused: The worker did not take them.
        """

    def cancel(self, worker_id: str, task_id: str, timeout: float) -> bool:
        """Asks a worker to cancel a task; returns whether it said it held the task.

        Raises:
            WorkerCallFailed: The call failed.
        """
