"""Pytest fixtures for tests against a real PostgreSQL, one fresh database per test.

Activated from the root ``conftest.py`` with ``pytest_plugins = ["taskmill.testing.plugin"]``.
The server is, in order of preference: ``TASKMILL_TEST_DATABASE_URL`` (a superuser URL, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``); a server at 127.0.0.1:5432 that lets
``postgres`` in without a password; a throwaway :class:`PostgresServer` started for the session.

The migrated schema is built once per session in a template database; each test gets a copy,
which PostgreSQL makes far faster than migrating again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill.dev.pgserver import PostgresServer
from taskmill.testing.databases import (
    LOCAL_URL,
    URL_VARIABLE,
    local_server_answers,
    temporary_database,
    url_of,
)
from taskmill.testing.pki import make_pki


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A superuser URL of a running PostgreSQL server, for the whole session."""
    configured = os.environ.get(URL_VARIABLE)
    if configured:
        yield configured
    elif local_server_answers():
        yield LOCAL_URL
    else:
        with PostgresServer() as server:
            yield server.url


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """The name of a database migrated to the latest schema, to clone tests' databases from."""
    from taskmill.common.migrate import migrate

    with temporary_database(postgres_url, "template") as name:
        migrate(url_of(postgres_url, name))
        yield name


@pytest.fixture
def database_url(postgres_url: str, template_database: str) -> Iterator[str]:
    """The URL of a fresh, migrated database of the test's own, dropped after it."""
    with temporary_database(postgres_url, "test", template_database) as name:
        yield url_of(postgres_url, name)


@pytest.fixture
def empty_database_url(postgres_url: str) -> Iterator[str]:
    """The URL of a fresh database without any schema, dropped after the test."""
    with temporary_database(postgres_url, "empty") as name:
        yield url_of(postgres_url, name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA (``ca``) with a ``server`` and a ``client`` certificate and key
    (``server_cert``, ``server_key``, ...), made with the openssl CLI: no key is committed.
    Each certificate is for 127.0.0.1 and localhost, and serves both ends of a connection.
    A third, ``named``, is for the host name in ``PKI_NAMED_HOST`` only."""
    return make_pki(tmp_path_factory.mktemp("pki"))
