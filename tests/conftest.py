"""Shared pytest configuration. Fixtures for the emulators live in tests/support/ (one plugin each)."""

import logging
import os

import pytest
import structlog
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.support.servicebus", "tests.support.geocatalog", "tests.support.tracing"]

# Property tests assert behaviour, never speed: no per-example deadline and no "input generation is slow" check
# (both measure wall-clock time, which a loaded 2-CPU box stretches; speed is the benchmarks' job).
settings.register_profile("gcw", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# In CI, property tests explore the same examples on every run: a red build always means a code change,
# never a newly drawn example. Locally they stay random, which is how new counter-examples are found.
settings.register_profile("ci", parent=settings.get_profile("gcw"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "gcw")


def pytest_configure(config: pytest.Config) -> None:
    """``make test`` runs ``--dist loadgroup``: tests that share a fixed port or a costly module fixture carry an
    ``xdist_group`` mark so that one worker runs them all. pytest-xdist marks a test's group by appending
    ``@group`` to its node id, which pytest 9.2 silently ignores (pytest-dev/pytest-xdist#1386, open): the tests
    then spread over the workers, contend for the port and each worker runs the module fixture. Refuse that."""
    if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} drops xdist_group marks under --dist loadgroup "
            "(pytest-dev/pytest-xdist#1386): install the pytest pinned in constraints.txt (make test does)"
        )


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
