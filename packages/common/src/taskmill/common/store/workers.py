"""The ``workers`` table, which every coordinator and the HTTP API share."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from taskmill.common.db import Database
from taskmill.common.models import DEFAULT_QUEUE, ServedQueue, Worker
from taskmill.common.store.literals import held_arrays, int_array


class WorkerStore:
    """Registers workers, records heartbeats, watches over them and finds the dead."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def register(
        self,
        *,
        address: str,
        capacity: int,
        coordinator_id: str,
        concurrency: int | None = None,
        hostname: str = "",
        version: str = "",
        handlers: Sequence[str] = (),
        queues: Sequence[ServedQueue] = (ServedQueue(DEFAULT_QUEUE),),
    ) -> Worker:
        """Records a new worker under a fresh unique id."""
        with self._db.connection() as conn:
            row = conn.row(
                "register_worker",
                id=f"w-{uuid.uuid4().hex[:12]}",
                address=address,
                hostname=hostname,
                version=version,
                capacity=capacity,
                concurrency=concurrency,
                handlers=list(handlers),
                coordinator_id=coordinator_id,
                queues=[queue.name for queue in queues],
                queue_weights=[queue.weight for queue in queues],
            )
        assert row is not None  # an INSERT ... RETURNING always returns its row
        return Worker.from_row(row)

    def heartbeat(self, worker_id: str, free_slots: int) -> Worker | None:
        """Records a heartbeat; ``None`` when the worker is unknown (it must register again)."""
        with self._db.connection() as conn:
            row = conn.row("heartbeat_worker", id=worker_id, free_slots=free_slots)
        return None if row is None else Worker.from_row(row)

    def record_started(
        self, worker_id: str, tokens: Sequence[int], asked: Sequence[tuple[str, int]] = ()
    ) -> list[int] | None:
        """Replaces the tokens of the tasks the worker may have started whose rows do not show
        it (see ``record_started_tokens``), and returns the refused tokens among ``asked`` (no
        longer the worker's claim); ``None`` when the worker is unknown."""
        ids, asked_tokens = held_arrays(asked)
        with self._db.transaction() as conn:
            if not conn.run("lock_worker", id=worker_id):
                return None
            [[_, refused]] = conn.run(
                "record_started_tokens",
                id=worker_id,
                tokens=int_array(tokens),
                asked_ids=ids,
                asked_tokens=asked_tokens,
            )
        return [int(token) for token in refused.split(",")] if refused else []

    def watch(self, dead_after: float, lapse: float) -> bool:
        """Records a liveness check and returns whether workers may be declared dead now.

        The first check ever, and the first after a break of more than ``lapse`` seconds in the
        checks of every coordinator (the database was away, or no coordinator ran), start a
        grace of ``dead_after`` seconds: heartbeats could not be recorded during the break, so
        every worker gets a full dead interval to heartbeat again.
        """
        with self._db.connection() as conn:
            return bool(conn.scalar("watch_workers", dead_after=dead_after, lapse=lapse))

    def live(self) -> list[Worker]:
        """Every live worker, oldest registration first."""
        with self._db.connection() as conn:
            return [Worker.from_row(row) for row in conn.rows("list_workers")]

    def get(self, worker_id: str) -> Worker | None:
        """One worker, or ``None``."""
        with self._db.connection() as conn:
            row = conn.row("get_worker", id=worker_id)
        return None if row is None else Worker.from_row(row)

    def adopt(self, worker_id: str, coordinator_id: str) -> Worker | None:
        """Moves a worker to another coordinator (one restarted under a new id)."""
        with self._db.connection() as conn:
            row = conn.row("adopt_worker", id=worker_id, coordinator_id=coordinator_id)
        return None if row is None else Worker.from_row(row)
