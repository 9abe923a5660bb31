"""taskmill coordinator: serves workers, dispatches due tasks to them, recovers lost ones."""

from taskmill.coordinator.server import CoordinatorServer, create_server, new_coordinator_id
from taskmill.coordinator.settings import CoordinatorSettings, load_settings

__all__ = [
    "CoordinatorServer",
    "CoordinatorSettings",
    "create_server",
    "load_settings",
    "new_coordinator_id",
]
