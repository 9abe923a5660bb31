-- Queues as an operator sees and steers them, and why a due task still waits.
--
-- A queue exists while anything names it: a row of the queues table (an operator steered it),
-- an unfinished task, or a live worker that serves it. Its counts come from the unfinished
-- tasks only: the OR of the two status tests lets each half use its partial index
-- (tasks_due_idx for the scheduled tasks, tasks_in_flight_idx for those in flight), so the
-- finished history is never read.

-- name: _queue_counts
SELECT
    queue AS name,
    count(*) FILTER (WHERE status = 'scheduled') AS scheduled,
    count(*) FILTER (WHERE status = 'scheduled' AND scheduled_at <= now()) AS due,
    count(*) FILTER (WHERE status <> 'scheduled') AS running,
    min(scheduled_at) FILTER (WHERE status = 'scheduled' AND scheduled_at <= now())
        AS oldest_due_at
FROM tasks
WHERE (status = 'scheduled' OR status IN ('dispatched', 'running'))

-- name: _queue_served
-- A worker that lists a queue twice still counts once.
SELECT served.name, count(DISTINCT workers.id) AS workers
FROM workers CROSS JOIN unnest(workers.queues) AS served(name)
WHERE workers.state = 'active'

-- name: _queue_rows
SELECT
    names.name,
    coalesce(counts.scheduled, 0) AS scheduled,
    coalesce(counts.due, 0) AS due,
    coalesce(counts.running, 0) AS running,
    CAST(extract(epoch FROM now() - counts.oldest_due_at) AS float8) AS oldest_due_age_seconds,
    coalesce(served.workers, 0) AS workers,
    coalesce(steered.paused, false) AS paused,
    steered.max_concurrency
FROM (SELECT name FROM steered UNION SELECT name FROM counts UNION SELECT name FROM served)
    AS names
LEFT JOIN counts ON counts.name = names.name
LEFT JOIN served ON served.name = names.name
LEFT JOIN steered ON steered.name = names.name
ORDER BY names.name

-- name: list_queues
WITH counts AS (
-- include: _queue_counts
    GROUP BY queue
),
served AS (
-- include: _queue_served
    GROUP BY served.name
),
steered AS (SELECT name, paused, max_concurrency FROM queues)
-- include: _queue_rows

-- name: get_queue
WITH counts AS (
-- include: _queue_counts
      AND queue = :name
    GROUP BY queue
),
served AS (
-- include: _queue_served
      AND served.name = :name
    GROUP BY served.name
),
steered AS (SELECT name, paused, max_concurrency FROM queues WHERE name = :name)
-- include: _queue_rows

-- name: set_queue_paused
-- A queue's row is made the first time an operator steers it; the claim reads paused and
-- max_concurrency from it (see dispatch.sql's _claim_lanes). Every coordinator is told, as of
-- a submit of an unknown count (a full round), so a resumed queue's tasks start at once.
WITH steered AS (
    INSERT INTO queues (name, paused) VALUES (:name, :paused)
    ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now()
    RETURNING 1
)
SELECT pg_notify('taskmill_submitted', '') FROM steered

-- name: set_queue_limit
-- As set_queue_paused: a raised or removed limit lets tasks start at once.
WITH steered AS (
    INSERT INTO queues (name, max_concurrency) VALUES (:name, :max_concurrency)
    ON CONFLICT (name) DO UPDATE SET
        max_concurrency = EXCLUDED.max_concurrency, updated_at = now()
    RETURNING 1
)
SELECT pg_notify('taskmill_submitted', '') FROM steered

-- name: get_task_waiting
-- A task, and for a scheduled, due one the first of the reasons that holds it, in the order
-- the claim applies them: a paused queue takes nothing, a full one nothing more, and only a
-- worker that serves the queue and has the command's handler may take the task. CASE stops at
-- the first reason that holds, so the queue's tasks in flight are counted only for a limited
-- queue, and the workers only looked at when the queue may take more.
SELECT
    tasks.*,
    CASE
        WHEN tasks.status <> 'scheduled' OR tasks.scheduled_at > now() THEN NULL
        WHEN steered.paused THEN 'queue_paused'
        WHEN steered.max_concurrency IS NOT NULL AND steered.max_concurrency <= (
            SELECT count(*) FROM tasks AS flight
            WHERE flight.queue = tasks.queue AND flight.status IN ('dispatched', 'running')
        ) THEN 'queue_at_limit'
        WHEN NOT EXISTS (
            SELECT 1 FROM workers
            WHERE workers.state = 'active' AND tasks.queue = ANY(workers.queues)
              AND tasks.command = ANY(workers.handlers)
        ) THEN 'no_worker'
        ELSE 'waiting_for_slot'
    END AS waiting_reason,
    steered.max_concurrency AS waiting_limit
FROM tasks
LEFT JOIN queues AS steered ON steered.name = tasks.queue
WHERE tasks.id = :id
