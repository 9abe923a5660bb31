#!/usr/bin/env bash
# Creates the peers' own environment, outside the taskmill workspace and its lock:
#   bash bench/peers/setup.sh [VENV]   (default /tmp/taskmill-bench-peers)
# Procrastinate and PgQueuer use the local PostgreSQL; Celery uses the local Redis.
set -euo pipefail
venv="${1:-${TASKMILL_BENCH_PEERS_VENV:-/tmp/taskmill-bench-peers}}"
if [ ! -x "$venv/bin/python" ]; then
    uv venv --quiet "$venv" --python 3.11
fi
uv pip install --quiet --python "$venv/bin/python" \
    'procrastinate>=3' 'pgqueuer>=0.19' 'celery[redis]>=5.4' 'psycopg[binary,pool]>=3.2' \
    'asyncpg>=0.30'
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print(", ".join(f"{name} {version(name)}" for name in
                ("procrastinate", "pgqueuer", "celery", "redis", "psycopg", "asyncpg")))
PY
