"""``taskmill-health``: a grpc.health.v1 probe for container health checks.

No ``grpc_health_probe`` binary can be installed from the package registries, so the coordinator
and worker images use this command (shipped with every service through taskmill-common).
Exits 0 when the server answers SERVING, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import GrpcSecurity, check_health


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taskmill-health``."""
    parser = argparse.ArgumentParser(
        prog="taskmill-health", description="Check a taskmill gRPC service's health."
    )
    parser.add_argument(
        "target", nargs="?", default="127.0.0.1:8080", help="host:port (default 127.0.0.1:8080)"
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default 2)")
    args = parser.parse_args(argv)
    try:
        # The same TASKMILL_TLS_* files the service uses let the probe reach it over TLS.
        security = GrpcSecurity.from_env(os.environ)
    except ConfigError as exc:
        print(f"taskmill-health: {exc.message}", file=sys.stderr)
        return 1
    serving = check_health(args.target, timeout=args.timeout, security=security)
    print("SERVING" if serving else "NOT SERVING", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1
