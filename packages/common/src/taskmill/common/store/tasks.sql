-- The HTTP API's reads of tasks, and cancellation.

-- name: get_task
SELECT * FROM tasks WHERE id = :id

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

-- name: notify_cancel_requested
SELECT pg_notify('taskmill_cancel', CAST(:task_id AS text))
