"""``create_server``: the app served by waitress, on a port that may be 0 (any free port)."""

from __future__ import annotations

import logging
from typing import Any

import waitress

from taskmill.scheduler.settings import SchedulerSettings

logger = logging.getLogger(__name__)


def create_server(app: Any, settings: SchedulerSettings) -> Any:
    """Binds a waitress server for ``app`` without starting it.

    ``server.effective_port`` is the bound port (useful with port 0); ``server.run()`` serves
    until ``SystemExit`` or ``KeyboardInterrupt`` is raised in the main thread, then lets the
    requests in progress finish.

    Raises:
        OSError: The address cannot be bound.
    """
    return waitress.create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        ident="taskmill-scheduler",
        # Above the app's own limits, so the app answers with a proper problem document;
        # waitress only cuts off bodies far beyond them.
        max_request_body_size=2 * max(settings.max_batch_bytes, settings.max_body_bytes),
        expose_tracebacks=False,
        clear_untrusted_proxy_headers=True,
    )
