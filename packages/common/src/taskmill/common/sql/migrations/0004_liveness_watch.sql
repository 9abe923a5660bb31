-- The coordinators' watch over the workers: one row, which every liveness check updates.
-- A break in the checks (the database was away, or no coordinator ran) means heartbeats could
-- not be recorded either, so the check after a break starts a grace, during which no worker is
-- declared dead and no expired lease is recovered (watch_workers in store/workers.sql).
CREATE TABLE taskmill_liveness (
    -- Only one row: its key can only be true.
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- The latest liveness check of any coordinator.
    checked_at timestamptz NOT NULL,
    -- No worker is declared dead, and no lease recovered, before this.
    grace_until timestamptz NOT NULL
);
