"""``taskmill-health``: a grpc.health.v1 probe for container health checks.

No ``grpc_health_probe`` binary can be installed from the package registries, so the coordinator
and worker images use this command (shipped with every service through taskmill-common).
Exits 0 when the server answers SERVING, 1 otherwise. With TLS it uses the service's own
``TASKMILL_TLS_*`` files, and ``TASKMILL_TLS_SERVER_NAME`` (or ``--server-name``) when the
service's certificate does not name the address the probe dials.
"""

from __future__ import annotations

import argparse
import os
import sys

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import GrpcSecurity, check_health

#: The name a probe expects in the service's certificate, for a service whose certificate
#: does not name 127.0.0.1 (the address a container's probe dials).
SERVER_NAME_VARIABLE = "TASKMILL_TLS_SERVER_NAME"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taskmill-health``."""
    parser = argparse.ArgumentParser(
        prog="taskmill-health", description="Check a taskmill gRPC service's health."
    )
    parser.add_argument(
        "target", nargs="?", default="127.0.0.1:8080", help="host:port (default 127.0.0.1:8080)"
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default 2)")
    parser.add_argument(
        "--server-name",
        default=os.environ.get(SERVER_NAME_VARIABLE) or None,
        help="with TLS, the name the service's certificate carries, when it is not the "
        f"target's host (default ${SERVER_NAME_VARIABLE})",
    )
    args = parser.parse_args(argv)
    try:
        # The same TASKMILL_TLS_* files the service uses let the probe reach it over TLS.
        security = GrpcSecurity.from_env(os.environ)
    except ConfigError as exc:
        print(f"taskmill-health: {exc.message}", file=sys.stderr)
        return 1
    serving = check_health(
        args.target, timeout=args.timeout, security=security, server_name=args.server_name
    )
    print("SERVING" if serving else "NOT SERVING", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
