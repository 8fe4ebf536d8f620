"""emqx-client-exporter: per-client EMQX metrics for Prometheus."""

__version__ = "0.1.0"
