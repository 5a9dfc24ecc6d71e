"""Local stand-ins for Azure Service Bus and GeoCatalog, used by the demo, the tests and the benchmarks.

The product never imports this package, except the ``demo`` command. Install with the ``emulators`` extra.
"""
