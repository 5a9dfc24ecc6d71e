"""geocatalog-worker: feed Microsoft Planetary Computer Pro (GeoCatalog) from Azure Service Bus."""

__version__ = "0.1.0"
