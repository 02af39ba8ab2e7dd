"""Export: OpenTelemetry provider setup (:mod:`vsrtel.export.otel`) and the Prometheus endpoint
(:mod:`vsrtel.export.prometheus`).

Not handlers: they build what the handlers write to, and serve or send it.
"""
