"""bench_e2e.py's peers: each script in ``bench/peers/`` run in the peers' own environment."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PEERS = ("procrastinate", "pgqueuer", "celery")
PEERS_VENV = Path(os.environ.get("TASKMILL_BENCH_PEERS_VENV", "/tmp/taskmill-bench-peers"))


def run_peer(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs one peer script in the peers' environment; its JSON line, or an error."""
    python = PEERS_VENV / "bin" / "python"
    command = [
        str(python),
        str(ROOT / "peers" / f"{name}_peer.py"),
        *("--tasks", str(args.tasks), "--chunk", str(args.chunk)),
        *("--workers", str(args.workers), "--concurrency", str(args.concurrency)),
        *("--samples", str(args.samples), "--pause", str(args.pause)),
        *("--timeout", str(args.timeout)),
    ]
    print(f"{name}: {args.workers} workers x concurrency {args.concurrency}", flush=True)
    try:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, timeout=2 * args.timeout + 90, check=False
        )
    except subprocess.TimeoutExpired:
        return {"system": name, "error": "timed out"}
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"system": name, "error": f"exit {done.returncode}"}
    return dict(json.loads(lines[-1]))


def setup_peers() -> None:
    """Creates or updates the peers' environment (outside the workspace)."""
    subprocess.run(
        ["bash", str(ROOT / "peers" / "setup.sh"), str(PEERS_VENV)], check=True, timeout=600
    )
