-- Fencing tokens: every claim of a task mints a new token, kept on the task and carried in the
-- assignment. Reports, lease extensions and give-backs name the claim by its token, so a copy
-- of the task that is no longer the claim (its worker was declared dead, or the assignment
-- was given back and claimed again) changes nothing, and heartbeats tell its worker to stop it.
-- Tokens only need to be unique, not ordered: each session caches a range of the sequence.
CREATE SEQUENCE taskmill_claim_tokens AS bigint CACHE 64;

-- NULL until the task's first claim; kept after the claim ends (nothing matches a task that is
-- no longer dispatched or running anyway).
ALTER TABLE tasks ADD COLUMN claim_token bigint;
