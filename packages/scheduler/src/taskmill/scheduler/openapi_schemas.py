"""The component schemas of the scheduler's OpenAPI document (``openapi.py`` has the paths).

Kept apart so each file stays readable: these describe the bodies, that one the routes.
"""

from __future__ import annotations

from typing import Any

from taskmill.common.store import WaitingReason
from taskmill.scheduler.jsonbody import MAX_DEPTH
from taskmill.scheduler.validation import (
    INT32_MAX,
    INT32_MIN,
    MAX_ATTEMPTS,
    MAX_DELAY_SECONDS,
    MAX_QUEUE_LENGTH,
    MAX_TIMEOUT_SECONDS,
)


def ref(name: str) -> dict[str, str]:
    """A reference to one of the document's component schemas."""
    return {"$ref": f"#/components/schemas/{name}"}


TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,200}$"}
QUEUE_NAME = {"type": "string", "pattern": f"^[A-Za-z0-9_.:-]{{1,{MAX_QUEUE_LENGTH}}}$"}

#: A field left out and a field sent as null mean the same: its default.
SUBMISSION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["command"],
    # scheduled_at or delay_seconds, not both.
    "not": {
        "required": ["scheduled_at", "delay_seconds"],
        "properties": {"scheduled_at": {"type": "string"}, "delay_seconds": {"type": "number"}},
    },
    "properties": {
        "command": {**NAME, "description": "The handler name."},
        "payload": {
            "description": "Any JSON; default {}. At most 256 KiB as JSON (configurable), "
            f"nested at most {MAX_DEPTH} levels deep, with finite numbers and no \\u0000."
        },
        "scheduled_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "RFC 3339 with an offset, from 1970-01-01T00:00:00Z to "
            "9999-12-30T23:59:59Z. Default: now.",
        },
        "delay_seconds": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_DELAY_SECONDS},
        "priority": {
            "type": ["integer", "null"],
            "minimum": INT32_MIN,
            "maximum": INT32_MAX,
            "default": 0,
            "description": "Higher runs first.",
        },
        "max_attempts": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_ATTEMPTS,
            "default": 1,
        },
        "timeout_seconds": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMEOUT_SECONDS,
        },
        "queue": {**QUEUE_NAME, "type": ["string", "null"], "default": "default"},
    },
}

STATUS = {
    "type": "string",
    "enum": ["scheduled", "dispatched", "running", "succeeded", "failed", "cancelled"],
}

TASK = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "command": {"type": "string"},
        "payload": {},
        "status": STATUS,
        "queue": {"type": "string"},
        "priority": {"type": "integer"},
        "attempt": {"type": "integer"},
        "max_attempts": {"type": "integer"},
        "timeout_seconds": {"type": ["number", "null"]},
        "scheduled_at": TIME,
        "created_at": TIME,
        "dispatched_at": NULLABLE_TIME,
        "started_at": NULLABLE_TIME,
        "finished_at": NULLABLE_TIME,
        "worker_id": {"type": ["string", "null"]},
        "result": {"description": "The JSON result of a succeeded task, else null."},
        "error": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "traceback": {"type": "string"},
                    },
                },
            ]
        },
        "trace_id": {"type": ["string", "null"]},
        "cancel_requested": {"type": "boolean"},
        "waiting": {
            "description": "Only in GET /v1/tasks/{task_id}: why a scheduled task whose time "
            "has come is not claimed yet, the first reason that holds in this order: its queue "
            "is paused; its queue has max_concurrency tasks dispatched or running; no active "
            "worker serves its queue with a handler for its command; it waits for a free slot. "
            "null for every other task.",
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["reason", "message"],
                    "properties": {
                        "reason": {
                            "type": "string",
                            "enum": [reason.value for reason in WaitingReason],
                        },
                        "message": {"type": "string"},
                    },
                },
            ],
        },
    },
}

WORKER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "address": {"type": "string"},
        "state": {"type": "string", "enum": ["active", "draining", "dead"]},
        "capacity": {"type": "integer"},
        "free_slots": {"type": "integer"},
        "last_heartbeat_at": TIME,
        "registered_at": TIME,
        "hostname": {"type": "string"},
        "version": {"type": "string"},
        "handlers": {"type": "array", "items": {"type": "string"}},
        "queues": {
            "type": "array",
            "description": "The queues it takes tasks from, with their weights.",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "weight": {"type": "integer"}},
            },
        },
        "concurrency": {"type": ["integer", "null"], "description": "Its slots."},
        "coordinator_id": {"type": "string"},
    },
}

PROBLEM = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

LEGACY_STATUS = {
    "type": "object",
    "required": ["task_id", "command", "scheduled_at", "status"],
    "properties": {
        "task_id": {"type": "string"},
        "command": {"type": "string"},
        "scheduled_at": TIME,
        "status": {"type": "string"},
        "picked_at": TIME,
        "started_at": TIME,
        "completed_at": TIME,
        "failed_at": TIME,
    },
}

QUEUE = {
    "type": "object",
    "required": [
        "name",
        "scheduled",
        "due",
        "running",
        "oldest_due_age_seconds",
        "workers",
        "paused",
        "max_concurrency",
    ],
    "properties": {
        "name": {"type": "string"},
        "scheduled": {"type": "integer", "description": "Its tasks scheduled, due or not."},
        "due": {"type": "integer", "description": "Its scheduled tasks whose time has come."},
        "running": {"type": "integer", "description": "Its tasks dispatched or running."},
        "oldest_due_age_seconds": {
            "type": ["number", "null"],
            "description": "How long its longest-waiting due task has been due; null when "
            "none is due.",
        },
        "workers": {"type": "integer", "description": "The active workers that serve it."},
        "paused": {"type": "boolean"},
        "max_concurrency": {
            "type": ["integer", "null"],
            "description": "The most of its tasks dispatched or running at once, cluster-wide; "
            "null for no limit.",
        },
    },
}

QUEUE_LIST = {
    "type": "object",
    "properties": {"queues": {"type": "array", "items": ref("Queue")}},
}

TASK_LIST = {
    "type": "object",
    "properties": {
        "tasks": {"type": "array", "items": ref("Task")},
        "next_cursor": {"type": ["string", "null"]},
    },
}


#: The document's ``components.schemas``.
SCHEMAS: dict[str, Any] = {
    "TaskSubmission": SUBMISSION,
    "Task": TASK,
    "Worker": WORKER,
    "Queue": QUEUE,
    "Problem": PROBLEM,
    "LegacyStatus": LEGACY_STATUS,
}
