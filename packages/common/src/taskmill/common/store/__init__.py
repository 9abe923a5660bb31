"""The stores: every read and change of taskmill's tables, one store per audience.

Each store's SQL is in the ``.sql`` file beside it, as named queries. Every status change is a
conditional ``UPDATE`` on the expected status, so a stale, duplicated or reordered change
matches no row and changes nothing.

- :mod:`.submit`: the scheduler's submit path (``SubmitStore``).
- :mod:`.tasks`: the HTTP API's reads and cancellation (``TaskStore``).
- :mod:`.dispatch`: the coordinator's claim, give-backs and leases (``DispatchStore``).
- :mod:`.reports`: workers' status reports (``ReportStore``).
- :mod:`.recovery`: the tasks of lost workers and expired leases (``RecoveryStore``).
- :mod:`.workers`: the ``workers`` table (``WorkerStore``).
- :mod:`.queues`: queues as the HTTP API shows and steers them, and why a task waits
  (``QueueStore``).
- :mod:`.literals`: the array literals the queries take.
"""

from taskmill.common.attempts import Held
from taskmill.common.store.dispatch import Claim, ClaimedTask, DispatchStore, Route, Share
from taskmill.common.store.queues import QueueStats, QueueStore, Waiting, WaitingReason
from taskmill.common.store.recovery import RecoveryStore
from taskmill.common.store.reports import Applied, ReportStore
from taskmill.common.store.submit import Decided, SubmitRow, SubmitStore
from taskmill.common.store.tasks import TaskStore
from taskmill.common.store.workers import WorkerStore

__all__ = [
    "Applied",
    "Claim",
    "ClaimedTask",
    "Decided",
    "DispatchStore",
    "Held",
    "QueueStats",
    "QueueStore",
    "RecoveryStore",
    "ReportStore",
    "Route",
    "Share",
    "SubmitRow",
    "SubmitStore",
    "TaskStore",
    "Waiting",
    "WaitingReason",
    "WorkerStore",
]
