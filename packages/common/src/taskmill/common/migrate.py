"""Numbered SQL migrations and the ``taskmill-migrate`` command.

Migrations are the files ``sql/migrations/NNNN_<name>.sql``. They are applied in order, each in
its own transaction, under a transaction-level advisory lock, so several processes may migrate at
the same moment: the first applies, the others wait and then find nothing to do.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources

from taskmill.common.db import Connection, Database
from taskmill.common.errors import SchemaOutdated, SchemaTooNew, TaskmillError
from taskmill.common.settings import DEFAULT_DATABASE_URL, DatabaseSettings

logger = logging.getLogger(__name__)

#: The advisory lock key all taskmill processes take while migrating ("taskmill" in ASCII).
MIGRATION_LOCK_ID = 0x7461736B6D696C6C
_FILENAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str


@cache
def known_migrations() -> tuple[Migration, ...]:
    """Every migration this version of taskmill ships, in order."""
    migrations = []
    for entry in (resources.files("taskmill.common") / "sql" / "migrations").iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            migrations.append(
                Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8"))
            )
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migration numbers must run 1, 2, 3 ... without gaps: {versions}")
    return tuple(migrations)


def latest_version() -> int:
    """The schema version this version of taskmill expects."""
    return len(known_migrations())


def _apply_pending(conn: Connection) -> list[int]:
    applied: list[int] = []
    for migration in known_migrations():
        with conn.transaction():
            conn.run("lock_migrations", lock_id=MIGRATION_LOCK_ID)
            conn.run("create_migrations_table")
            done = {row[0] for row in conn.run("applied_migrations")}
            if migration.version in done:
                continue
            _refuse_newer(max(done, default=0))
            conn.execute_script(migration.sql)
            conn.run("record_migration", version=migration.version, name=migration.name)
            applied.append(migration.version)
            logger.info("applied migration %04d_%s", migration.version, migration.name)
    return applied


def _refuse_newer(version: int) -> None:
    if version > latest_version():
        raise SchemaTooNew(
            f"the database schema is at version {version}, newer than this taskmill knows "
            f"({latest_version()}): upgrade taskmill to a version that includes migration "
            f"{version}, or point it at another database"
        )


def apply_migrations(db: Database) -> list[int]:
    """Applies every pending migration and returns the versions it applied.

    Raises:
        SchemaTooNew: The database was migrated by a newer taskmill.
        DatabaseUnavailable: The database cannot be reached.
    """
    with db.connection() as conn:
        _refuse_newer(schema_version(conn))
        return _apply_pending(conn)


def schema_version(conn: Connection) -> int:
    """The highest migration applied to the database, 0 when none is."""
    if not conn.scalar("migrations_table_exists"):
        return 0
    return int(conn.scalar("schema_version"))


def check_schema(db: Database) -> None:
    """Checks that the database schema is exactly the one this taskmill expects.

    Raises:
        SchemaTooNew: The schema is newer; this service must be upgraded.
        SchemaOutdated: Migrations are pending; run ``taskmill-migrate``.
    """
    with db.connection() as conn:
        version = schema_version(conn)
    _refuse_newer(version)
    if version < latest_version():
        raise SchemaOutdated(
            f"the database schema is at version {version} but this taskmill needs "
            f"{latest_version()}: run taskmill-migrate, or start the service with migrations on"
        )


def prepare_schema(db: Database, *, migrate: bool) -> None:
    """What every service does at start: migrate when allowed, then check the schema."""
    if migrate:
        apply_migrations(db)
    check_schema(db)


def migrate(database_url: str) -> list[int]:
    """Applies pending migrations to the database at ``database_url``."""
    db = Database(DatabaseSettings.from_url(database_url), max_connections=1)
    try:
        return apply_migrations(db)
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taskmill-migrate``."""
    parser = argparse.ArgumentParser(
        prog="taskmill-migrate", description="Apply pending taskmill database migrations."
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TASKMILL_DATABASE_URL"),
        help="postgresql://user:password@host:port/db (env TASKMILL_DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        applied = migrate(args.database_url or DEFAULT_DATABASE_URL)
    except TaskmillError as exc:
        print(f"taskmill-migrate: {exc.message}", file=sys.stderr)
        return 1
    if applied:
        print(f"applied migrations {', '.join(str(v) for v in applied)}")
    else:
        print(f"schema already at version {latest_version()}; nothing to do")
    return 0
