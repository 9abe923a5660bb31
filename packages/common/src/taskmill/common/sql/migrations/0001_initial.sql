-- The tasks and workers tables.

CREATE TABLE tasks (
    id uuid PRIMARY KEY,
    -- seq orders tasks by submission for listing and keyset pagination.
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    command text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    status text NOT NULL DEFAULT 'scheduled' CHECK (
        status IN ('scheduled', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')
    ),
    queue text NOT NULL DEFAULT 'default',
    priority integer NOT NULL DEFAULT 0,
    attempt integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts integer NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_seconds double precision CHECK (timeout_seconds > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    worker_id text,
    lease_expires_at timestamptz,
    cancel_requested_at timestamptz,
    result jsonb,
    -- error is {"type": ..., "message": ..., "traceback": ...} for a failed task.
    error jsonb,
    idempotency_key text,
    -- request_hash identifies the submitted body, so a reused idempotency key with another body
    -- is told apart from a retry.
    request_hash text,
    -- trace_context is the W3C traceparent of the span that submitted the task.
    trace_context text
);

CREATE UNIQUE INDEX tasks_idempotency_key_key ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Serves the claim query; finished history is not in it, so it never slows dispatch.
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, scheduled_at)
    WHERE status = 'scheduled';

-- Serves lease recovery and per-worker lookups of tasks in flight.
CREATE INDEX tasks_in_flight_idx ON tasks (worker_id, lease_expires_at)
    WHERE status IN ('dispatched', 'running');

CREATE INDEX tasks_status_seq_idx ON tasks (status, seq DESC);
CREATE INDEX tasks_command_seq_idx ON tasks (command, seq DESC);
CREATE INDEX tasks_queue_seq_idx ON tasks (queue, seq DESC);

CREATE TABLE workers (
    id text PRIMARY KEY,
    address text NOT NULL,
    hostname text NOT NULL DEFAULT '',
    version text NOT NULL DEFAULT '',
    capacity integer NOT NULL CHECK (capacity >= 0),
    free_slots integer NOT NULL DEFAULT 0 CHECK (free_slots >= 0),
    handlers text[] NOT NULL DEFAULT '{}',
    -- coordinator_id names the coordinator the worker registered with.
    coordinator_id text NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'dead')),
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workers_heartbeat_idx ON workers (last_heartbeat_at) WHERE state <> 'dead';

-- Serves the coordinator's "when is the next task due" question.
CREATE INDEX tasks_due_idx ON tasks (scheduled_at) WHERE status = 'scheduled';
