-- The scheduler's submit path: inserting tasks and notifying coordinators in one statement.

-- name: submit_tasks
-- The scheduler's submit path: inserts tasks given as one JSON array with one array per task,
-- its fields in SubmitRow's order (far cheaper for pg8000 to send than one array per
-- column, and for the scheduler to encode than one object per task), and notifies coordinators,
-- in one statement and so one round trip and one commit. Returns only what the database
-- decided, as one JSON array of [id, created_at, scheduled_at]; tasks whose idempotency key is
-- taken are skipped. The payload is read with -> (a JSON null stays jsonb 'null'), the other
-- fields with ->> (a JSON null becomes SQL NULL).
WITH inserted AS (
    INSERT INTO tasks (
        id, command, payload, queue, priority, max_attempts, timeout_seconds, scheduled_at,
        idempotency_key, request_hash, trace_context
    )
    SELECT
        CAST(t.task ->> 0 AS uuid), t.task ->> 1, t.task -> 2, t.task ->> 3,
        CAST(t.task ->> 4 AS int), CAST(t.task ->> 5 AS int), CAST(t.task ->> 6 AS float8),
        coalesce(
            CAST(t.task ->> 7 AS timestamptz),
            now() + make_interval(secs => CAST(t.task ->> 8 AS float8))
        ),
        t.task ->> 9, t.task ->> 10, t.task ->> 11
    FROM jsonb_array_elements(CAST(:tasks AS jsonb)) WITH ORDINALITY AS t(task, n)
    ORDER BY t.n
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, created_at, scheduled_at
),
notified AS (
    -- The payload is how many tasks were inserted, so an idle coordinator claims only as many
    -- slots as it needs (one task: one worker, and the lean claim).
    SELECT pg_notify('taskmill_submitted', CAST(count(*) AS text))
    FROM inserted
    HAVING count(*) > 0
)
SELECT
    (SELECT json_agg(json_build_array(id, created_at, scheduled_at)) FROM inserted) AS tasks,
    (SELECT count(*) FROM notified) AS notified

-- name: submit_task
-- submit_tasks for one task (POST /v1/tasks), with the same answer: its fields as parameters,
-- not one JSON document the server parses, which a lone submit waits for. The payload comes
-- as JSON text.
WITH inserted AS (
    INSERT INTO tasks (
        id, command, payload, queue, priority, max_attempts, timeout_seconds, scheduled_at,
        idempotency_key, request_hash, trace_context
    )
    VALUES (
        CAST(:id AS uuid), :command, CAST(:payload AS jsonb), :queue, CAST(:priority AS int),
        CAST(:max_attempts AS int), CAST(:timeout_seconds AS float8),
        coalesce(
            CAST(:scheduled_at AS timestamptz),
            now() + make_interval(secs => CAST(:delay_seconds AS float8))
        ),
        :idempotency_key, :request_hash, :trace_context
    )
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, created_at, scheduled_at
),
notified AS (
    SELECT pg_notify('taskmill_submitted', '1') FROM inserted
)
SELECT
    (SELECT json_agg(json_build_array(id, created_at, scheduled_at)) FROM inserted) AS tasks,
    (SELECT count(*) FROM notified) AS notified

-- name: get_tasks_by_idempotency_keys
SELECT * FROM tasks WHERE idempotency_key = ANY(CAST(:keys AS text[]))
