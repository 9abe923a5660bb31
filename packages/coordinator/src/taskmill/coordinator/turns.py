"""The order in which a route's queues take their turns, round after round, by weight.

One claim shares its slots between a route's queues by weight (see dispatch.sql's
``_claim_turns``), but a busy fleet claims a slot or two at a time, as tasks finish: within one
claim the first queue would take them all. So the weights hold across claims here. Each queue
of a route has a credit, the tasks it was given divided by its weight, and a claim visits the
queues from the least credited (ties in the route's own order): with weights ``a=3, b=1`` and
one slot per claim, ``a`` gets three for each of ``b``'s. A queue that had nothing to take is
brought up to the least credit of those that took, so coming back after a quiet spell it
shares the slots again rather than takes them all until its credit catches up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from taskmill.common.models import ServedQueue
from taskmill.common.store import Route


class Turns:
    """The credits of each route's queues. Not thread-safe: the fleet calls it under its lock."""

    def __init__(self) -> None:
        self._credits: dict[Route, dict[str, float]] = {}

    def order(self, route: Route) -> tuple[ServedQueue, ...]:
        """The route's queues in the order the next claim visits them."""
        credits = self._credits.get(route)
        if credits is None or len(route.queues) < 2:
            return route.queues
        ranked = sorted(enumerate(route.queues), key=lambda q: (credits.get(q[1].name, 0.0), q[0]))
        return tuple(queue for _, queue in ranked)

    def given(self, route: Route, queues: Iterable[str]) -> None:
        """Records what a claim gave the route's queues: a task of each of ``queues``
        (counted only for a route of several queues: one queue has no turns to keep)."""
        if len(route.queues) < 2:
            return
        taken = Counter(queues)
        if not taken:
            return
        credits = self._credits.setdefault(route, {})
        floor = min(credits.get(name, 0.0) for name in taken)
        for name, weight in route.queues:
            credit = credits.get(name, 0.0)
            if name in taken:
                credits[name] = credit + taken[name] / weight
            else:
                credits[name] = max(credit, floor)

    def forget(self, route: Route) -> None:
        """Drops the credits of a route no worker has any more."""
        self._credits.pop(route, None)
