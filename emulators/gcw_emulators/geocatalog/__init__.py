"""GeoCatalog (Microsoft Planetary Computer Pro) data-plane + SAS API emulator over HTTP, with fault injection.

See docs/emulator-geocatalog.md. ``GeoCatalogEmulator(...).start()`` serves on a background thread.
"""

from gcw_emulators.geocatalog.faults import FaultSpecError
from gcw_emulators.geocatalog.server import GeoCatalogEmulator

__all__ = ["FaultSpecError", "GeoCatalogEmulator"]
