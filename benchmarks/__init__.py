"""Benchmarks of geocatalog-worker against the local emulators: ``python -m benchmarks run [--smoke]``.

See docs/benchmarks.md for the scenarios, the figures and how to read them.
"""
