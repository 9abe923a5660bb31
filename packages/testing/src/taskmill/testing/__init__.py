"""taskmill's test tooling: the pytest plugin and the helpers tests import.

The root ``conftest.py`` activates the fixtures with
``pytest_plugins = ["taskmill.testing.plugin"]``: a real PostgreSQL with a fresh migrated
database per test, and a throwaway CA (see :mod:`taskmill.testing.plugin`). Tests import the
helpers from here. A dev-only member: no service image installs it.
"""

from taskmill.testing.databases import admin_connection, throwaway_server
from taskmill.testing.pki import PKI_NAMED_HOST, tls_env
from taskmill.testing.serving import serve_in_thread
from taskmill.testing.stores import (
    NewTask,
    Reported,
    Stores,
    claim,
    every_route,
    set_worker_state,
)

__all__ = [
    "PKI_NAMED_HOST",
    "NewTask",
    "Reported",
    "Stores",
    "admin_connection",
    "claim",
    "every_route",
    "serve_in_thread",
    "set_worker_state",
    "throwaway_server",
    "tls_env",
]
