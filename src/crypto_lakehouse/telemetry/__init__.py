"""Telemetry: structured logs (and metrics), importable from every layer."""
