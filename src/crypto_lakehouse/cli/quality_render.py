"""Rendering for `lakehouse quality` and `lakehouse gold`: progress bars, scores, problems."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crypto_lakehouse.cli.render import frame_table, stderr

if TYPE_CHECKING:
    from rich.table import Table

    from crypto_lakehouse.gold.build import GoldBuildResult
    from crypto_lakehouse.quality.reconcile.lake import ReconcileResult
    from crypto_lakehouse.quality.report.data import QualityView

TOP: Final = 15


class StepProgress:
    """A rich progress bar on stderr fed by `(done, total, label)` callbacks."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[label]}"),
            TimeElapsedColumn(),
            console=stderr,
        )
        self._task = self._progress.add_task(description, total=None, label="")

    def __enter__(self) -> StepProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, done: int, total: int, label: str) -> None:
        """Show that `done` of `total` steps are finished, the last one being `label`."""
        self._progress.update(self._task, completed=done, total=total, label=label)


def scores_table(view: QualityView) -> Table:
    """Return per (table, symbol): days scored, mean and lowest score, days below 100."""
    if view.scores.is_empty():
        return frame_table(pl.DataFrame({"scores": ["no quality results in scope"]}))
    summary = (
        view.scores.group_by("table", "symbol")
        .agg(
            days=pl.len(),
            first=pl.col("day").min(),
            last=pl.col("day").max(),
            mean=pl.col("score").mean().round(2),
            min=pl.col("score").min(),
            below_100=(pl.col("score") < 100).sum(),
        )
        .sort("table", "symbol")
    )
    return frame_table(summary, title="quality scores")


def worst_days_table(view: QualityView) -> Table | None:
    """Return the lowest-scoring days with their deductions, or None when all are 100."""
    worst = view.scores.filter(pl.col("score") < 100).sort("score", "table", "symbol", "day")
    if worst.is_empty():
        return None
    why = (
        view.deductions.sort("points", descending=True)
        .group_by("table", "symbol", "day", maintain_order=True)
        .agg(why=pl.format("{} −{}", pl.col("check"), pl.col("points").round(2)).str.join("; "))
    )
    shown = worst.head(TOP).join(why, on=["table", "symbol", "day"], how="left")
    return frame_table(shown.select("table", "symbol", "day", "score", "why"), title="worst days")


def gaps_table(view: QualityView) -> Table | None:
    """Return the largest gaps with their cause, or None when there is none."""
    if view.gaps.is_empty():
        return None
    shown = view.gaps.sort("missing", descending=True, nulls_last=True).head(TOP)
    columns = ["table", "symbol", "interval", "gap_start", "gap_end", "missing", "cause", "detail"]
    title = f"gaps ({view.gaps.height} in all, largest first)"
    return frame_table(shown.select(columns), title=title)


def holes_table(view: QualityView) -> Table | None:
    """Return the id sequence breaks, or None when ids run without holes."""
    if view.holes.is_empty():
        return None
    shown = view.holes.sort("missing", descending=True).head(TOP)
    columns = ["table", "symbol", "day", "check", "kind", "before_id", "after_id", "missing"]
    return frame_table(shown.select(columns), title=f"id holes ({view.holes.height} in all)")


def violations_table(view: QualityView) -> Table | None:
    """Return invariant violations per rule, or None when every row passes."""
    if view.violations.is_empty():
        return None
    per_rule = (
        view.violations.group_by("table", "symbol", "rule")
        .agg(rows=pl.len(), first_key=pl.col("key").min(), detail=pl.col("detail").first())
        .sort("rows", descending=True)
        .head(TOP)
    )
    return frame_table(per_rule, title="invariant violations")


def formats_table(view: QualityView) -> Table | None:
    """Return files whose format fingerprint was never seen before, or None."""
    if view.new_formats.is_empty():
        return None
    columns = ["table", "key", "status", "column_count", "time_unit", "header", "fingerprint"]
    return frame_table(view.new_formats.select(columns), title="new file formats")


def reconcile_table(result: ReconcileResult) -> Table:
    """Return compared rows and mismatches per check and symbol."""
    if result.runs.is_empty():
        return frame_table(pl.DataFrame({"reconciliation": ["nothing to compare in scope"]}))
    summary = (
        result.runs.group_by("check", "table", "symbol")
        .agg(
            days=pl.len(),
            compared_rows=pl.col("compared_rows").sum(),
            mismatches=pl.col("mismatches").sum(),
        )
        .sort("check", "symbol")
    )
    return frame_table(summary, title="reconciliation")


def mismatches_table(result: ReconcileResult) -> Table | None:
    """Return the first mismatches with both values, or None when everything agreed."""
    if result.mismatches.is_empty():
        return None
    columns = [
        "check",
        "symbol",
        "key",
        "column",
        "kind",
        "left_source",
        "left_value",
        "right_source",
        "right_value",
    ]
    shown = result.mismatches.sort("check", "symbol", "key").head(TOP).select(columns)
    return frame_table(shown, title=f"mismatches ({result.mismatches.height} in all)")


def gold_build_table(result: GoldBuildResult) -> Table:
    """Return the (symbol, day)s rebuilt and rows written per gold product."""
    if not result.written:
        message = f"{result.table}: no input changed since the last build; nothing written"
        return frame_table(pl.DataFrame({"gold build": [message]}))
    rows = [
        {"product": product, "days rebuilt": result.days(product), "rows": result.rows[product]}
        for product in result.rebuilt
    ]
    return frame_table(pl.DataFrame(rows), title=f"gold build {result.table}")
