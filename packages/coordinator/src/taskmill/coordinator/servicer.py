"""The gRPC ``CoordinatorService``: parses each request, calls the service, maps errors once."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

import grpc

from taskmill.common.attempts import Report, task_id_text
from taskmill.common.errors import DatabaseUnavailable, InvalidTransition, TaskmillError
from taskmill.common.models import ServedQueue
from taskmill.common.store import Held
from taskmill.coordinator.service import CoordinatorService, InvalidRequest, UnknownWorker
from taskmill.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CODES: list[tuple[type[TaskmillError], grpc.StatusCode]] = [
    (UnknownWorker, grpc.StatusCode.NOT_FOUND),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidTransition, grpc.StatusCode.FAILED_PRECONDITION),
    (DatabaseUnavailable, grpc.StatusCode.UNAVAILABLE),
]


def status_code(error: TaskmillError) -> grpc.StatusCode:
    """The gRPC status code of a taskmill error."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.UNAVAILABLE if error.retryable else grpc.StatusCode.INTERNAL


def _call(context: grpc.ServicerContext, method: Callable[[], T]) -> T:
    try:
        return method()
    except TaskmillError as exc:
        code = status_code(exc)
        if code is grpc.StatusCode.INTERNAL:
            logger.error("%s", exc.message)
        context.abort(code, exc.message)


def _held(tasks: Iterable[common_pb2.HeldTask], legacy_ids: Iterable[str]) -> list[Held]:
    """The tasks a worker says it holds, with their tokens; the ids of a worker older than
    tokens come with token 0. One id may come with two tokens (a copy given back and claimed
    again, whose report is still unacknowledged): both are kept, each answered for itself.
    Malformed ids are logged and left out (they go into an array literal, so each is checked
    to be a uuid)."""
    held: set[Held] = set()
    legacy = (common_pb2.HeldTask(task_id=task_id) for task_id in legacy_ids)
    for task in itertools.chain(tasks, legacy):
        try:
            held.add(Held.from_proto(task))
        except ValueError:
            logger.warning("ignoring malformed task id %r", task.task_id)
    return list(held)


def _parse_reports(
    reports: Iterable[common_pb2.StatusReport],
) -> tuple[list[Report], list[Held]]:
    """Splits reports into outcomes and rejections; malformed ones are logged and dropped, so a
    worker retrying its buffer is never stuck on one bad report. (A result that is not JSON is
    the database's to refuse: see ``CoordinatorService.report``.)"""
    outcomes: list[Report] = []
    rejected: list[Held] = []
    from_proto, is_rejection = Report.from_proto, Report.is_rejection  # bound once, not per report
    for report in reports:
        try:
            if is_rejection(report):
                rejected.append(Held(task_id_text(report.task_id), report.token))
            else:
                outcomes.append(from_proto(report))
        except ValueError as exc:
            logger.warning("ignoring malformed report for task %r: %s", report.task_id, exc)
    return outcomes, rejected


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """Serves workers."""

    def __init__(self, service: CoordinatorService, heartbeat_interval: float) -> None:
        self._service = service
        self._heartbeat_interval = heartbeat_interval

    def RegisterWorker(
        self, request: coordinator_pb2.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RegisterWorkerResponse:
        worker = _call(
            context,
            lambda: self._service.register(
                address=request.address,
                capacity=request.capacity,
                hostname=request.hostname,
                version=request.version,
                handlers=list(request.handlers),
                concurrency=request.concurrency or None,  # 0: a worker older than the field
                queues=[ServedQueue(queue.name, queue.weight) for queue in request.queues],
            ),
        )
        held = _held(request.held, ())
        stale = _call(context, lambda: self._service.keep_held(worker.id, held))
        return coordinator_pb2.RegisterWorkerResponse(
            worker_id=worker.id,
            heartbeat_interval_seconds=self._heartbeat_interval,
            lease_seconds=self._service.lease_seconds,
            stale_tokens=stale,
        )

    def Heartbeat(
        self, request: coordinator_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.HeartbeatResponse:
        held = _held(request.held, request.running_task_ids)
        cancel, stale = _call(
            context, lambda: self._service.heartbeat(request.worker_id, request.free_slots, held)
        )
        return coordinator_pb2.HeartbeatResponse(
            cancel_task_ids=[str(i) for i in cancel], stale_tokens=stale
        )

    def ReportTaskStatuses(
        self, request: coordinator_pb2.ReportTaskStatusesRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ReportTaskStatusesResponse:
        outcomes, rejected = _parse_reports(request.reports)
        applied = _call(
            context, lambda: self._service.report(request.worker_id, outcomes, rejected)
        )
        return coordinator_pb2.ReportTaskStatusesResponse(applied=applied)

    def RecordStarts(
        self, request: coordinator_pb2.RecordStartsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.RecordStartsResponse:
        try:
            asked = Held.from_columns(request.asked_task_ids, request.asked_tokens)
        except ValueError:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "asked_task_ids and asked_tokens differ"
            )
        refused = _call(
            context,
            lambda: self._service.record_starts(request.worker_id, request.tokens, asked),
        )
        return coordinator_pb2.RecordStartsResponse(refused_tokens=refused)

    def DeregisterWorker(
        self, request: coordinator_pb2.DeregisterWorkerRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.DeregisterWorkerResponse:
        _call(context, lambda: self._service.deregister(request.worker_id))
        return coordinator_pb2.DeregisterWorkerResponse()
