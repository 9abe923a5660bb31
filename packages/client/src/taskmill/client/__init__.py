"""taskmill's Python client: submit tasks to the scheduler over HTTP and follow them.

Example:
    >>> from taskmill.client import Client
    >>> client = Client()  # TASKMILL_URL and TASKMILL_TOKEN, else http://127.0.0.1:8081
    >>> task = client.submit("echo", {"hello": "world"})  # doctest: +SKIP
    >>> client.wait(task.id).status  # doctest: +SKIP
    'succeeded'
"""

from taskmill.client._client import BATCH_LIMIT, DEFAULT_URL, Client
from taskmill.client._errors import (
    AuthError,
    Conflict,
    FieldProblem,
    NotFound,
    QueueNotFound,
    ServerError,
    TaskFailed,
    TaskmillClientError,
    TaskNotFound,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from taskmill.client._models import (
    FINAL_STATUSES,
    Queue,
    SubmitSpec,
    Task,
    TaskError,
    TaskStatus,
    Waiting,
    Worker,
)

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_URL",
    "FINAL_STATUSES",
    "AuthError",
    "Client",
    "Conflict",
    "FieldProblem",
    "NotFound",
    "Queue",
    "QueueNotFound",
    "ServerError",
    "SubmitSpec",
    "Task",
    "TaskError",
    "TaskFailed",
    "TaskNotFound",
    "TaskStatus",
    "TaskmillClientError",
    "Unavailable",
    "ValidationError",
    "WaitTimeout",
    "Waiting",
    "Worker",
]
