"""Bearer-token authentication, as Falcon middleware.

Every route but the probes ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>``
with one of the tokens in ``TASKMILL_API_TOKENS``. With no token configured the scheduler is
meant for one machine: it serves loopback clients only and refuses everyone else.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

import falcon

from taskmill.scheduler.errors import Unauthorized

#: Paths served without a token: orchestrator probes carry no API token, and neither answer
#: reveals more than up/ready.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


@lru_cache(maxsize=1024)
def is_loopback(address: str | None) -> bool:
    """Whether a client address is a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.1)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    # A dual-stack socket shows IPv4 clients as IPv4-mapped IPv6 addresses.
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


class AuthMiddleware:
    """Checks bearer tokens (in constant time) before any resource runs.

    Args:
        tokens: The accepted tokens; empty means loopback clients only, without a token.
    """

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(token.encode("utf-8") for token in tokens)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Refuses the request with ``401`` unless it may proceed."""
        if req.path in PUBLIC_PATHS:
            return
        if not self._tokens:
            if is_loopback(req.remote_addr):
                return
            raise Unauthorized(
                "this scheduler has no API tokens configured and serves loopback clients only; "
                "set TASKMILL_API_TOKENS to accept others"
            )
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not self._valid(token.strip().encode("utf-8")):
            raise Unauthorized()

    def _valid(self, token: bytes) -> bool:
        # Compare against every token, so the time taken says nothing about which one matched.
        matched = False
        for known in self._tokens:
            matched |= hmac.compare_digest(token, known)
        return matched and bool(token)
