"""Adapters to the outside world below the Service Bus layer: GeoCatalog, SAS token sources, item fetching,
the host allow-list (the only URL policy) and the client-side rate limiter."""
