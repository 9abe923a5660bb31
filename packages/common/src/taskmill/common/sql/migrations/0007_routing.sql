-- Routing: the queues a worker serves, queues as things an operator steers, and claim indexes
-- led by queue and command, so a claim finds a worker's tasks without walking past the tasks
-- it cannot run.

-- The queues a worker takes tasks from, with the weight of each in its share of the worker's
-- slots (queue_weights[i] is queues[i]'s). A worker older than queues serves 'default'.
ALTER TABLE workers ADD COLUMN queues text[] NOT NULL DEFAULT '{default}';
ALTER TABLE workers ADD COLUMN queue_weights integer[] NOT NULL DEFAULT '{1}';

-- A row only for a queue an operator has steered: a queue without one is unpaused and
-- unlimited. max_concurrency caps its tasks dispatched or running, cluster-wide: a claim that
-- takes from a limited queue first locks its row (see dispatch.sql), so claims of any number
-- of coordinators count one after the other.
CREATE TABLE queues (
    name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    max_concurrency integer CHECK (max_concurrency >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The claim reads each of a worker's queues in claim order, passing over the tasks of
-- commands it cannot run (see dispatch.sql); the due question asks the same queues for their
-- earliest scheduled time.
DROP INDEX tasks_claim_idx;
CREATE INDEX tasks_claim_idx ON tasks (queue, priority DESC, scheduled_at, seq)
    WHERE status = 'scheduled';
DROP INDEX tasks_due_idx;
CREATE INDEX tasks_due_idx ON tasks (queue, scheduled_at) WHERE status = 'scheduled';
