"""Prometheus metrics and JSON log lines."""
