-- Queries on the workers table.

-- name: register_worker
INSERT INTO workers (
    id, address, hostname, version, capacity, concurrency, free_slots, handlers, coordinator_id,
    queues, queue_weights
)
VALUES (
    :id, :address, :hostname, :version, :capacity, :concurrency, :capacity,
    CAST(:handlers AS text[]), :coordinator_id, CAST(:queues AS text[]),
    CAST(:queue_weights AS integer[])
)
RETURNING *

-- name: heartbeat_worker
UPDATE workers SET last_heartbeat_at = now(), free_slots = :free_slots
WHERE id = :id AND state <> 'dead'
RETURNING *

-- name: lock_worker
-- Taken first by a transaction that records a worker's starts or gives back its tasks, so the
-- two never interleave: each next statement, with a snapshot taken after the lock, sees what
-- the other committed (see record_started_tokens and dispatch.sql's release_tasks).
SELECT 1 FROM workers WHERE id = :id AND state <> 'dead' FOR UPDATE

-- name: record_started_tokens
-- Replaces the worker's started tokens (see migration 0006), after lock_worker, with those of
-- :tokens not refused; returns the refused ones among the starts just asked (:asked_ids,
-- :asked_tokens): a task no longer the worker's under that token (given back after a late
-- assignment answer, recovered), which it must not start. It commits without waiting for its
-- WAL to reach the disk (set_config, run once through the FROM): the change is visible to other
-- sessions at once, so recovery never misses it, and only a crash of PostgreSQL itself can lose
-- it, when the worker lives on (and sends the whole set again with its next starts).
WITH refused AS (
    -- Each asked task looked up by primary key, the other conditions tested on the row found:
    -- as a NOT EXISTS, the planner scanned every task in flight for the worker instead.
    SELECT asked.token
    FROM unnest(CAST(:asked_ids AS uuid[]), CAST(:asked_tokens AS bigint[])) AS asked(id, token)
    LEFT JOIN tasks ON tasks.id = asked.id
    WHERE tasks.id IS NULL OR tasks.claim_token IS DISTINCT FROM asked.token
       OR tasks.worker_id IS DISTINCT FROM CAST(:id AS text)
       OR tasks.status NOT IN ('dispatched', 'running')
),
recorded AS (
    UPDATE workers SET started_tokens = ARRAY(
        SELECT unnest(CAST(:tokens AS bigint[])) EXCEPT SELECT token FROM refused
    )
    FROM (SELECT set_config('synchronous_commit', 'off', true)) AS lazy_commit
    WHERE id = :id
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM recorded),
    (SELECT coalesce(string_agg(CAST(token AS text), ','), '') FROM refused)

-- name: watch_workers
-- Records a liveness check and answers whether workers may be declared dead now. A break of
-- more than :lapse seconds since the last check of any coordinator means nobody had the
-- database, so no heartbeat could be recorded: it starts a grace of :dead_after seconds from
-- now, in which every worker can heartbeat again. So does the first check ever.
INSERT INTO taskmill_liveness AS watch (checked_at, grace_until)
VALUES (now(), now() + make_interval(secs => :dead_after))
ON CONFLICT (id) DO UPDATE SET
    grace_until = CASE
        WHEN watch.checked_at < now() - make_interval(secs => :lapse)
        THEN GREATEST(watch.grace_until, EXCLUDED.grace_until)
        ELSE watch.grace_until END,
    checked_at = GREATEST(watch.checked_at, EXCLUDED.checked_at)
RETURNING watch.grace_until <= now()

-- name: list_workers
SELECT * FROM workers WHERE state <> 'dead' ORDER BY registered_at, id

-- name: get_worker
SELECT * FROM workers WHERE id = :id

-- name: adopt_worker
-- A restarted coordinator takes over a worker that still heartbeats under its old id.
UPDATE workers SET coordinator_id = :coordinator_id WHERE id = :id AND state <> 'dead'
RETURNING *
