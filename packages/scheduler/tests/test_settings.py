"""Settings from the environment, and command-line flags over them."""

from __future__ import annotations

import pytest

from taskmill.common.errors import ConfigError
from taskmill.scheduler.__main__ import _parser, settings_from
from taskmill.scheduler.settings import SchedulerSettings


def test_defaults() -> None:
    settings = SchedulerSettings.from_env({})

    assert (settings.host, settings.port, settings.threads) == ("0.0.0.0", 8081, 16)
    assert settings.api_tokens == () and settings.migrate_on_start is True
    assert settings.max_payload_bytes == 256 * 1024
    assert settings.max_body_bytes > settings.max_payload_bytes
    assert settings.database.database == "taskmill"
    assert settings.statement_timeout == 30.0


def test_every_variable_is_read() -> None:
    settings = SchedulerSettings.from_env(
        {
            "TASKMILL_DATABASE_URL": "postgresql://u:p@db:6543/tm",
            "TASKMILL_SCHEDULER_HOST": "127.0.0.2",
            "TASKMILL_SCHEDULER_PORT": "9000",
            "TASKMILL_SCHEDULER_THREADS": "4",
            "TASKMILL_SCHEDULER_PROCESSES": "3",
            "TASKMILL_API_TOKENS": " a, b ,,c ",
            "TASKMILL_MAX_PAYLOAD_BYTES": "1000",
            "TASKMILL_MAX_BATCH_BYTES": "5000",
            "TASKMILL_MIGRATE": "false",
            "TASKMILL_SCHEDULER_STATEMENT_TIMEOUT": "2.5",
        }
    )

    assert (settings.host, settings.port, settings.threads) == ("127.0.0.2", 9000, 4)
    assert settings.processes == 3
    assert settings.api_tokens == ("a", "b", "c")
    assert (settings.max_payload_bytes, settings.max_batch_bytes) == (1000, 5000)
    assert settings.migrate_on_start is False
    assert (settings.database.host, settings.database.port) == ("db", 6543)
    assert settings.statement_timeout == 2.5


def test_tokens_never_appear_in_the_repr() -> None:
    settings = SchedulerSettings.from_env({"TASKMILL_API_TOKENS": "s3cret"})

    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKMILL_SCHEDULER_PORT", "http"),
        ("TASKMILL_SCHEDULER_PORT", "70000"),
        ("TASKMILL_SCHEDULER_THREADS", "0"),
        ("TASKMILL_SCHEDULER_PROCESSES", "0"),
        ("TASKMILL_MAX_PAYLOAD_BYTES", "-1"),
        ("TASKMILL_MAX_BATCH_BYTES", "1.5"),
        ("TASKMILL_SCHEDULER_STATEMENT_TIMEOUT", "30s"),
        ("TASKMILL_SCHEDULER_STATEMENT_TIMEOUT", "-1"),
        ("TASKMILL_SCHEDULER_STATEMENT_TIMEOUT", "nan"),
        ("TASKMILL_SCHEDULER_STATEMENT_TIMEOUT", "inf"),
        ("TASKMILL_SCHEDULER_STATEMENT_TIMEOUT", "86401"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        SchedulerSettings.from_env({variable: value})


def test_flags_override_the_environment() -> None:
    args = _parser().parse_args(
        ["--host", "::", "--port", "0", "--threads", "2", "--processes", "2", "--no-migrate",
         "--database-url", "postgresql://x@h/d", "--statement-timeout", "0"]
    )  # fmt: skip
    env = {
        "TASKMILL_SCHEDULER_HOST": "10.0.0.1",
        "TASKMILL_SCHEDULER_PORT": "1234",
        "TASKMILL_SCHEDULER_STATEMENT_TIMEOUT": "5",
    }

    settings = settings_from(args, env)

    assert (settings.host, settings.port, settings.threads, settings.processes) == ("::", 0, 2, 2)
    assert settings.migrate_on_start is False and settings.database.host == "h"
    assert settings.statement_timeout == 0.0


def test_a_bad_statement_timeout_flag_is_a_config_error_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--statement-timeout"):
        settings_from(_parser().parse_args(["--statement-timeout", "-5"]), {})


def test_without_flags_the_environment_stands() -> None:
    settings = settings_from(_parser().parse_args([]), {"TASKMILL_SCHEDULER_PORT": "1234"})

    assert settings.port == 1234 and settings.migrate_on_start is True
