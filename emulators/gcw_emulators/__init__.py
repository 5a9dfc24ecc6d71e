"""Local stand-ins for Azure Service Bus and GeoCatalog, and the end-to-end demo.

A distribution of its own (``geocatalog-worker-emulators``, in ``emulators/``), so that ``pip install
geocatalog-worker`` and the production image carry none of it. It adds the ``demo`` and ``emulator``
sub-commands to ``geocatalog-worker`` through the ``geocatalog_worker.commands`` entry point group. The
product never imports it.
"""
