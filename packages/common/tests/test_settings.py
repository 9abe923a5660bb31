"""Shared settings: database URLs, the common ``TASKMILL_*`` variables and boolean values."""

from __future__ import annotations

import pytest

from taskmill.common.errors import ConfigError
from taskmill.common.settings import (
    DEFAULT_DATABASE_URL,
    CommonSettings,
    DatabaseSettings,
    parse_bool,
)


def test_from_url_reads_every_part() -> None:
    settings = DatabaseSettings.from_url("postgresql://app:s3cret@db.internal:6543/jobs")

    assert (settings.user, settings.password) == ("app", "s3cret")
    assert (settings.host, settings.port, settings.database) == ("db.internal", 6543, "jobs")


def test_from_url_defaults_user_port_and_password() -> None:
    settings = DatabaseSettings.from_url("postgres://localhost/taskmill")

    assert (settings.user, settings.password, settings.port) == ("postgres", None, 5432)


def test_from_url_decodes_percent_escapes() -> None:
    settings = DatabaseSettings.from_url("postgresql://us%40er:p%40ss%3Aw@[::1]:5433/my%20db")

    assert (settings.user, settings.password) == ("us@er", "p@ss:w")
    assert (settings.host, settings.port, settings.database) == ("::1", 5433, "my db")


def test_password_is_masked_in_url_and_repr() -> None:
    settings = DatabaseSettings.from_url("postgresql://app:s3cret@db:5432/jobs")

    assert settings.url == "postgresql://app:***@db:5432/jobs"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in repr(CommonSettings(settings, cluster_token="tok3n"))
    assert "tok3n" not in repr(CommonSettings(settings, cluster_token="tok3n"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x", "must start with postgresql:// (got mysql://)"),
        ("db.internal:5432/jobs", "must start with postgresql://"),
        ("", "must start with postgresql:// (got no scheme)"),
        ("postgresql://host:notaport/db", "malformed"),
        ("postgresql://host:70000/db", "malformed"),
        ("postgresql:///jobs", "names no host"),
        ("postgresql://host", "must name one database"),
        ("postgresql://host/", "must name one database"),
        ("postgresql://host/a/b", "must name one database"),
    ],
)
def test_from_url_rejects_malformed_urls_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        DatabaseSettings.from_url(url)

    assert message in raised.value.message
    assert raised.value.message.startswith("TASKMILL_DATABASE_URL")
    assert "\n" not in raised.value.message


def test_common_settings_from_env() -> None:
    settings = CommonSettings.from_env(
        {
            "TASKMILL_DATABASE_URL": "postgresql://app@db:5432/jobs",
            "TASKMILL_CLUSTER_TOKEN": "tok3n",
            "TASKMILL_MIGRATE": "off",
        }
    )

    assert settings.database == DatabaseSettings.from_url("postgresql://app@db:5432/jobs")
    assert settings.cluster_token == "tok3n"
    assert settings.migrate_on_start is False


def test_common_settings_defaults() -> None:
    for env in ({}, {"TASKMILL_DATABASE_URL": "", "TASKMILL_CLUSTER_TOKEN": ""}):
        settings = CommonSettings.from_env(env)

        assert settings.database == DatabaseSettings.from_url(DEFAULT_DATABASE_URL)
        assert settings.cluster_token is None
        assert settings.migrate_on_start is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TASKMILL_DATABASE_URL": "mysql://x"}, "TASKMILL_DATABASE_URL must start with"),
        ({"TASKMILL_MIGRATE": "maybe"}, "TASKMILL_MIGRATE must be true or false, not 'maybe'"),
    ],
)
def test_common_settings_reject_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CommonSettings.from_env(env)


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On", " true "])
def test_parse_bool_true(value: str) -> None:
    assert parse_bool(value, "X") is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "OFF", ""])
def test_parse_bool_false(value: str) -> None:
    assert parse_bool(value, "X") is False


@pytest.mark.parametrize("value", ["2", "enabled", "tru", "yes please"])
def test_parse_bool_rejects_other_values_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_bool(value, "TASKMILL_SOMETHING")

    assert raised.value.message == f"TASKMILL_SOMETHING must be true or false, not {value!r}"


def test_config_error_without_a_message_uses_its_docstring() -> None:
    assert ConfigError().message == "The configuration is invalid."
    assert ConfigError("x").message == "x"
    assert ConfigError.retryable is False
