"""Shared test configuration: service fixtures live in tests/support/."""

pytest_plugins = ["tests.support.redis", "tests.support.pg"]
