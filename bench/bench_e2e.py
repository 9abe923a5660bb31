"""End-to-end benchmark of a real taskmill cluster, with its peers side by side.

Prints figures, asserts nothing. Starts the real processes (``taskmill.dev.harness``): one
scheduler, one coordinator and ``--workers`` workers against a throwaway database on the local
PostgreSQL (127.0.0.1:5432, user postgres), dropped afterwards. Then:

1. Throughput: ``--tasks`` ``echo`` tasks through ``POST /v1/tasks/batch`` in chunks of
   ``--chunk``, from the first submit until a direct ``count(*)`` of succeeded tasks (polled
   every 20 ms) reaches them all. Also the database's own span: last ``finished_at`` minus first
   ``created_at``.
2. Pickup latency on the idle cluster: ``--samples`` single ``POST /v1/tasks``, one after the
   other (each waits for the previous one to succeed, then ``--pause``): ``started_at`` (the
   worker's clock as the handler starts) minus ``created_at`` (the database's ``now()`` in the
   submit's transaction), split at ``dispatched_at`` (the claim's ``now()``); and the client's
   round trip from the submit call to the poll (every 1 ms, direct SQL) that saw it succeeded.
   Then as many single tasks due ``--due-in`` seconds after their submit (the coordinator's
   timer, not its ``LISTEN``): how late each starts, ``started_at`` minus ``scheduled_at``.
3. Peers: each script in ``bench/peers/`` runs with the peers' own interpreter (made by
   ``bench/peers/setup.sh``), with the same tasks, chunk, workers and concurrency, and prints
   one JSON line; all of them end in one table.

The parts live beside this script: ``_e2e_taskmill.py`` (the cluster and its run),
``_e2e_phases.py`` (the three phases), ``_e2e_measure.py`` (clocks, CPU time, percentiles),
``_e2e_peers.py`` (the peers' runner) and ``_e2e_report.py`` (what is printed).

    uv run python bench/bench_e2e.py                   # everything
    uv run python bench/bench_e2e.py --peers none      # taskmill only
    uv run python bench/bench_e2e.py --profile DIR     # py-spy of each service in phase 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _e2e_peers import PEERS, run_peer, setup_peers
from _e2e_report import machine, report
from _e2e_taskmill import run_taskmill

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker")
    parser.add_argument("--queue-size", type=int, default=1000, help="taskmill worker queue")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument(
        "--due-in", type=float, default=0.05, help="phase 3: tasks due this long after submit"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each phase")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma list, or none")
    parser.add_argument("--no-taskmill", action="store_true", help="run the peers only")
    parser.add_argument("--no-setup", action="store_true", help="use the peers' venv as it is")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument(
        "--no-vacuum", action="store_true", help="no VACUUM ANALYZE between phases 1 and 2"
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy the services during phase 1")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the services' environment (repeatable), e.g. TASKMILL_LOG_LEVEL=DEBUG",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument("--json", metavar="FILE", help="also write every row here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    peers = [p for p in args.peers.split(",") if p and p != "none"]
    print(machine(), flush=True)
    rows: list[dict[str, Any]] = []
    if not args.no_taskmill:
        rows.append(run_taskmill(args))
    if peers and not args.no_setup:
        setup_peers()
    for name in peers:
        rows.append(run_peer(name, args))
    report(rows, args.due_in)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
