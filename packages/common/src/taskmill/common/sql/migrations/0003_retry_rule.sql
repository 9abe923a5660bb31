-- The retry rule, written once for every path that ends an attempt in failure (a worker's
-- report, a lost worker, an expired lease). Both functions are plain SQL expressions, which the
-- planner inlines into the statements that call them.

-- Whether a failed attempt is tried again: the failure allows it, attempts remain, and nobody
-- asked to cancel the task.
CREATE FUNCTION taskmill_retries(
    retryable boolean, attempt integer, max_attempts integer, cancel_requested_at timestamptz
) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$ SELECT retryable AND attempt < max_attempts AND cancel_requested_at IS NULL $$;

-- When the next attempt is due: an exponential backoff, base * 2^(attempt - 1) seconds capped
-- at maximum, times a random factor in [0.5, 1] so that tasks failed together do not retry
-- together.
CREATE FUNCTION taskmill_retry_at(attempt integer, base float8, maximum float8)
RETURNS timestamptz
LANGUAGE sql VOLATILE
AS $$
    SELECT now() + make_interval(
        secs => least(maximum, base * power(2, attempt - 1)) * (0.5 + random() / 2)
    )
$$;
