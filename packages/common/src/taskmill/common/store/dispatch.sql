-- The coordinator's dispatch: claiming due tasks for workers, giving back tasks a worker never
-- received, and the leases and cancellations of what a worker holds.

-- name: _claim_lanes
-- The tasks a claim takes, for workers that serve the same queues with the same handlers (one
-- route: see Route). Each queue is a lane: its weight, its place in this round's order (the
-- coordinator orders the queues by what each was given against its weight), and how many
-- tasks it may still take: none while paused, its max_concurrency less its tasks in flight
-- when limited, else the whole claim. A limited queue's room is counted only under its row's
-- lock (:locked names the rows lock_limited_queues locked before this statement, whose
-- snapshot then sees every claim committed before): without it (a limit set since), a limited
-- lane takes nothing and the answer says the lock is needed.
WITH arg AS MATERIALIZED (
    -- The parameters, read once here: estimates that do not depend on their values keep the
    -- plan the same for every claim, so the server keeps the one plan (plan_cache_mode auto)
    -- instead of planning each claim again for its values, which cost more than running it.
    SELECT
        CAST(:queues AS text[]) AS queues, CAST(:weights AS integer[]) AS weights,
        CAST(:commands AS text[]) AS commands, CAST(:slots AS integer) AS slots,
        CAST(:locked AS text[]) AS locked
),
lane AS (
    -- free: what a limited queue may still start (NULL when not limited, or not locked);
    -- room: what this claim may take of it, at most the claim's slots.
    SELECT *, CASE
        WHEN paused THEN 0
        WHEN NOT limited THEN slots
        ELSE least(slots, coalesce(free, 0))
    END AS room
    FROM (
        SELECT
            l.name, l.weight, l.ord, arg.commands, arg.slots, coalesce(q.paused, false) AS paused,
            q.max_concurrency IS NOT NULL AS limited,
            CASE WHEN l.name = ANY(arg.locked) THEN greatest(0, q.max_concurrency - (
                SELECT count(*) FROM tasks AS f
                WHERE f.queue = l.name AND f.status IN ('dispatched', 'running')
            )) END AS free
        FROM arg
        CROSS JOIN unnest(arg.queues, arg.weights) WITH ORDINALITY AS l(name, weight, ord)
        LEFT JOIN queues AS q ON q.name = l.name
    ) AS steered
)

-- name: _claim_one_lane
-- The due tasks of a route with one queue, most urgent first: the queue's range of
-- tasks_claim_idx, locked as it is read (SKIP LOCKED: another coordinator's claim takes
-- others), its tasks of commands the route cannot run passed over.
,
due AS (
    SELECT c.id, lane.name AS lane, row_number() OVER (
        ORDER BY c.priority DESC, c.scheduled_at, c.seq
    ) AS n
    FROM lane
    CROSS JOIN LATERAL (
        SELECT id, priority, scheduled_at, seq FROM tasks
        WHERE status = 'scheduled' AND queue = lane.name AND command = ANY(lane.commands)
          AND scheduled_at <= now()
        ORDER BY priority DESC, scheduled_at, seq
        LIMIT lane.room
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE lane.room > 0
)

-- name: _claim_turns
-- The due tasks of a route with several queues, fair between them: the k-th task of a queue of
-- weight w comes in turn (k - 1) / w, and within a turn the queues go in the round's order;
-- within a queue, priority then due time. Each queue's range of tasks_claim_idx is read
-- without locks, and only the tasks chosen are locked, in turn order, skipping those
-- another coordinator's claim holds: locked as they were read, every queue's range would be
-- locked for a claim that takes a share of each (a lock is a write). Queues are told apart by
-- their place in the round (ord), an integer, cheaper to sort by than their names.
,
candidate AS (
    SELECT c.id, c.priority, c.scheduled_at, c.seq, lane.ord, lane.weight, lane.room
    FROM lane
    CROSS JOIN LATERAL (
        SELECT id, priority, scheduled_at, seq FROM tasks
        WHERE status = 'scheduled' AND queue = lane.name AND command = ANY(lane.commands)
          AND scheduled_at <= now()
        ORDER BY priority DESC, scheduled_at, seq
        LIMIT lane.room
    ) AS c
    WHERE lane.room > 0
),
turn AS (
    SELECT id, ord, (rank - 1) / weight AS turn, rank
    FROM (
        SELECT id, ord, weight, room, row_number() OVER (
            PARTITION BY ord ORDER BY priority DESC, scheduled_at, seq
        ) AS rank
        FROM candidate
    ) AS ranked
    WHERE rank <= room
    ORDER BY turn, ord, rank
    -- Twice the slots: spares for the tasks another claim holds.
    LIMIT (SELECT 2 * slots FROM arg)
),
locked AS (
    SELECT tasks.id, turn.ord, turn.turn, turn.rank
    FROM turn JOIN tasks ON tasks.id = turn.id
    WHERE tasks.status = 'scheduled'
    ORDER BY turn.turn, turn.ord, turn.rank
    LIMIT (SELECT slots FROM arg)
    FOR UPDATE OF tasks SKIP LOCKED
),
due AS (
    SELECT locked.id, lane.name AS lane, row_number() OVER (
        ORDER BY locked.turn, locked.ord, locked.rank
    ) AS n
    FROM locked JOIN lane USING (ord)
)

-- name: _claim_round_robin
,
round AS (
    -- The round robin as arrays, slot n's worker, whether the claim starts it, and the task
    -- that fills it: the first turn of every worker in order, then the second, and so on, no
    -- worker taking more turns than there are due tasks.
    SELECT
        array_agg(s.worker ->> 0 ORDER BY turn, s.ord) AS worker_ids,
        array_agg(turn <= CAST(s.worker ->> 2 AS integer) ORDER BY turn, s.ord) AS started,
        (SELECT array_agg(id ORDER BY n) FROM due) AS task_ids
    FROM
        jsonb_array_elements(CAST(:shares AS jsonb)) WITH ORDINALITY AS s(worker, ord),
        generate_series(
            1, least(CAST(s.worker ->> 1 AS integer), (SELECT count(*) FROM due))
        ) AS turn
),
claimed AS (
    -- The due tasks are found by primary key, each paired with its slot's worker by unnesting
    -- the two arrays side by side: the planner takes the unnested pairs for a few rows and
    -- looks each task up in the index. (Joined with a set of slots instead, it guessed far too
    -- many rows and hashed the whole table for every claim, a cost that grew with the finished
    -- history; array_position instead of the pairing grew with the square of the batch.)
    UPDATE tasks SET
        status = CASE WHEN slot.started THEN 'running' ELSE 'dispatched' END,
        worker_id = slot.worker_id,
        attempt = tasks.attempt + 1,
        dispatched_at = now(),
        started_at = CASE WHEN slot.started THEN now() END,
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        claim_token = nextval('taskmill_claim_tokens')
    FROM unnest(
        (SELECT task_ids FROM round), (SELECT worker_ids FROM round), (SELECT started FROM round)
    ) AS slot(id, worker_id, started)
    WHERE tasks.id = slot.id AND slot.worker_id IS NOT NULL
    RETURNING tasks.*
)

-- name: _claim_for_worker
,
claimed AS (
    UPDATE tasks SET
        status = CASE WHEN CAST(:started AS boolean) THEN 'running' ELSE 'dispatched' END,
        worker_id = :worker_id,
        attempt = tasks.attempt + 1,
        dispatched_at = now(),
        started_at = CASE WHEN CAST(:started AS boolean) THEN now() END,
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        claim_token = nextval('taskmill_claim_tokens')
    WHERE tasks.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING tasks.*
)

-- name: _claim_answer
-- The fields of ClaimedTask, in its order, in slot order; then the seconds until the earliest
-- task still scheduled that the route can run is due, by the database clock (as next_due_in,
-- so the loop needs no second query), leaving out the lanes that cannot take more now (paused,
-- or limited and full); then whether a lane is limited (so it needs the lock), and whether a
-- limited lane is full (so a finished task is worth a round).
SELECT
    json_agg(json_build_array(
        id, worker_id, command, CAST(payload AS text), attempt, max_attempts, timeout_seconds,
        queue, trace_context, extract(epoch FROM scheduled_at), extract(epoch FROM lease_expires_at),
        claim_token, status = 'running'
    ) ORDER BY due.n),
    (
        -- The statement's snapshot still shows the claimed tasks scheduled.
        SELECT CAST(extract(epoch FROM min(next.scheduled_at) - clock_timestamp()) AS float8)
        FROM lane
        CROSS JOIN LATERAL (
            SELECT t.scheduled_at FROM tasks AS t
            WHERE t.status = 'scheduled' AND t.queue = lane.name
              AND t.command = ANY(lane.commands) AND t.id NOT IN (SELECT id FROM due)
            ORDER BY t.scheduled_at
            LIMIT 1
        ) AS next
        WHERE lane.room > 0
          AND (NOT lane.limited OR lane.free > (SELECT count(*) FROM due WHERE due.lane = lane.name))
    ),
    (SELECT coalesce(bool_or(limited), false) FROM lane),
    (
        SELECT coalesce(bool_or(
            coalesce(free, 0) <= (SELECT count(*) FROM due WHERE due.lane = lane.name)
        ), false)
        FROM lane WHERE limited
    )
FROM claimed JOIN due USING (id)

-- name: _claim_answer_taken
-- _claim_answer's tasks alone, for a submit's claim (claim_due_for_submit): the next-due
-- answer and the limit flags are a good part of a claim of one task, and a submit's round
-- needs them only when it did not take all it came for (then the full claim runs).
SELECT
    json_agg(json_build_array(
        id, worker_id, command, CAST(payload AS text), attempt, max_attempts, timeout_seconds,
        queue, trace_context, extract(epoch FROM scheduled_at), extract(epoch FROM lease_expires_at),
        claim_token, status = 'running'
    ) ORDER BY due.n),
    CAST(NULL AS float8), false, false
FROM claimed JOIN due USING (id)

-- name: claim_due_assignments
-- The coordinator's claim, made cheap for pg8000 at both ends, which cost the coordinator more
-- CPU than the rest of its dispatch. The workers come as one JSON array of [worker id, tasks it
-- takes] in round-robin order; the slots are spread here (a list of one worker id per slot would
-- be built and parsed for every slot of the batch on every round, even when one task is due).
-- The claimed tasks go back as one JSON array (decoded in one call, where pg8000 decodes rows
-- field by field) of only what an assignment needs, in slot order, times as epoch seconds. The
-- payload goes back as its JSON text, which the assignment carries as it is, so the coordinator
-- never decodes it only to encode it again. Each worker's third number says how many of its
-- tasks go to idle slots: the claim records their start (status running), so the worker starts
-- them at once, with nothing more to ask (see the worker's starts.py); the first turns of each
-- worker are those, as the worker's slots take its tasks in the order sent.
-- include: _claim_lanes
-- include: _claim_one_lane
-- include: _claim_round_robin
-- include: _claim_answer

-- name: claim_due_for_worker
-- claim_due_assignments for a round with one worker: an idle cluster's submit of one task, or
-- a fleet with room on one worker only. The same claim and the same answer, without the round
-- robin's arrays and joins, which lengthen an idle cluster's pickup. The due tasks' ids are
-- collected into an array first, so the UPDATE finds them by primary key. :started records the
-- start of all of them (all go to idle slots) or none; a share of some is claimed by
-- claim_due_assignments.
-- include: _claim_lanes
-- include: _claim_one_lane
-- include: _claim_for_worker
-- include: _claim_answer

-- name: claim_due_for_submit
-- claim_due_for_worker for a submit's round on a route of one queue, answering the tasks only.
-- include: _claim_lanes
-- include: _claim_one_lane
-- include: _claim_for_worker
-- include: _claim_answer_taken

-- name: claim_due_assignments_in_turns
-- claim_due_assignments for a route with several queues.
-- include: _claim_lanes
-- include: _claim_turns
-- include: _claim_round_robin
-- include: _claim_answer

-- name: claim_due_for_worker_in_turns
-- claim_due_for_worker for a route with several queues.
-- include: _claim_lanes
-- include: _claim_turns
-- include: _claim_for_worker
-- include: _claim_answer

-- name: lock_limited_queues
-- Taken before a claim that takes from limited queues, in the same transaction: claims of any
-- number of coordinators from a limited queue run one after the other, each counting what the
-- one before committed (see _claim_lanes). Locked in name order, so two never deadlock.
SELECT name FROM queues
WHERE name = ANY(CAST(:queues AS text[])) AND max_concurrency IS NOT NULL
ORDER BY name
FOR UPDATE

-- name: release_tasks
-- Gives back tasks a worker never received: assignment failures do not use up an attempt.
-- A task whose cancellation was requested meanwhile ends cancelled rather than queued again.
-- Each task is named with the token of its claim (see match_held); a later claim of it, by
-- this worker or another, is left alone. When the worker itself gives them back, or declined
-- them for sure (:recorded), a task whose start was recorded (running under the same token,
-- by the claim) is given back too: it never ran. Otherwise (the coordinator's give-back after
-- a failed or late call) a task among the worker's started tokens stays: the worker has it and
-- may be running it. Run after workers.sql's lock_worker, so a RecordStarts either committed
-- before (its tokens are seen here) or will see the task given back (and refuse its start).
UPDATE tasks SET
    status = CASE WHEN cancel_requested_at IS NULL THEN 'scheduled' ELSE 'cancelled' END,
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
    attempt = attempt - 1, worker_id = NULL, dispatched_at = NULL, lease_expires_at = NULL,
    started_at = NULL
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS bigint[])) AS given(id, token)
WHERE tasks.id = given.id AND tasks.worker_id = :worker_id
  AND (tasks.status = 'dispatched'
       OR (CAST(:recorded AS boolean) AND tasks.status = 'running' AND given.token <> 0))
  AND (given.token = 0 OR tasks.claim_token = given.token)
  AND (CAST(:recorded AS boolean) OR NOT coalesce(tasks.claim_token = ANY(coalesce(
      (SELECT started_tokens FROM workers WHERE id = :worker_id), CAST('{}' AS bigint[])
  )), false))
RETURNING tasks.id

-- name: extend_held_leases
-- Extends the leases of the tasks a worker says it holds, each named with the token of its
-- claim (0 from a worker older than tokens: then the task must be dispatched to the worker),
-- and returns the tokens that are no longer the worker's: the task was given to another
-- worker, recovered, or has finished. A task held under the worker's earlier id (it had to
-- register again) moves to its current id, so reports, cancellations and recovery find it.
-- Tasks it no longer holds (an assignment that never arrived) keep their lease, which expires
-- and lets them be recovered. Rows locked meanwhile (a report changing them) are skipped, not
-- waited for: waiting could deadlock with a report batch locking the same rows in another
-- order, and the report either ends the lease or the next heartbeat extends it; they are not
-- stale by the statement's snapshot either. The ids and tokens come as array literals, written
-- by the caller: pg8000 escapes a list of strings character by character, in Python, and a
-- worker with a full queue lists a thousand. The held tasks are found by primary key, so the
-- cost follows what the worker lists. (A JSON array unnested here instead once hid the
-- array's size from the planner, which then scanned the worker's whole index range, dead
-- entries included, on every heartbeat.)
WITH held AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS bigint[])) AS held(id, token)
),
own AS (
    SELECT tasks.id, held.token FROM tasks JOIN held ON tasks.id = held.id
    WHERE tasks.status IN ('dispatched', 'running')
      AND CASE WHEN held.token = 0 THEN tasks.worker_id = :worker_id
          ELSE tasks.claim_token = held.token END
),
extended AS (
    UPDATE tasks SET
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        worker_id = :worker_id
    WHERE id IN (
        -- The conditions again, not the snapshot's answer: a row changed since the snapshot
        -- is checked again as it is now before it is locked, so a task claimed again
        -- meanwhile is never taken back.
        SELECT tasks.id FROM tasks JOIN held ON tasks.id = held.id
        WHERE tasks.status IN ('dispatched', 'running')
          AND CASE WHEN held.token = 0 THEN tasks.worker_id = :worker_id
              ELSE tasks.claim_token = held.token END
        FOR UPDATE OF tasks SKIP LOCKED
    )
)
SELECT coalesce(string_agg(CAST(token AS text), ','), '') FROM held
WHERE token <> 0 AND token NOT IN (SELECT token FROM own)

-- name: cancel_requested_for_worker
SELECT id FROM tasks
WHERE worker_id = :worker_id AND status IN ('dispatched', 'running')
  AND cancel_requested_at IS NOT NULL

-- name: task_holder
-- Which worker holds a task, for forwarding a cancellation request to it.
SELECT worker_id, status FROM tasks WHERE id = :id
