"""GeoCatalog (Microsoft Planetary Computer Pro) data-plane + SAS API emulator over HTTP, with fault injection.

See docs/emulator-geocatalog.md. ``GeoCatalogEmulator(...).start()`` serves on a background thread.
"""

from worker.emulators.geocatalog.faults import FaultSpecError
from worker.emulators.geocatalog.server import GeoCatalogEmulator

__all__ = ["FaultSpecError", "GeoCatalogEmulator"]
