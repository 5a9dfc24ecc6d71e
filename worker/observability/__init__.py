"""Logging (structlog JSON with secret redaction), Prometheus metrics and the health server."""
