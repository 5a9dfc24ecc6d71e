"""A pytest plugin for the package-test subprocesses (``runner.run_pytest(test_timeouts=...)``): a longer
pytest-timeout for the tests named in ``GCW_TEST_TIMEOUTS`` (``name=seconds,...``; a test function's name, every
parametrisation), so one test that is slow by design gets its time without raising every test's timeout."""

from __future__ import annotations

import os

import pytest


def parse(text: str) -> dict[str, int]:
    pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
    return {name.strip(): int(seconds) for name, seconds in pairs}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    timeouts = parse(os.environ.get("GCW_TEST_TIMEOUTS", ""))
    for item in items:
        seconds = timeouts.get(item.name.split("[", 1)[0])
        if seconds is not None:
            item.add_marker(pytest.mark.timeout(seconds))
