"""The `lakehouse` command: typer commands and their rendering (rich); thin adapters."""

from crypto_lakehouse.cli.app import app, main

__all__ = ["app", "main"]
