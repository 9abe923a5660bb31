-- Queries on the workers table.

-- name: register_worker
INSERT INTO workers (
    id, address, hostname, version, capacity, concurrency, free_slots, handlers, coordinator_id
)
VALUES (
    :id, :address, :hostname, :version, :capacity, :concurrency, :capacity,
    CAST(:handlers AS text[]), :coordinator_id
)
RETURNING *

-- name: heartbeat_worker
UPDATE workers SET last_heartbeat_at = now(), free_slots = :free_slots
WHERE id = :id AND state <> 'dead'
RETURNING *

-- name: record_started_tokens
-- Replaces the worker's started tokens (see migration 0006); no row when the worker is
-- unknown (declared dead: its tasks are recovered, so none may start). The row lock orders it
-- with the reaping DELETE, which reads the tokens. It commits without waiting for its WAL to
-- reach the disk (set_config, run once through the FROM): the change is visible to other
-- sessions at once, so recovery never misses it, and only a crash of PostgreSQL itself can lose
-- it, when the worker lives on (and sends the whole set again with its next starts).
UPDATE workers SET started_tokens = CAST(:tokens AS bigint[])
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS lazy_commit
WHERE id = :id AND state <> 'dead'
RETURNING 1

-- name: set_worker_state
UPDATE workers SET state = :state WHERE id = :id RETURNING *

-- name: delete_worker
DELETE FROM workers WHERE id = :id RETURNING id

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

-- name: workers_of_coordinator
SELECT * FROM workers WHERE coordinator_id = :coordinator_id AND state = 'active'
ORDER BY registered_at, id

-- name: adopt_worker
-- A restarted coordinator takes over a worker that still heartbeats under its old id.
UPDATE workers SET coordinator_id = :coordinator_id WHERE id = :id AND state <> 'dead'
RETURNING *
