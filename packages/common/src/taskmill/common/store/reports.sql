-- Workers' status reports: every change is a conditional UPDATE on the expected status and the
-- claim's fencing token, so a late, duplicated or reordered report, or one from a copy of the
-- task that is no longer the claim, matches no row; the attempt and the reporting worker must
-- match too. A report without a token (from a worker older than tokens) is matched by those.
--
-- The report queries take one JSON array of reports (far cheaper for pg8000 to send than one
-- array per column) and join it to tasks by primary key: a nested loop over the reports, so
-- the cost follows the batch, never the number of tasks in flight. A final report may carry
-- started_at: the worker folded its unsent "running" report into it, or the claim recorded the
-- start (the task went to an idle slot), and started_at, when the handler started, replaces
-- the time of the claim. A result comes as the
-- JSON text the worker sent, cast here, so the coordinator parses and encodes nothing. The ids
-- of the changed tasks come back as one comma-separated text, in one row: pg8000 pays for
-- every row it reads, and would parse a uuid.

-- name: mark_running
WITH changed AS (
    UPDATE tasks SET status = 'running', started_at = to_timestamp(r.at)
    FROM jsonb_to_recordset(CAST(:reports AS jsonb))
        AS r(id uuid, attempt int, token bigint, at float8)
    WHERE tasks.id = r.id
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.attempt = r.attempt AND (r.token IS NULL OR tasks.claim_token = r.token)
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
        started_at = coalesce(
            to_timestamp(r.started_at), tasks.started_at, to_timestamp(r.at)
        ),
        lease_expires_at = NULL
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS r(
        id uuid, attempt int, token bigint, at float8, result text, started_at float8
    )
    WHERE tasks.id = r.id
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.attempt = r.attempt AND (r.token IS NULL OR tasks.claim_token = r.token)
      AND tasks.status IN ('dispatched', 'running')
    RETURNING tasks.id
)
SELECT string_agg(CAST(id AS text), ',') FROM changed

-- name: mark_failed
-- Fails the attempts, or schedules them again when the retry rule allows (taskmill_retries,
-- taskmill_retry_at: migration 0003). The rule is asked once per task, in the sub-select that
-- sets the four columns it decides; the sub-select reads the row being updated, so a task a
-- concurrent transaction changed is decided on its new values.
WITH changed AS (
    UPDATE tasks SET
        (status, finished_at, scheduled_at, worker_id) = (
            SELECT
                CASE WHEN retries THEN 'scheduled' ELSE 'failed' END,
                CASE WHEN retries THEN NULL ELSE to_timestamp(r.at) END,
                CASE WHEN retries
                    THEN taskmill_retry_at(tasks.attempt, :backoff_base, :backoff_max)
                    ELSE tasks.scheduled_at END,
                CASE WHEN retries THEN NULL ELSE tasks.worker_id END
            FROM (SELECT taskmill_retries(
                r.retryable, tasks.attempt, tasks.max_attempts, tasks.cancel_requested_at
            ) AS retries) AS rule
        ),
        error = r.error,
        lease_expires_at = NULL,
        started_at = coalesce(to_timestamp(r.started_at), tasks.started_at)
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS r(
        id uuid, attempt int, token bigint, at float8, error jsonb, retryable bool,
        started_at float8
    )
    WHERE tasks.id = r.id
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.attempt = r.attempt AND (r.token IS NULL OR tasks.claim_token = r.token)
      AND tasks.status IN ('dispatched', 'running')
    RETURNING tasks.id
)
SELECT string_agg(CAST(id AS text), ',') FROM changed

-- name: mark_cancelled
WITH changed AS (
    UPDATE tasks SET
        status = 'cancelled', finished_at = to_timestamp(r.at), lease_expires_at = NULL,
        started_at = coalesce(to_timestamp(r.started_at), tasks.started_at)
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS r(
        id uuid, attempt int, token bigint, at float8, started_at float8
    )
    WHERE tasks.id = r.id
      AND (CAST(:worker_id AS text) IS NULL OR tasks.worker_id = :worker_id)
      AND tasks.attempt = r.attempt AND (r.token IS NULL OR tasks.claim_token = r.token)
      AND tasks.status IN ('dispatched', 'running')
    RETURNING tasks.id
)
SELECT string_agg(CAST(id AS text), ',') FROM changed
