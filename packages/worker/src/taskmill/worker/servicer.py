"""The gRPC ``WorkerService``: parses requests, calls the executor, maps its errors to codes."""

from __future__ import annotations

import logging

import grpc

from taskmill.common.attempts import Assignment
from taskmill.v1 import worker_pb2, worker_pb2_grpc
from taskmill.worker.executor import Draining, Executor, NoRoom
from taskmill.worker.membership import Membership

logger = logging.getLogger(__name__)

#: How long an assignment addressed to an id waits for a registration still in flight.
ID_WAIT_SECONDS = 2.0
#: An assignment is refused when less than this is left of its caller's deadline: the answer
#: would arrive too late, and the coordinator, having given the tasks to another worker, would
#: see them run twice.
LATE_MARGIN_SECONDS = 0.05


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    """Serves ``AssignTasks`` and ``CancelTask``.

    Status codes: ``FAILED_PRECONDITION`` for a batch addressed to another worker id, or while
    draining, ``INVALID_ARGUMENT`` for an assignment without task id or command,
    ``DEADLINE_EXCEEDED`` when the caller's deadline has passed or nearly (see
    ``LATE_MARGIN_SECONDS``), ``RESOURCE_EXHAUSTED`` when the batch exceeds the free slots.
    With each, nothing of the batch is accepted; the coordinator counts on it (``UNAVAILABLE``
    would not say so: the transport answers it too, for a call that may have arrived).
    """

    def __init__(
        self, executor: Executor, membership: Membership, *, id_wait: float = ID_WAIT_SECONDS
    ) -> None:
        self._executor = executor
        self._membership = membership
        self._id_wait = id_wait

    def AssignTasks(
        self, request: worker_pb2.AssignTasksRequest, context: grpc.ServicerContext
    ) -> worker_pb2.AssignTasksResponse:
        """Accepts the whole batch or none of it."""
        if not self._membership.matches(request.worker_id, self._id_wait):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this is worker {self._membership.worker_id!r}, not {request.worker_id!r}",
            )
        assignments = list(map(Assignment.from_proto, request.assignments))
        if any(not a.task_id or not a.command for a in assignments):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "every assignment needs an id and a command"
            )
        left = context.time_remaining()
        if left is not None and left < LATE_MARGIN_SECONDS:
            logger.warning(
                "refused %d tasks that came too late: %.3f s left of the caller's deadline",
                len(assignments),
                left,
            )
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the assignment came too late: its caller has given up, or is about to",
            )
        try:
            free_slots = self._executor.admit(assignments)
        except Draining as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, exc.message)
        except NoRoom as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)
        return worker_pb2.AssignTasksResponse(free_slots=free_slots)

    def CancelTask(
        self, request: worker_pb2.CancelTaskRequest, context: grpc.ServicerContext
    ) -> worker_pb2.CancelTaskResponse:
        """Flags the task; ``found`` says whether this worker held it."""
        return worker_pb2.CancelTaskResponse(found=self._executor.cancel(request.task_id))
