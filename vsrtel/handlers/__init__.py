"""Ready-made handlers: logs (structlog), spans and metrics (OpenTelemetry)."""
