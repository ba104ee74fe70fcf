"""Rendering for the CLI: rich progress bars on stderr, result tables and data on stdout."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import TYPE_CHECKING, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    import polars as pl
    from rich.text import Text

    from crypto_lakehouse.ingest.results import IngestResult

stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True)


class _CountOrBytes(ProgressColumn):
    """Show `done/total` for counted tasks and sizes for byte tasks."""

    def __init__(self) -> None:
        super().__init__()
        self._count = MofNCompleteColumn()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        """Render one task's progress."""
        column = self._bytes if task.fields.get("bytes") else self._count
        return column.render(task)


class RichProgress:
    """A ProgressSink drawing bars on stderr: files, and bytes with the transfer rate."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _CountOrBytes(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=False,
        )
        self._files: TaskID | None = None
        self._bytes: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def plan(self, files: int, total_bytes: int) -> None:
        """Create the bars once the run knows its size."""
        self._files = self._progress.add_task("files", total=files)
        self._bytes = self._progress.add_task("download", total=total_bytes or None, bytes=True)

    def downloaded(self, nbytes: int) -> None:
        """Advance the byte bar."""
        if self._bytes is not None:
            self._progress.advance(self._bytes, nbytes)

    def file_done(self, key: str, outcome: str) -> None:
        """Advance the file bar."""
        if self._files is not None:
            self._progress.advance(self._files, 1)


def ingest_summary(result: IngestResult) -> Table:
    """Return the final summary table of an ingest run."""
    table = Table(title=f"ingest {result.table}")
    table.add_column("outcome")
    table.add_column("files", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("bytes", justify="right")
    groups: dict[str, list[int]] = {}
    for f in result.files:
        acc = groups.setdefault(f.outcome, [0, 0, 0])
        acc[0] += 1
        acc[1] += f.rows
        acc[2] += f.bytes
    for outcome, (files, rows, nbytes) in sorted(groups.items()):
        table.add_row(outcome, f"{files:,}", f"{rows:,}", f"{nbytes:,}")
    return table


def problems_table(result: IngestResult) -> Table | None:
    """Return a table naming each failed file and its reason, or None when all went well."""
    if not result.failed:
        return None
    table = Table(title="files not loaded")
    table.add_column("file")
    table.add_column("outcome")
    table.add_column("reason", overflow="fold")
    for f in result.failed:
        table.add_row(f.key, f.outcome, f.reason)
    return table


def frame_table(frame: pl.DataFrame, title: str | None = None) -> Table:
    """Return a polars frame as a rich table."""
    table = Table(title=title)
    for name in frame.columns:
        table.add_column(name)
    for row in frame.iter_rows():
        table.add_row(*(_text(v) for v in row))
    return table


def _text(value: object) -> str:
    """Render one cell."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1_000 and not _looks_like_id(value) else str(value)
    return str(value)


def _looks_like_id(value: int) -> bool:
    """Tell whether an integer is probably an id or epoch (no thousands separators)."""
    return abs(value) >= 10**9


def _json_default(value: object) -> str:
    """Serialise datetimes as ISO 8601 with offset."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def frame_json(frame: pl.DataFrame) -> str:
    """Return a frame as a JSON array of objects."""
    return json.dumps(frame.to_dicts(), default=_json_default)


def frame_csv(frame: pl.DataFrame) -> str:
    """Return a frame as CSV with a header row."""
    return frame.write_csv()
