"""Pipelines: source → bronze (ingest), bronze → silver, silver → gold."""
