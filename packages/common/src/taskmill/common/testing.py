"""Pytest fixtures for tests against a real PostgreSQL, one fresh database per test.

Activated from the root ``conftest.py`` with ``pytest_plugins = ["taskmill.common.testing"]``.
The server is, in order of preference: ``TASKMILL_TEST_DATABASE_URL`` (a superuser URL, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``); a server at 127.0.0.1:5432 that lets
``postgres`` in without a password; a throwaway :class:`PostgresServer` started for the session.

The migrated schema is built once per session in a template database; each test gets a copy,
which PostgreSQL makes far faster than migrating again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pg8000.exceptions
import pg8000.native
import pytest

from taskmill.common.models import Task
from taskmill.common.pgserver import PostgresServer
from taskmill.common.settings import DatabaseSettings
from taskmill.common.tasks import TaskStore

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
URL_VARIABLE = "TASKMILL_TEST_DATABASE_URL"


def claim(store: TaskStore, slots: Sequence[str], lease_seconds: float = 60.0) -> list[Task]:
    """Claims due tasks as a coordinator does (``TaskStore.claim_due``), returned whole, most
    urgent first: for tests that play the coordinator.

    ``slots`` lists a worker id per task to claim; each worker's slots become its share, in the
    order the workers first appear (``["a", "a", "b"]`` is ``a: 2, b: 1``).
    """
    shares = list(Counter(slots).items())
    if not shares:
        return []
    return [store.get(task.id) for task in store.claim_due(shares, lease_seconds).tasks]


@contextmanager
def admin_connection(url: str) -> Iterator[pg8000.native.Connection]:
    """A plain pg8000 connection to ``url``, for test set-up and inspection outside the stores."""
    settings = DatabaseSettings.from_url(url)
    connection = pg8000.native.Connection(
        settings.user,
        host=settings.host,
        port=settings.port,
        database=settings.database,
        password=settings.password,
    )
    try:
        yield connection
    finally:
        connection.close()


def _local_server_answers() -> bool:
    """Whether a server at 127.0.0.1:5432 lets ``postgres`` in without a password."""
    try:
        # No SSL probe: pg8000 leaks the socket when that probe times out.
        connection = pg8000.native.Connection(
            "postgres", host="127.0.0.1", port=5432, timeout=1, ssl_context=False
        )
    except (pg8000.exceptions.InterfaceError, pg8000.exceptions.DatabaseError, OSError):
        return False
    connection.close()
    return True


def _url_of(url: str, database: str) -> str:
    """The same server as ``url``, another database."""
    return urlsplit(url)._replace(path=f"/{database}").geturl()


def _create_database(admin_url: str, name: str, template: str | None) -> None:
    # Identifiers cannot be bound as parameters; identifier() quotes them.
    sql = f"CREATE DATABASE {pg8000.native.identifier(name)}"
    if template:
        sql += f" TEMPLATE {pg8000.native.identifier(template)}"
    with admin_connection(admin_url) as admin:
        admin.run(sql)


def _drop_database(admin_url: str, name: str) -> None:
    with admin_connection(admin_url) as admin:
        # FORCE (PostgreSQL 13+) ends the sessions a test left open.
        admin.run(f"DROP DATABASE IF EXISTS {pg8000.native.identifier(name)} WITH (FORCE)")


@contextmanager
def _database(admin_url: str, kind: str, template: str | None = None) -> Iterator[str]:
    """Creates a uniquely named database for the block and drops it after."""
    # The pid and a random suffix keep parallel runs against one server apart.
    name = f"taskmill_{kind}_{os.getpid()}_{secrets.token_hex(4)}"
    _create_database(admin_url, name, template)
    try:
        yield name
    finally:
        _drop_database(admin_url, name)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A superuser URL of a running PostgreSQL server, for the whole session."""
    configured = os.environ.get(URL_VARIABLE)
    if configured:
        yield configured
    elif _local_server_answers():
        yield LOCAL_URL
    else:
        with PostgresServer() as server:
            yield server.url


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """The name of a database migrated to the latest schema, to clone tests' databases from."""
    from taskmill.common.migrate import migrate

    with _database(postgres_url, "template") as name:
        migrate(_url_of(postgres_url, name))
        yield name


@pytest.fixture
def database_url(postgres_url: str, template_database: str) -> Iterator[str]:
    """The URL of a fresh, migrated database of the test's own, dropped after it."""
    with _database(postgres_url, "test", template_database) as name:
        yield _url_of(postgres_url, name)


@pytest.fixture
def empty_database_url(postgres_url: str) -> Iterator[str]:
    """The URL of a fresh database without any schema, dropped after the test."""
    with _database(postgres_url, "empty") as name:
        yield _url_of(postgres_url, name)


# -- TLS --------------------------------------------------------------------------------------

#: The only name the ``pki`` fixture's ``named`` certificate carries.
PKI_NAMED_HOST = "service.taskmill.test"


def tls_env(pki: dict[str, Path], name: str) -> dict[str, str]:
    """The ``TASKMILL_TLS_*`` variables of a service using the ``pki`` fixture's ``name``
    certificate (``server``, ``client`` or ``named``), its key and the CA."""
    return {
        "TASKMILL_TLS_CERT": str(pki[f"{name}_cert"]),
        "TASKMILL_TLS_KEY": str(pki[f"{name}_key"]),
        "TASKMILL_TLS_CA": str(pki["ca"]),
    }


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _signed(
    folder: Path, ca: Path, ca_key: Path, name: str, names: str = "IP:127.0.0.1, DNS:localhost"
) -> tuple[Path, Path]:
    # Services are servers and clients of each other: one certificate does both.
    key, csr, cert, ext = (folder / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
    ext.write_text(f"subjectAltName = {names}\nextendedKeyUsage = serverAuth, clientAuth\n")
    _openssl(
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-subj", f"/CN={name}"),
        *("-keyout", key, "-out", csr),
    )
    _openssl(
        *("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"),
        *("-days", "1", "-sha256", "-extfile", ext, "-out", cert),
    )
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA (``ca``) with a ``server`` and a ``client`` certificate and key
    (``server_cert``, ``server_key``, ...), made with the openssl CLI: no key is committed.
    Each certificate is for 127.0.0.1 and localhost, and serves both ends of a connection.
    A third, ``named``, is for the host name in ``PKI_NAMED_HOST`` only."""
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-days", "1"),
        *("-subj", "/CN=taskmill test CA", "-keyout", ca_key, "-out", ca),
    )
    files = {"ca": ca}
    for name in ("server", "client"):
        files[f"{name}_cert"], files[f"{name}_key"] = _signed(folder, ca, ca_key, name)
    named = _signed(folder, ca, ca_key, "named", f"DNS:{PKI_NAMED_HOST}")
    files["named_cert"], files["named_key"] = named
    return files
