"""Running Microsoft's ``azure-planetarycomputer`` tests and samples against the GeoCatalog emulator.

``devtools_testutils/`` is a live-mode stand-in for the SDK repository's test tooling (put on the tests'
``PYTHONPATH``, never imported by this project's own tests); ``pc.py`` downloads the package's source
distribution, seeds the emulator with the collection and items the official tests expect, and builds the
environment the samples and tests run in.
"""
