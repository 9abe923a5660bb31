-- Fewer, better-fitting indexes on tasks and tighter vacuuming, for the dispatch hot path.

-- Each task is updated about three times (claim, running, final); every index costs upkeep on
-- each of those non-HOT updates. Listing by command or queue still works: it walks
-- tasks_status_seq_idx or the seq index and filters.
DROP INDEX tasks_command_seq_idx;
DROP INDEX tasks_queue_seq_idx;

-- The claim index now matches the claim's ORDER BY exactly, so its LIMIT is an index range
-- scan whatever the statistics say.
DROP INDEX tasks_claim_idx;
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, scheduled_at, seq)
    WHERE status = 'scheduled';

-- Room on each page for updated row versions, and vacuum and analyze after a burst rather than
-- after a fifth of the table has changed.
ALTER TABLE tasks SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02
);
