-- Queries on the tasks table. Every status change is a conditional UPDATE on the expected
-- status (and attempt), so a late, duplicated or reordered change matches no row.

-- name: insert_tasks
INSERT INTO tasks (
    id, command, payload, queue, priority, max_attempts, timeout_seconds, scheduled_at,
    idempotency_key, request_hash, trace_context
)
SELECT
    t.id, t.command, CAST(t.payload AS jsonb), t.queue, t.priority, t.max_attempts,
    t.timeout_seconds, coalesce(t.scheduled_at, now() + make_interval(secs => t.delay_seconds)),
    t.idempotency_key, t.request_hash, t.trace_context
FROM unnest(
    CAST(:ids AS uuid[]), CAST(:commands AS text[]), CAST(:payloads AS text[]),
    CAST(:queues AS text[]), CAST(:priorities AS int[]), CAST(:max_attempts AS int[]),
    CAST(:timeouts AS float8[]), CAST(:scheduled_ats AS timestamptz[]),
    CAST(:delays AS float8[]), CAST(:idempotency_keys AS text[]),
    CAST(:request_hashes AS text[]), CAST(:trace_contexts AS text[])
) WITH ORDINALITY AS t(
    id, command, payload, queue, priority, max_attempts, timeout_seconds, scheduled_at,
    delay_seconds, idempotency_key, request_hash, trace_context, n
)
ORDER BY t.n
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *

-- name: notify_submitted
-- The payload is how many tasks became scheduled (see submit_tasks).
SELECT pg_notify('taskmill_submitted', CAST(CAST(:count AS integer) AS text))

-- name: notify_cancel_requested
SELECT pg_notify('taskmill_cancel', CAST(:task_id AS text))

-- name: get_task
SELECT * FROM tasks WHERE id = :id

-- name: get_tasks_by_idempotency_keys
SELECT * FROM tasks WHERE idempotency_key = ANY(CAST(:keys AS text[]))

-- name: list_tasks
SELECT * FROM tasks
WHERE (CAST(:status AS text) IS NULL OR status = :status)
  AND (CAST(:command AS text) IS NULL OR command = :command)
  AND (CAST(:queue AS text) IS NULL OR queue = :queue)
  AND (CAST(:before_seq AS bigint) IS NULL OR seq < :before_seq)
ORDER BY seq DESC
LIMIT :limit

-- name: cancel_scheduled_task
UPDATE tasks SET status = 'cancelled', finished_at = now(), cancel_requested_at = now()
WHERE id = :id AND status = 'scheduled'
RETURNING *

-- name: request_task_cancel
UPDATE tasks SET cancel_requested_at = coalesce(cancel_requested_at, now())
WHERE id = :id AND status IN ('dispatched', 'running')
RETURNING *

-- name: claim_due_assignments
-- The coordinator's claim, made cheap for pg8000 at both ends, which cost the coordinator more
-- CPU than the rest of its dispatch. The workers come as one JSON array of [worker id, tasks it
-- takes] in round-robin order; the slots are spread here (a list of one worker id per slot cost
-- ~0.2 ms a round to build and parse for 512 slots, even when one task was due). The claimed
-- tasks go back as one JSON array (decoded in one call, where pg8000 decodes rows field by
-- field) of only what an assignment needs, in slot order, times as epoch seconds. The payload
-- goes back as its JSON text, which the assignment carries as it is: decoding it only to encode
-- it again cost the coordinator ~5 us a task.
WITH due AS (
    SELECT id, row_number() OVER (ORDER BY priority DESC, scheduled_at, seq) AS n
    FROM (
        SELECT id, priority, scheduled_at, seq FROM tasks
        WHERE status = 'scheduled' AND scheduled_at <= now()
        ORDER BY priority DESC, scheduled_at, seq
        LIMIT :slots
        FOR UPDATE SKIP LOCKED
    ) AS locked
),
round AS (
    -- The round robin as two arrays, slot n's worker and the task that fills it: the first
    -- turn of every worker in order, then the second, and so on, no worker taking more turns
    -- than there are due tasks.
    SELECT
        (
            SELECT array_agg(s.worker ->> 0 ORDER BY turn, s.ord)
            FROM
                jsonb_array_elements(CAST(:shares AS jsonb)) WITH ORDINALITY AS s(worker, ord),
                generate_series(
                    1, least(CAST(s.worker ->> 1 AS integer), (SELECT count(*) FROM due))
                ) AS turn
        ) AS worker_ids,
        (SELECT array_agg(id ORDER BY n) FROM due) AS task_ids
),
claimed AS (
    -- The due tasks are found by primary key, each paired with its slot's worker by unnesting
    -- the two arrays side by side: the planner takes the unnested pairs for a few rows and
    -- looks each task up in the index. (Joined with a set of slots instead, it guessed 100,000
    -- rows and hashed the whole table for every claim, a cost that grew with the finished
    -- history; array_position instead of the pairing grew with the square of the batch.)
    UPDATE tasks SET
        status = 'dispatched',
        worker_id = slot.worker_id,
        attempt = tasks.attempt + 1,
        dispatched_at = now(),
        started_at = NULL,
        lease_expires_at = now() + make_interval(secs => :lease_seconds)
    FROM unnest(
        (SELECT task_ids FROM round), (SELECT worker_ids FROM round)
    ) AS slot(id, worker_id)
    WHERE tasks.id = slot.id
    RETURNING tasks.*
)
-- The fields of ClaimedTask, in its order; then the seconds until the earliest task still
-- scheduled is due, by the database clock (as next_due_in, so the loop needs no second query).
SELECT
    json_agg(json_build_array(
        id, worker_id, command, CAST(payload AS text), attempt, max_attempts, timeout_seconds,
        queue, trace_context, extract(epoch FROM scheduled_at), extract(epoch FROM lease_expires_at)
    ) ORDER BY due.n),
    (
        -- The statement's snapshot still shows the claimed tasks scheduled.
        SELECT CAST(extract(epoch FROM min(t.scheduled_at) - clock_timestamp()) AS float8)
        FROM tasks AS t
        WHERE t.status = 'scheduled' AND t.id NOT IN (SELECT id FROM due)
    )
FROM claimed JOIN due USING (id)

-- name: claim_due_for_worker
-- claim_due_assignments for a round with one worker: an idle cluster's submit of one task, or
-- a fleet with room on one worker only. The same claim and the same answer, without the round
-- robin's arrays and joins, which cost ~0.25 ms a claim on a cold CPU. The due tasks' ids are
-- collected into an array first, so the UPDATE finds them by primary key.
WITH claimed AS (
    UPDATE tasks SET
        status = 'dispatched',
        worker_id = :worker_id,
        attempt = tasks.attempt + 1,
        dispatched_at = now(),
        started_at = NULL,
        lease_expires_at = now() + make_interval(secs => :lease_seconds)
    WHERE tasks.id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE status = 'scheduled' AND scheduled_at <= now()
        ORDER BY priority DESC, scheduled_at, seq
        LIMIT :slots
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING tasks.*
)
SELECT
    json_agg(json_build_array(
        id, worker_id, command, CAST(payload AS text), attempt, max_attempts, timeout_seconds,
        queue, trace_context, extract(epoch FROM scheduled_at), extract(epoch FROM lease_expires_at)
    ) ORDER BY priority DESC, scheduled_at, seq),
    (
        SELECT CAST(extract(epoch FROM min(t.scheduled_at) - clock_timestamp()) AS float8)
        FROM tasks AS t
        WHERE t.status = 'scheduled' AND t.id NOT IN (SELECT id FROM claimed)
    )
FROM claimed

-- name: next_due_at
SELECT min(scheduled_at) FROM tasks WHERE status = 'scheduled'

-- name: release_tasks
-- Gives back tasks a worker never received: assignment failures do not use up an attempt.
-- A task whose cancellation was requested meanwhile ends cancelled rather than queued again.
UPDATE tasks SET
    status = CASE WHEN cancel_requested_at IS NULL THEN 'scheduled' ELSE 'cancelled' END,
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
    attempt = attempt - 1, worker_id = NULL, dispatched_at = NULL, lease_expires_at = NULL
WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'dispatched' AND worker_id = :worker_id
RETURNING id

-- The report queries take one JSON array of reports (far cheaper for pg8000 to send than one
-- array per column) and join it to tasks by primary key: a nested loop over the reports, so
-- the cost follows the batch, never the number of tasks in flight. A final report may carry
-- started_at: the worker folded its unsent "running" report into it. A result comes as the
-- JSON text the worker sent, cast here, so the coordinator parses and encodes nothing. The ids
-- of the changed tasks come back as one comma-separated text, in one row: pg8000 reads a row
-- at a time (~5 us each), and a uuid it would parse.

-- name: mark_running
WITH changed AS (
    UPDATE tasks SET status = 'running', started_at = to_timestamp(r.at)
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS r(id uuid, attempt int, at float8)
    WHERE tasks.id = r.id AND tasks.attempt = r.attempt
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.status = 'dispatched'
    RETURNING tasks.id
)
SELECT string_agg(CAST(id AS text), ',') FROM changed

-- name: mark_succeeded
WITH changed AS (
    UPDATE tasks SET
        status = 'succeeded', result = coalesce(CAST(r.result AS jsonb), CAST('null' AS jsonb)),
        -- A retried task that succeeds no longer carries its earlier attempt's error.
        error = NULL,
        finished_at = to_timestamp(r.at),
        started_at = coalesce(tasks.started_at, to_timestamp(r.started_at), to_timestamp(r.at)),
        lease_expires_at = NULL
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS r(
        id uuid, attempt int, at float8, result text, started_at float8
    )
    WHERE tasks.id = r.id AND tasks.attempt = r.attempt
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.status IN ('dispatched', 'running')
    RETURNING tasks.id
)
SELECT string_agg(CAST(id AS text), ',') FROM changed

-- name: mark_failed
-- Fails the attempts, or schedules them again after an exponential backoff with jitter when
-- the error is retryable, attempts remain and nobody asked to cancel the task.
WITH changed AS (
    UPDATE tasks SET
        status = CASE WHEN r.retryable AND tasks.attempt < tasks.max_attempts
                AND tasks.cancel_requested_at IS NULL
            THEN 'scheduled' ELSE 'failed' END,
        error = r.error,
        finished_at = CASE WHEN r.retryable AND tasks.attempt < tasks.max_attempts
                AND tasks.cancel_requested_at IS NULL
            THEN NULL ELSE to_timestamp(r.at) END,
        scheduled_at = CASE WHEN r.retryable AND tasks.attempt < tasks.max_attempts
                AND tasks.cancel_requested_at IS NULL
            THEN now() + make_interval(secs => least(
                :backoff_max, :backoff_base * power(2, tasks.attempt - 1)
            ) * (0.5 + random() / 2))
            ELSE tasks.scheduled_at END,
        worker_id = CASE WHEN r.retryable AND tasks.attempt < tasks.max_attempts
                AND tasks.cancel_requested_at IS NULL
            THEN NULL ELSE tasks.worker_id END,
        lease_expires_at = NULL,
        started_at = coalesce(tasks.started_at, to_timestamp(r.started_at))
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS r(
        id uuid, attempt int, at float8, error jsonb, retryable bool, started_at float8
    )
    WHERE tasks.id = r.id AND tasks.attempt = r.attempt
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.status IN ('dispatched', 'running')
    RETURNING tasks.id
)
SELECT string_agg(CAST(id AS text), ',') FROM changed

-- name: mark_cancelled
WITH changed AS (
    UPDATE tasks SET
        status = 'cancelled', finished_at = to_timestamp(r.at), lease_expires_at = NULL,
        started_at = coalesce(tasks.started_at, to_timestamp(r.started_at))
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS r(
        id uuid, attempt int, at float8, started_at float8
    )
    WHERE tasks.id = r.id AND tasks.attempt = r.attempt
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.status IN ('dispatched', 'running')
    RETURNING tasks.id
)
SELECT string_agg(CAST(id AS text), ',') FROM changed

-- name: extend_leases
UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
WHERE worker_id = :worker_id AND status IN ('dispatched', 'running')

-- name: cancel_requested_for_worker
SELECT id FROM tasks
WHERE worker_id = :worker_id AND status IN ('dispatched', 'running')
  AND cancel_requested_at IS NOT NULL

-- name: requeue_lost_unstarted
-- Tasks a lost worker (or an expired lease) held but had not started go back to scheduled
-- without using up an attempt; those whose cancellation was requested end cancelled.
UPDATE tasks SET
    status = CASE WHEN cancel_requested_at IS NULL THEN 'scheduled' ELSE 'cancelled' END,
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
    attempt = CASE WHEN cancel_requested_at IS NULL THEN attempt - 1 ELSE attempt END,
    worker_id = NULL, dispatched_at = NULL, lease_expires_at = NULL
WHERE status = 'dispatched'
  AND (worker_id = ANY(CAST(:worker_ids AS text[])) OR lease_expires_at < now())
RETURNING id, status

-- name: fail_lost_running
-- Running tasks of a lost worker fail with worker_lost, or are retried when attempts remain.
UPDATE tasks SET
    status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
        WHEN attempt < max_attempts THEN 'scheduled' ELSE 'failed' END,
    error = CAST(:error AS jsonb),
    finished_at = CASE WHEN cancel_requested_at IS NULL AND attempt < max_attempts
        THEN NULL ELSE now() END,
    scheduled_at = CASE WHEN cancel_requested_at IS NULL AND attempt < max_attempts
        THEN now() + make_interval(secs => least(
            :backoff_max, :backoff_base * power(2, attempt - 1)
        ) * (0.5 + random() / 2))
        ELSE scheduled_at END,
    worker_id = CASE WHEN cancel_requested_at IS NULL AND attempt < max_attempts
        THEN NULL ELSE worker_id END,
    lease_expires_at = NULL
WHERE status = 'running'
  AND (worker_id = ANY(CAST(:worker_ids AS text[])) OR lease_expires_at < now())
RETURNING id, status

-- name: extend_held_leases
-- Extends the leases of the tasks a worker says it holds; tasks it no longer holds (an
-- assignment that never arrived) keep their lease, which expires and lets them be recovered.
-- Rows locked meanwhile (a report changing them) are skipped, not waited for: waiting could
-- deadlock with a report batch locking the same rows in another order, and the report either
-- ends the lease or the next heartbeat extends it. The ids come as one array literal, written
-- by the caller: pg8000 escapes a list of strings character by character (~5 us an id, and a
-- worker with a full queue lists a thousand). (A JSON array unnested here instead hid the
-- array's size from the planner, which then scanned the worker's whole index range, dead
-- entries included: ~70 ms a heartbeat in the end-to-end benchmark, against ~5.)
UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
WHERE id IN (
    SELECT id FROM tasks
    WHERE worker_id = :worker_id AND id = ANY(CAST(:ids AS uuid[]))
      AND status IN ('dispatched', 'running')
    FOR UPDATE SKIP LOCKED
)

-- name: submit_tasks
-- The scheduler's submit path: inserts tasks given as one JSON array with one array per task,
-- its fields in TaskStore.submit's order (far cheaper for pg8000 to send than one array per
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
-- not one JSON document the server parses, ~0.25 ms sooner on a cold CPU. The payload comes
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
