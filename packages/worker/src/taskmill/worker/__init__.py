"""taskmill's worker: runs registered Python handlers for tasks assigned over gRPC.

Handler authors need only this::

    from taskmill.worker import TaskContext, task

    @task("resize_image")
    def resize(payload, context: TaskContext):
        ...

Importing this package registers the built-in ``echo``, ``sleep`` and ``fail`` handlers. It does
not import gRPC, so handler modules stay cheap to import in ``process=True`` children.
"""

from taskmill.worker import builtin as _builtin  # noqa: F401 - registers echo, sleep, fail
from taskmill.worker.context import CancelFlag, TaskCancelled, TaskContext
from taskmill.worker.registry import Handler, Registry, default_registry, task

__all__ = [
    "CancelFlag",
    "Handler",
    "Registry",
    "TaskCancelled",
    "TaskContext",
    "default_registry",
    "task",
]
