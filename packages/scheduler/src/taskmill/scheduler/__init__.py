"""taskmill scheduler: the HTTP API through which callers submit and follow tasks."""

from taskmill.scheduler.app import create_app
from taskmill.scheduler.server import bind, create_server
from taskmill.scheduler.settings import SchedulerSettings
from taskmill.scheduler.version import VERSION

__all__ = ["VERSION", "SchedulerSettings", "bind", "create_app", "create_server"]
