"""Shared pytest configuration. Fixtures for the emulators live in tests/support/ (one plugin each)."""

import logging
import os

import pytest
import structlog
from hypothesis import settings

pytest_plugins = ["tests.support.servicebus", "tests.support.geocatalog", "tests.support.tracing"]

# In CI, property tests explore the same examples on every run: a red build always means a code change,
# never a newly drawn example. Locally they stay random, which is how new counter-examples are found.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def restore_logging():
    """For tests that run commands configuring structlog and the root logger in-process (``dlq``): undo that
    afterwards so the tests that follow log as before."""
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    structlog.configure(**saved_config)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
