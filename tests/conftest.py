"""Shared pytest configuration. Fixtures for the emulators live in tests/fixtures/ (one plugin each)."""

import os

from hypothesis import settings

pytest_plugins = ["tests.fixtures.servicebus", "tests.fixtures.geocatalog"]

# In CI, property tests explore the same examples on every run: a red build always means a code change,
# never a newly drawn example. Locally they stay random, which is how new counter-examples are found.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
