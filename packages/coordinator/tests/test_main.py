"""Settings and the ``taskmill-coordinator`` process: flags, env, start-up errors, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from taskmill.common.errors import ConfigError
from taskmill.common.grpcutil import check_health
from taskmill.coordinator import load_settings

ENV = {"TASKMILL_DATABASE_URL": "postgresql://u:p@db:5433/tm"}


def test_defaults() -> None:
    settings = load_settings([], ENV)
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.dead_after == 15.0
    assert settings.lease_seconds == 15.0
    assert settings.worker_heartbeat_interval == 1.0
    assert settings.migrate is True
    assert (settings.database.host, settings.database.port) == ("db", 5433)
    assert settings.security.cluster_token is None


def test_flags_override_the_environment() -> None:
    env = {
        **ENV,
        "TASKMILL_COORDINATOR_PORT": "9000",
        "TASKMILL_COORDINATOR_DEAD_AFTER": "3",
        "TASKMILL_COORDINATOR_BATCH_SIZE": "64",
        "TASKMILL_COORDINATOR_NO_MIGRATE": "true",
        "TASKMILL_CLUSTER_TOKEN": "s3cret",
    }
    settings = load_settings(["--port", "0", "--retry-backoff-base", "0.5"], env)
    assert settings.port == 0
    assert settings.dead_after == 3.0
    assert settings.worker_heartbeat_interval == 1.0
    assert settings.batch_size == 64
    assert settings.retry_backoff_base == 0.5
    assert settings.migrate is False
    assert settings.security.cluster_token == "s3cret"
    assert load_settings(["--dead-after", "1.5"], ENV).worker_heartbeat_interval == 0.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "x"], "--port must be a number"),
        (["--port", "70000"], "--port must be at most"),
        (["--dead-after", "0"], "--dead-after must be positive"),
        (["--batch-size", "-1"], "--batch-size must be positive"),
    ],
)
def test_bad_values_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(argv, ENV)


def _run(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskmill.coordinator", *argv],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_process_serves_then_stops_cleanly_on_sigterm(database_url: str) -> None:
    env = {"TASKMILL_DATABASE_URL": database_url}
    with _run(env, "--host", "127.0.0.1", "--port", "0") as process:
        try:
            assert process.stderr is not None
            port = None
            while port is None:
                line = process.stderr.readline()
                assert line, "the coordinator exited before listening"
                match = re.search(r"taskmill-coordinator listening on \S+:(\d+)", line)
                port = int(match.group(1)) if match else None
            assert check_health(f"127.0.0.1:{port}")
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
            assert process.returncode == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_an_unreachable_database_is_one_clear_line_and_exit_1() -> None:
    env = {"TASKMILL_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    with _run(env, "--port", "0") as process:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("taskmill-coordinator: cannot connect to PostgreSQL")


def test_a_bad_flag_value_exits_1() -> None:
    with _run(ENV, "--dead-after", "soon") as process:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "--dead-after must be a number" in stderr
