"""Read and replace the (symbol, day) slices of a table: scans with pushdown, replace predicates.

Quality checks and gold builds work on sets of (symbol, UTC day). Each symbol's days are
grouped into inclusive runs of consecutive days, so one scan filter (symbol partition
pruning plus a time range per run) and one Delta predicate cover any set, however sparse.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse.storage import delta as tables

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from crypto_lakehouse.storage.root import LakeRoot

DayRun: TypeAlias = tuple[date, date]
Runs: TypeAlias = dict[str, list[DayRun]]
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def day_runs(days: Iterable[date]) -> list[DayRun]:
    """Return sorted days as inclusive runs of consecutive days.

    Example: {Jan 1, Jan 2, Jan 5} → [(Jan 1, Jan 2), (Jan 5, Jan 5)].
    """
    runs: list[DayRun] = []
    for day in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def symbol_runs(symbols_days: Mapping[str, Iterable[date]]) -> Runs:
    """Return each symbol's days as runs, dropping symbols without days."""
    out = {symbol: day_runs(days) for symbol, days in sorted(symbols_days.items())}
    return {symbol: runs for symbol, runs in out.items() if runs}


def run_days(run: DayRun) -> list[date]:
    """Return every day of an inclusive run."""
    first, last = run
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def midnight(day: date) -> datetime:
    """Return 00:00 UTC of a day."""
    return datetime.combine(day, time(), UTC)


def scan_filter(
    runs: Runs, *, time_column: str | None, pad_days: int = 0, date_column: str | None = None
) -> pc.Expression:
    """Return a pyarrow filter selecting each symbol's runs of days.

    Args:
        runs: Days per symbol as runs.
        time_column: The row time column; `None` selects whole symbols (no time bound).
        pad_days: Days added after each run's end (e.g. 1 to read the next midnight too).
        date_column: A `date` partition column holding each row's UTC day (tick tables),
            filtered too so that whole partitions are pruned.

    Returns:
        An expression for `Dataset.to_table(filter=...)`: `symbol` prunes partitions, the
        half-open time range per run prunes Parquet row groups by their statistics.
    """
    parts: list[pc.Expression] = []
    for symbol, symbol_day_runs in runs.items():
        by_symbol = pc.field("symbol") == symbol
        if time_column is None:
            parts.append(by_symbol)
            continue
        for first, last in symbol_day_runs:
            lo = pa.scalar(midnight(first), type=_TIMESTAMP)
            hi = pa.scalar(midnight(last + timedelta(days=1 + pad_days)), type=_TIMESTAMP)
            field = pc.field(time_column)
            part = by_symbol & (field >= lo) & (field < hi)
            if date_column is not None:
                days = pc.field(date_column)
                end = last + timedelta(days=pad_days)
                part = part & (days >= pa.scalar(first)) & (days <= pa.scalar(end))
            parts.append(part)
    if not parts:
        return pc.scalar(False)
    combined = parts[0]
    for part in parts[1:]:
        combined = combined | part
    return combined


def range_filter(
    time_column: str,
    *,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    where: pc.Expression | None = None,
) -> pc.Expression:
    """Return a pyarrow filter on symbols and an inclusive range of UTC days.

    Args:
        time_column: The row time column.
        symbols: Symbols to keep; all when empty.
        start: First day (inclusive); unbounded when `None`.
        end: Last day (inclusive); unbounded when `None`.
        where: An extra filter, and-ed with the rest.

    Returns:
        The filter (`true` when nothing restricts).
    """
    combined = pc.scalar(True) if where is None else where
    if symbols:
        combined = combined & pc.field("symbol").isin(list(symbols))
    if start is not None:
        combined = combined & (pc.field(time_column) >= pa.scalar(midnight(start), type=_TIMESTAMP))
    if end is not None:
        after = midnight(end + timedelta(days=1))
        combined = combined & (pc.field(time_column) < pa.scalar(after, type=_TIMESTAMP))
    return combined


def scan(
    lake: LakeRoot,
    layer: str,
    table: str,
    *,
    filter_expr: pc.Expression | None = None,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame | None:
    """Read the rows and columns asked for, pushing both down into the Parquet scan.

    Args:
        lake: The lake.
        layer: `silver` or `gold`.
        table: The table name.
        filter_expr: A pyarrow filter (see `scan_filter`); everything when `None`.
        columns: Columns to read (those the table lacks are skipped); all when `None`.

    Returns:
        The rows as a polars frame, or `None` when the table does not exist yet.
    """
    dataset = tables.arrow_dataset(lake, layer, table)
    if dataset is None:
        return None
    present = set(dataset.schema.names)
    wanted = None if columns is None else [c for c in columns if c in present]
    arrow = dataset.to_table(columns=wanted, filter=filter_expr)
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    # Lineage text is dictionary-encoded in silver; plain strings compare and join simply.
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.Utf8))


def scan_runs(
    lake: LakeRoot,
    layer: str,
    table: str,
    runs: Runs | None,
    *,
    time_column: str,
    columns: Sequence[str] | None = None,
    pad_days: int = 0,
    where: pc.Expression | None = None,
) -> pl.DataFrame | None:
    """Read the rows of each symbol's runs of days (all rows when `runs` is None).

    Args:
        lake: The lake.
        layer: `silver` or `gold`.
        table: The table name.
        runs: Days per symbol; `None` reads everything.
        time_column: The row time column the days refer to.
        columns: Columns to read; all when `None`.
        pad_days: Days read past each run's end.
        where: An extra filter, and-ed with the runs.

    Returns:
        The rows, or `None` when the table does not exist yet. A `date` partition column
        of date type, when the table has one, is used to prune partitions.
    """
    dataset = tables.arrow_dataset(lake, layer, table)
    if dataset is None:
        return None
    filter_expr = where
    if runs is not None:
        field = dataset.schema.field("date") if "date" in dataset.schema.names else None
        date_column = "date" if field is not None and pa.types.is_date(field.type) else None
        by_runs = scan_filter(
            runs, time_column=time_column, pad_days=pad_days, date_column=date_column
        )
        filter_expr = by_runs if where is None else by_runs & where
    return scan(lake, layer, table, filter_expr=filter_expr, columns=columns)


def literal(value: object) -> str:
    """Quote a value for a delta-rs predicate (dates and datetimes as ISO text)."""
    if isinstance(value, datetime):
        return "'" + value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "'"
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    return tables.sql_literal(value)


def runs_predicate(
    runs: Runs,
    *,
    fixed: Mapping[str, object] | None = None,
    symbol_column: str = "symbol",
    day_column: str = "day",
) -> str:
    """Return a Delta predicate matching the given columns and each symbol's runs of days.

    Example: `"table" = 'spot_klines' AND (("symbol" = 'BTCUSDT' AND "day" >= '2020-01-01'
    AND "day" <= '2020-01-03'))`. With no runs it matches nothing (`false`).
    """
    clauses = [f'"{name}" = {literal(value)}' for name, value in (fixed or {}).items()]
    per_run = [
        f'("{symbol_column}" = {literal(symbol)} AND "{day_column}" >= {literal(first)} '
        f'AND "{day_column}" <= {literal(last)})'
        for symbol, symbol_day_runs in runs.items()
        for first, last in symbol_day_runs
    ]
    clauses.append("(" + " OR ".join(per_run) + ")" if per_run else "false")
    return " AND ".join(clauses)


def in_runs(runs: Runs, *, symbol_column: str = "symbol", day_column: str = "day") -> pl.Expr:
    """Return a polars expression true for rows inside the runs (the predicate's twin)."""
    parts = [
        (pl.col(symbol_column) == symbol) & pl.col(day_column).is_between(first, last)
        for symbol, symbol_day_runs in runs.items()
        for first, last in symbol_day_runs
    ]
    return pl.any_horizontal(parts) if parts else pl.lit(False)


def replace_slices(
    lake: LakeRoot,
    layer: str,
    table: str,
    frame: pl.DataFrame,
    predicate: str,
    *,
    partition_by: list[str] | None = None,
) -> int:
    """Replace the rows matching `predicate` with `frame` in one commit; return the version.

    Every row of `frame` must match the predicate (delta-rs rejects the commit otherwise);
    an empty frame deletes the matching rows. The first write creates the table.
    """
    data = frame.to_arrow()
    return tables.replace_where(
        lake, layer, table, lambda: data, predicate, partition_by=partition_by
    )


def table_version(lake: LakeRoot, layer: str, table: str) -> int | None:
    """Return a table's current Delta version, or `None` when it does not exist."""
    delta = tables.open_table(lake, layer, table)
    return None if delta is None else int(delta.version())
