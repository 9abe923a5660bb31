"""``create_app``: the Falcon application, built from its dependencies."""

from __future__ import annotations

from typing import Any

import falcon

from taskmill.common.db import Database
from taskmill.common.store import QueueStore, SubmitStore, TaskStore, WorkerStore
from taskmill.scheduler import openapi, problems
from taskmill.scheduler.auth import AuthMiddleware
from taskmill.scheduler.batcher import SubmitBatcher
from taskmill.scheduler.queues import QueueResource, QueueService, QueuesResource, SteerResource
from taskmill.scheduler.resources import (
    BatchResource,
    CancelResource,
    HealthResource,
    Limits,
    OpenApiResource,
    ReadyResource,
    ScheduleResource,
    StatusResource,
    TaskResource,
    TasksResource,
    WorkersResource,
)
from taskmill.scheduler.service import Submit, TaskService
from taskmill.scheduler.settings import SchedulerSettings
from taskmill.scheduler.version import VERSION


def routes(service: TaskService, queues: QueueService, limits: Limits) -> list[tuple[str, Any]]:
    """Every route of the API and the resource serving it."""
    status = StatusResource(service)
    return [
        ("/v1/tasks", TasksResource(service, limits)),
        ("/v1/tasks/batch", BatchResource(service, limits)),
        ("/v1/tasks/{task_id:uuid}", TaskResource(service)),
        ("/v1/tasks/{task_id:uuid}/cancel", CancelResource(service)),
        ("/v1/workers", WorkersResource(service)),
        ("/v1/queues", QueuesResource(queues)),
        ("/v1/queues/{name}", QueueResource(queues)),
        ("/v1/queues/{name}/pause", SteerResource(queues, paused=True)),
        ("/v1/queues/{name}/resume", SteerResource(queues, paused=False)),
        ("/healthz", HealthResource(VERSION)),
        ("/readyz", ReadyResource(service)),
        ("/openapi.json", OpenApiResource(openapi.document(VERSION))),
        ("/schedule", ScheduleResource(service, limits)),
        ("/status", status),
        ("/status/{task_id:uuid}", status),
    ]


def create_app(
    settings: SchedulerSettings, db: Database, *, submit: Submit | None = None
) -> falcon.App[falcon.Request, falcon.Response]:
    """Builds the scheduler's WSGI application.

    Args:
        settings: The scheduler's settings (tokens, limits).
        db: The database pool the stores use.
        submit: How new tasks are inserted; defaults to ``SubmitStore.submit`` behind a
            ``SubmitBatcher``, so concurrent submits share commits.
    """
    submits = SubmitStore(db)
    queues = QueueStore(db)
    service = TaskService(
        db,
        TaskStore(db),
        submits,
        WorkerStore(db),
        queues,
        submit or SubmitBatcher(submits.submit),
    )
    limits = Limits(
        payload_bytes=settings.max_payload_bytes,
        body_bytes=settings.max_body_bytes,
        batch_bytes=settings.max_batch_bytes,
    )
    app: falcon.App[falcon.Request, falcon.Response] = falcon.App(
        middleware=[AuthMiddleware(settings.api_tokens)]
    )
    for path, resource in routes(service, QueueService(queues), limits):
        app.add_route(path, resource)
    problems.install(app, settings.retry_after_seconds)
    return app


def create_database(settings: SchedulerSettings) -> Database:
    """The pool the app's requests run on: a connection for each thread and two spare, each
    named query prepared once per connection, and every statement cancelled once it runs past
    ``settings.statement_timeout`` (the request is then a ``503``), so that no request holds a
    connection, or the locks it took, for minutes."""
    return Database(
        settings.database,
        max_connections=settings.threads + 2,
        application_name="taskmill-scheduler",
        prepare_statements=True,
        statement_timeout=settings.statement_timeout or None,
    )
