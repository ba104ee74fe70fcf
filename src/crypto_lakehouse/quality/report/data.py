"""Gather what `lakehouse quality report` shows: refresh what gold lacks, then read it back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from crypto_lakehouse.datasets import dataset_for_table
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.facts import manifest_days
from crypto_lakehouse.quality.checks.fingerprints import FINGERPRINTS_SCHEMA
from crypto_lakehouse.quality.checks.tables import table_kind
from crypto_lakehouse.quality.refresh import store as gold
from crypto_lakehouse.quality.refresh.inputs import SILVER, manifest_state
from crypto_lakehouse.quality.refresh.run import refresh_quality
from crypto_lakehouse.storage import partitions

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import date

    from crypto_lakehouse.storage.root import LakeRoot

StepCallback = Callable[[int, int, str], None]


@dataclass(slots=True, frozen=True)
class QualityView:
    """Stored quality results of some tables, symbols and days."""

    scores: pl.DataFrame
    deductions: pl.DataFrame
    gaps: pl.DataFrame
    holes: pl.DataFrame
    violations: pl.DataFrame
    new_formats: pl.DataFrame


def checked_tables(lake: LakeRoot, table: str | None = None) -> list[str]:
    """Return the silver tables to report on: `table`, or every checkable one in the lake.

    Raises:
        ConfigurationError: `table` is not a checked data type.
    """
    if table is not None:
        table_kind(table)
        return [table]
    found = []
    for name in lake.list_dirs(SILVER):
        try:
            table_kind(name)
            dataset_for_table(name)
        except (ConfigurationError, KeyError):
            continue
        found.append(name)
    return found


def _in_scope(
    frame: pl.DataFrame, symbols: Sequence[str] | None, start: date | None, end: date | None
) -> pl.DataFrame:
    """Keep rows of the symbols and inclusive day range asked for."""
    if symbols:
        frame = frame.filter(pl.col("symbol").is_in(list(symbols)))
    if start is not None:
        frame = frame.filter(pl.col("day") >= start)
    if end is not None:
        frame = frame.filter(pl.col("day") <= end)
    return frame


def _universe(
    lake: LakeRoot, table: str, symbols: Sequence[str] | None, start: date | None, end: date | None
) -> pl.DataFrame:
    """Return every (symbol, day) in scope that has silver rows or a manifest record."""
    dataset = dataset_for_table(table)
    current, _ = manifest_state(lake, dataset)
    recorded = manifest_days(current.filter(pl.col("status") != "superseded"))
    column = dataset.time_column
    filter_expr = partitions.range_filter(column, symbols=symbols, start=start, end=end)
    rows = partitions.scan(lake, SILVER, table, filter_expr=filter_expr, columns=["symbol", column])
    days = [recorded.select("symbol", "day")]
    if rows is not None and rows.height:
        days.append(rows.select("symbol", pl.col(column).dt.date().alias("day")))
    return _in_scope(pl.concat(days).unique(), symbols, start, end)


def ensure_quality(
    lake: LakeRoot,
    tables: Sequence[str],
    *,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    on_step: StepCallback | None = None,
) -> int:
    """Compute quality for the (symbol, day)s in scope that `gold.quality` does not hold yet.

    Args:
        lake: The lake.
        tables: Silver tables to cover.
        symbols: Symbols in scope (all when empty).
        start: First day in scope (inclusive).
        end: Last day in scope (inclusive).
        on_step: Called as `(done, total, table)` after each table.

    Returns:
        How many (symbol, day)s were computed.
    """
    computed = 0
    for done, table in enumerate(tables, start=1):
        have = gold.read_days(
            lake, gold.QUALITY, tables=[table], symbols=symbols, start=start, end=end
        ).select("symbol", "day")
        missing = _universe(lake, table, symbols, start, end).join(
            have, on=["symbol", "day"], how="anti"
        )
        if missing.height:
            wanted: dict[str, set[date]] = {}
            for symbol, day in missing.iter_rows():
                wanted.setdefault(symbol, set()).add(day)
            computed += refresh_quality(lake, table, symbols_days=wanted).days
        if on_step is not None:
            on_step(done, len(tables), table)
    return computed


def load_view(
    lake: LakeRoot,
    tables: Sequence[str],
    *,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> QualityView:
    """Read the stored quality results in scope.

    Returns:
        `QualityView`; `new_formats` lists the files whose format fingerprint is new.
    """

    def read(name: str) -> pl.DataFrame:
        return gold.read_days(lake, name, tables=tables, symbols=symbols, start=start, end=end)

    formats = partitions.scan(lake, gold.GOLD, gold.FINGERPRINTS)
    if formats is None:
        formats = FINGERPRINTS_SCHEMA.to_frame()
    formats = formats.filter(pl.col("is_new") & pl.col("table").is_in(list(tables)))
    if symbols:
        formats = formats.filter(pl.col("symbol").is_in(list(symbols)))
    return QualityView(
        scores=read(gold.QUALITY),
        deductions=read(gold.DEDUCTIONS),
        gaps=read(gold.GAPS),
        holes=read(gold.HOLES),
        violations=read(gold.VIOLATIONS),
        new_formats=formats.sort("seen_at"),
    )
