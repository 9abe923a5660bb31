-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS taskmill_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: lock_migrations
SELECT pg_advisory_xact_lock(:lock_id)

-- name: applied_migrations
SELECT version FROM taskmill_migrations ORDER BY version

-- name: record_migration
INSERT INTO taskmill_migrations (version, name) VALUES (:version, :name)

-- name: schema_version
SELECT coalesce(max(version), 0) FROM taskmill_migrations

-- name: migrations_table_exists
SELECT to_regclass('taskmill_migrations') IS NOT NULL
