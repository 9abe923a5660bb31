-- How many of a worker's tasks run at once (its slots); the rest of its capacity is its queue.
-- A coordinator records the start of the tasks it claims for a worker's idle slots in the claim
-- itself (see the claim queries), so it must know which of the worker's room is slots. NULL for
-- a worker older than this column: none of its tasks start in the claim.
ALTER TABLE workers ADD COLUMN concurrency integer CHECK (concurrency >= 0);

-- The claim tokens of the tasks a worker may have started whose start the tasks' rows do not
-- show yet (their running report is folded into their final one, or not sent yet): the whole
-- set, replaced at each change, so recording the starts of any number of tasks is one small
-- write. Recovery reads it when the worker is lost: a dispatched task whose token is here ran
-- (or may have), so it fails as a lost worker's rather than going to another worker.
ALTER TABLE workers ADD COLUMN started_tokens bigint[] NOT NULL DEFAULT '{}';
