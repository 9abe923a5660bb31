"""infra/postgres/postgresql.conf: a real server starts with it and applies every setting."""

from __future__ import annotations

import re

import pg8000.native
from deploy_support import ROOT

from taskmill.dev.pgserver import PostgresServer

SETTING = re.compile(r"^\s*(?P<name>[a-z_]+)\s*=\s*(?P<value>'[^']*'|[^\s#]+)\s*(#.*)?$")
# The throwaway server needs its own address and port.
NOT_APPLIED = {"listen_addresses", "port"}


def read_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in (ROOT / "infra" / "postgres" / "postgresql.conf").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = SETTING.match(line)
        assert match, f"unparsable line: {line!r}"
        settings[match["name"]] = match["value"].strip("'")
    return settings


def test_a_server_starts_with_every_setting_and_commits_stay_durable() -> None:
    settings = read_settings()
    assert settings["listen_addresses"] == "*"
    applied = {k: v for k, v in settings.items() if k not in NOT_APPLIED}
    # An unknown name or a malformed value makes PostgreSQL refuse to start.
    with PostgresServer(settings=applied) as server:
        connection = pg8000.native.Connection("postgres", host="127.0.0.1", port=server.port)
        try:
            rows = connection.run(
                "SELECT lower(name), source FROM pg_settings WHERE lower(name) = ANY(:names)",
                names=list(applied),
            )
            durable = connection.run("SELECT current_setting('synchronous_commit')")[0][0]
            fsync = connection.run("SELECT current_setting('fsync')")[0][0]
        finally:
            connection.close()
    sources = dict(rows)
    assert set(sources) == set(applied), set(applied) - set(sources)
    assert {name for name, source in sources.items() if source != "command line"} == set()
    assert (durable, fsync) == ("on", "on")
