"""The GeoCatalog STAC API client (``client``) and its HTTP retry pieces (``retry``)."""
