"""Shared pytest configuration. Fixtures for the emulators live in tests/fixtures/ (one plugin each)."""

pytest_plugins = ["tests.fixtures.servicebus", "tests.fixtures.geocatalog"]
