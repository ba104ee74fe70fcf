"""Helpers shared by the CLI modules: settings from flags, errors without tracebacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from crypto_lakehouse.cli import render
from crypto_lakehouse.config import Settings, load_settings

if TYPE_CHECKING:
    from crypto_lakehouse.storage.root import LakeRoot

state: dict[str, object] = {"debug": False}

RootOption = Annotated[
    str | None, typer.Option("--root", help="Lake root (path or s3://bucket/prefix)")
]


def settings_for(root: str | None, **overrides: object) -> Settings:
    """Return settings with command-line overrides applied."""
    return load_settings(root=root, **overrides)


def lake_for(settings: Settings, *, write: bool) -> LakeRoot:
    """Open the settings' lake after checking its format, so no command misreads a newer lake.

    A writing command stamps an unversioned lake first; a read-only one never writes.
    `ingest`, `update` and `stream` need no call: their pipelines check the lake themselves,
    after validating the request (so a mistyped flag writes nothing).

    Raises:
        LakeFormatError: the lake is newer than this package, or needs `lakehouse migrate`.
    """
    from crypto_lakehouse.storage.format_version import check_format
    from crypto_lakehouse.storage.root import LakeRoot

    lake = LakeRoot.at(settings.root)
    check_format(lake, write=write)
    return lake


def fail(exc: Exception) -> typer.Exit:
    """Print an error without a traceback (unless --debug) and return exit code 2.

    The message is printed as it is, on one line however wide: brackets in it are not
    markup, and a log reader or a test sees the whole sentence.
    """
    if state["debug"]:
        raise exc
    message = Text.assemble(("error:", "bold red"), " ", str(exc))
    render.stderr.print(message, soft_wrap=True)
    return typer.Exit(code=2)


def parse_symbols(value: str | None) -> tuple[str, ...]:
    """Split `A,B` into upper-case symbols."""
    if not value:
        return ()
    return tuple(s.strip().upper() for s in value.split(",") if s.strip())
