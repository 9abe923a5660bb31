-- Recovering the tasks of lost workers and of expired leases. The retry rule is the migration's
-- taskmill_retries and taskmill_retry_at (0003_retry_rule.sql), as for reports.

-- name: reap_dead_workers
-- Removes the workers silent for :dead_after seconds; run in the transaction that recovers
-- their tasks (RecoveryStore.reap_and_recover).
DELETE FROM workers
WHERE last_heartbeat_at < now() - make_interval(secs => :dead_after)
RETURNING id, started_tokens

-- name: retire_worker
-- Removes a worker that says it is stopping; run in the transaction that recovers its tasks
-- (RecoveryStore.retire).
DELETE FROM workers WHERE id = :id RETURNING id, started_tokens

-- name: requeue_lost_unstarted
-- Tasks a lost worker (or an expired lease, when :expired_leases) held but had not started go
-- back to scheduled without using up an attempt; those whose cancellation was requested end
-- cancelled. A dispatched task whose token is among its worker's started tokens (:started, of
-- the workers just removed, or the started_tokens of a worker still known) may have started:
-- fail_lost_running takes it. So does a task whose start the claim recorded (running, its
-- started_at still the claim's time: the worker confirms a start only with its final report)
-- unless its lease ran out under a worker that has heartbeated since: the worker's heartbeats
-- extend the lease of every task it holds, so a whole lease of them without this one means it
-- never received it (its coordinator died before sending it, or the call failed).
UPDATE tasks SET
    status = CASE WHEN cancel_requested_at IS NULL THEN 'scheduled' ELSE 'cancelled' END,
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
    attempt = CASE WHEN cancel_requested_at IS NULL THEN attempt - 1 ELSE attempt END,
    worker_id = NULL, dispatched_at = NULL, lease_expires_at = NULL, started_at = NULL
WHERE (
    status = 'dispatched'
    AND (worker_id = ANY(CAST(:worker_ids AS text[]))
         OR (CAST(:expired_leases AS boolean) AND lease_expires_at < now()))
    AND NOT coalesce(claim_token = ANY(CAST(:started AS bigint[])), false)
    AND NOT EXISTS (
        SELECT FROM workers
        WHERE workers.id = tasks.worker_id AND tasks.claim_token = ANY(workers.started_tokens)
    )
) OR (
    status = 'running' AND started_at = dispatched_at
    AND CAST(:expired_leases AS boolean) AND lease_expires_at < now()
    AND EXISTS (
        SELECT FROM workers
        WHERE workers.id = tasks.worker_id AND workers.last_heartbeat_at > tasks.lease_expires_at
    )
)
RETURNING id, status

-- name: fail_lost_running
-- Running tasks of a lost worker (or an expired lease) fail with worker_lost, or are scheduled
-- again by the retry rule (a lost worker is always a retryable failure); a task whose
-- cancellation was requested ends cancelled. So does a dispatched task whose start was recorded
-- among its worker's started tokens (the same test as in requeue_lost_unstarted, asked again
-- rather than trusted to what that statement left: a claim committed between the two must not
-- be failed).
-- The retry rule is asked once per task, as in reports.sql's mark_failed.
UPDATE tasks SET
    (status, finished_at, scheduled_at, worker_id) = (
        SELECT
            CASE
                WHEN retries THEN 'scheduled'
                WHEN tasks.cancel_requested_at IS NOT NULL THEN 'cancelled'
                ELSE 'failed' END,
            CASE WHEN retries THEN NULL ELSE now() END,
            CASE WHEN retries
                THEN taskmill_retry_at(tasks.attempt, :backoff_base, :backoff_max)
                ELSE tasks.scheduled_at END,
            CASE WHEN retries THEN NULL ELSE tasks.worker_id END
        FROM (SELECT taskmill_retries(
            true, tasks.attempt, tasks.max_attempts, tasks.cancel_requested_at
        ) AS retries) AS rule
    ),
    error = CAST(:error AS jsonb),
    lease_expires_at = NULL
WHERE (worker_id = ANY(CAST(:worker_ids AS text[]))
       OR (CAST(:expired_leases AS boolean) AND lease_expires_at < now()))
  AND (status = 'running'
       OR (status = 'dispatched'
           AND (coalesce(claim_token = ANY(CAST(:started AS bigint[])), false)
                OR EXISTS (
                    SELECT FROM workers
                    WHERE workers.id = tasks.worker_id
                      AND tasks.claim_token = ANY(workers.started_tokens)
                ))))
RETURNING id, status

-- name: notify_submitted
-- The payload is how many tasks became scheduled (see submit_tasks).
SELECT pg_notify('taskmill_submitted', CAST(CAST(:count AS integer) AS text))
