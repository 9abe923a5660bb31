"""Fixtures shared by every package's tests: a real PostgreSQL and a fresh database per test."""

pytest_plugins = ["taskmill.testing.plugin"]
