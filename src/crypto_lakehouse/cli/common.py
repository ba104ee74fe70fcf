"""Helpers shared by the CLI modules: settings from flags, errors without tracebacks."""

from __future__ import annotations

from typing import Annotated

import typer

from crypto_lakehouse.cli import render
from crypto_lakehouse.config import Settings, load_settings

state: dict[str, object] = {"debug": False}

RootOption = Annotated[
    str | None, typer.Option("--root", help="Lake root (path or s3://bucket/prefix)")
]


def settings_for(root: str | None, **overrides: object) -> Settings:
    """Return settings with command-line overrides applied."""
    return load_settings(root=root, **overrides)


def fail(exc: Exception) -> typer.Exit:
    """Print an error without a traceback (unless --debug) and return exit code 2."""
    if state["debug"]:
        raise exc
    render.stderr.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def parse_symbols(value: str | None) -> tuple[str, ...]:
    """Split `A,B` into upper-case symbols."""
    if not value:
        return ()
    return tuple(s.strip().upper() for s in value.split(",") if s.strip())
