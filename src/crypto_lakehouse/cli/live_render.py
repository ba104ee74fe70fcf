"""Rendering for `lakehouse update` and `lakehouse stream`: progress on stderr, summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.progress import (
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from crypto_lakehouse.cli.render import RichProgress, problems_table, stderr

if TYPE_CHECKING:
    from datetime import date

    from crypto_lakehouse.ingest.results import SupersessionSummary
    from crypto_lakehouse.recent.results import DayFill, StreamResult, UpdateResult

REST_STATUS_TEXT: dict[str, str] = {
    "ok": "ok",
    "not_needed": "not needed (the archive covers every day)",
    "unsupported": "not available for this data type",
    "region_blocked": "REST unavailable from this region (archive only)",
    "banned": "stopped: IP banned (HTTP 418)",
    "errors": "some days failed",
}


class UpdateProgressBars(RichProgress):
    """Progress of `update` on stderr: archive files and bytes, then REST days."""

    def __init__(self) -> None:
        super().__init__()
        self._days: TaskID | None = None

    def rest_plan(self, days: int) -> None:
        """Create the REST day bar."""
        self._days = self._progress.add_task("REST days", total=days)

    def rest_day(self, symbol: str, day: date, rows: int) -> None:
        """Advance the REST day bar."""
        if self._days is not None:
            self._progress.advance(self._days, 1)


def update_summary(result: UpdateResult) -> Table:
    """Return the one-table summary of an update run."""
    table = Table(title=f"update {result.table}")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    archive = result.archive
    table.add_row("archive files loaded", str(result.archive_loaded))
    if archive is not None:
        table.add_row("archive files unchanged", str(len(archive.skipped)))
        table.add_row("archive files failed", str(len(archive.failed)))
        table.add_row("archive days missing upstream", str(len(archive.missing)))
    if result.archive_error:
        table.add_row("archive error", result.archive_error)
    table.add_row("REST days filled", str(len(result.filled)))
    table.add_row("REST rows (provisional)", f"{result.rest_rows:,}")
    table.add_row("days still missing", str(len(result.still_missing)))
    status = REST_STATUS_TEXT.get(result.rest_status, result.rest_status)
    table.add_row("REST status", status)
    if result.rest_message:
        table.add_row("REST reason", result.rest_message)
    breakers = ", ".join(f"{host}: {state}" for host, state in result.breakers.items())
    table.add_row("breakers", breakers or "-")
    if result.supersessions is not None:
        s = result.supersessions
        table.add_row("superseded provisional rows", f"{s.superseded_rows:,}")
        table.add_row("supersession differences", f"{s.differences:,}")
    return table


def missing_days_table(result: UpdateResult) -> Table | None:
    """Return the days still missing as runs of consecutive days with the same reason."""
    if not result.still_missing:
        return None
    table = Table(title="days still missing")
    for name in ("symbol", "first", "last", "days", "gap", "outcome", "reason"):
        table.add_column(name, overflow="fold")
    runs: list[list[DayFill]] = []
    for day in sorted(result.still_missing, key=lambda d: (d.symbol, d.day)):
        last = runs[-1][-1] if runs else None
        if (last is not None and (last.symbol, last.gap, last.outcome, last.reason)
                == (day.symbol, day.gap, day.outcome, day.reason)
                and (day.day - last.day).days == 1):  # fmt: skip
            runs[-1].append(day)
        else:
            runs.append([day])
    for run in runs:
        first, last = run[0], run[-1]
        table.add_row(first.symbol, first.day.isoformat(), last.day.isoformat(), str(len(run)),
                      first.gap, first.outcome, first.reason)  # fmt: skip
    return table


def supersession_table(summary: SupersessionSummary) -> Table:
    """Return the supersession counts of a table (for `update` and `ingest`)."""
    table = Table(title=f"provisional rows superseded in {summary.table}")
    table.add_column("measure")
    table.add_column("rows", justify="right")
    table.add_row("superseded", f"{summary.superseded_rows:,}")
    table.add_row("identical", f"{summary.identical_rows:,}")
    table.add_row("with differing values", f"{summary.differing_rows:,}")
    for kind, count in summary.counts:
        table.add_row(kind.replace("_", " "), f"{count:,}")
    return table


def update_tables(result: UpdateResult) -> list[Table]:
    """Return every table an update run prints: summary, missing days, bad files, supersessions."""
    tables = [update_summary(result), missing_days_table(result)]
    if result.archive is not None:
        tables.append(problems_table(result.archive))
    if result.supersessions is not None:
        tables.append(supersession_table(result.supersessions))
    return [t for t in tables if t is not None]


def update_exit_code(result: UpdateResult) -> int:
    """Return 0 for success (archive-only by region included), 1 for failures, 2 for a ban."""
    if result.stopped:
        return 2
    return 0 if result.ok else 1


class StreamStatus:
    """A status line on stderr showing frames received and rows written while streaming."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]stream[/] {task.description}"), TimeElapsedColumn(), console=stderr
        )
        self._task: TaskID | None = None

    def __enter__(self) -> StreamStatus:
        self._progress.start()
        self._task = self._progress.add_task("connecting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, result: StreamResult) -> None:
        """Refresh the counters."""
        if self._task is not None:
            text = (
                f"frames {result.frames:,}  rows {result.total_rows:,}  "
                f"flushes {result.flushes}  reconnects {result.reconnects}"
            )
            self._progress.update(self._task, description=text)


def stream_summary(result: StreamResult) -> Table:
    """Return the summary of a stream run."""
    table = Table(title=f"stream {result.market}")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("frames received", f"{result.frames:,}")
    for name, rows in sorted(result.rows.items()):
        table.add_row(f"rows → silver.{name}", f"{rows:,}")
    table.add_row("flushes", str(result.flushes))
    table.add_row("reconnects", str(result.reconnects))
    table.add_row("back-filled rows (REST)", f"{result.backfilled_rows:,}")
    table.add_row("back-fill errors", str(len(result.backfill_errors)))
    table.add_row("bronze objects", str(len(result.bronze_keys)))
    return table
