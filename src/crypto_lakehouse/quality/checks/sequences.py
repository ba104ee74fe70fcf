"""Check id continuity of trade tables, within a day and across day boundaries.

aggTrades carry two sequences: `agg_trade_id` (one per aggregate) and the range
`first_trade_id..last_trade_id` of raw trades, which must chain (row i's first id is row
i-1's last id + 1). trades carry `trade_id`. Each break is one row with the ids on both
sides; `missing` < 0 means the ids overlap or repeat instead of leaving a hole. Spot rows
that Binance marked invalid in 2022-04 (`first_trade_id = -1`) are left out of the raw
trade chain; `check_invariants` reports them.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.coverage import COMPLETENESS_SCHEMA
from crypto_lakehouse.quality.checks.tables import (
    ID_COLUMN,
    TIME_COLUMN,
    TIME_DTYPE,
    TableKind,
    table_kind,
)

HOLES_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "check": pl.Utf8(),
        "kind": pl.Utf8(),
        "before_id": pl.Int64(),
        "after_id": pl.Int64(),
        "missing": pl.Int64(),
        "before_time": TIME_DTYPE,
        "after_time": TIME_DTYPE,
    }
)
INVALID_TRADE_ID: Final = -1


def _id_kind(table: str, kind: TableKind | None) -> TableKind:
    """Return the kind of an id-sequenced table, or raise."""
    kind = kind or table_kind(table)
    if kind not in ID_COLUMN:
        raise ConfigurationError(f"{table} has no trade id sequence; use check_coverage for it")
    return kind


def _carry_columns(kind: TableKind) -> list[str]:
    """Return the columns a day hands to the next one: id, time and last raw trade id."""
    extra = ["last_trade_id"] if kind == "agg_trades" else []
    return ["symbol", ID_COLUMN[kind], *extra, TIME_COLUMN[kind]]


def last_ids(frame: pl.DataFrame, *, table: str, kind: TableKind | None = None) -> pl.DataFrame:
    """Return, per symbol, the ids of the row with the highest id: the input for the next day.

    Args:
        frame: Silver rows of a trades or aggTrades table (usually one day).
        table: The silver table name (`spot_agg_trades`, `um_trades`...).
        kind: Override the kind derived from `table`.

    Returns:
        One row per symbol with `symbol`, the id column, `last_trade_id` (aggTrades only)
        and the time column, to pass as `previous=` when checking the following day.
    """
    kind = _id_kind(table, kind)
    id_column = ID_COLUMN[kind]
    columns = _carry_columns(kind)
    return frame.select(columns).sort(id_column).group_by("symbol", maintain_order=True).last()


def _with_previous(
    frame: pl.DataFrame, previous: pl.DataFrame | None, kind: TableKind
) -> pl.DataFrame:
    """Return the rows to chain, preceded by the previous day's last row per symbol."""
    columns = _carry_columns(kind)
    if kind == "agg_trades":
        columns.insert(2, "first_trade_id")
    rows = frame.select(columns).with_columns(_prev=pl.lit(False))
    if previous is None or previous.is_empty():
        return rows
    carried = previous.select(_carry_columns(kind)).with_columns(_prev=pl.lit(True))
    if kind == "agg_trades":
        carried = carried.with_columns(first_trade_id=pl.lit(None, dtype=pl.Int64))
    return pl.concat([carried.select(rows.columns), rows])


def _breaks(
    rows: pl.DataFrame, *, check: str, before: str, after: str, time_column: str
) -> pl.DataFrame:
    """Return rows whose `after` id does not follow the previous row's `before` id by one."""
    prev_id = pl.col(before).shift(1).over("symbol")
    prev_time = pl.col(time_column).shift(1).over("symbol")
    out = rows.with_columns(before_id=prev_id, before_time=prev_time).filter(
        pl.col("before_id").is_not_null() & (pl.col(after) != pl.col("before_id") + 1)
    )
    missing = pl.col("after_id") - pl.col("before_id") - 1
    return out.select(
        "symbol",
        pl.col(time_column).dt.date().alias("day"),
        pl.lit(check).alias("check"),
        "before_id",
        pl.col(after).alias("after_id"),
        pl.col("before_time"),
        pl.col(time_column).alias("after_time"),
    ).with_columns(
        missing=missing, kind=pl.when(missing > 0).then(pl.lit("hole")).otherwise(pl.lit("overlap"))
    )


def find_sequence_holes(
    frame: pl.DataFrame,
    *,
    table: str,
    previous: pl.DataFrame | None = None,
    kind: TableKind | None = None,
) -> pl.DataFrame:
    """Find every break in the id sequences of a trades or aggTrades frame.

    Args:
        frame: Silver rows, any symbols and days, in any order (sorted here by id).
        table: The silver table name, written into the `table` column.
        previous: `last_ids(...)` of the preceding day, so that a hole at midnight is found;
            `None` checks only within `frame`.
        kind: Override the kind derived from `table`.

    Returns:
        `HOLES_SCHEMA` rows: `check` is `agg_trade_id` or `trade_id`, `before_id` /
        `after_id` the ids on both sides, `missing` the count in between (negative for an
        overlap), `day` the UTC day of the row after the break. Empty when continuous.
    """
    kind = _id_kind(table, kind)
    id_column, time_column = ID_COLUMN[kind], TIME_COLUMN[kind]
    rows = _with_previous(frame, previous, kind).sort("symbol", id_column, "_prev")
    found = [
        _breaks(rows, check=id_column, before=id_column, after=id_column, time_column=time_column)
    ]
    if kind == "agg_trades":
        valid = rows.filter(pl.col("first_trade_id").fill_null(0) != INVALID_TRADE_ID)
        found.append(
            _breaks(
                valid,
                check="trade_id",
                before="last_trade_id",
                after="first_trade_id",
                time_column=time_column,
            )
        )
    holes = pl.concat(found).with_columns(table=pl.lit(table))
    return holes.select(HOLES_SCHEMA.names()).cast(HOLES_SCHEMA).sort("symbol", "after_id")


def id_completeness(
    frame: pl.DataFrame,
    *,
    table: str,
    previous: pl.DataFrame | None = None,
    kind: TableKind | None = None,
) -> pl.DataFrame:
    """Measure completeness of a trade table per (symbol, day) from its id span.

    Args:
        frame: Silver rows, any symbols and days.
        table: The silver table name.
        previous: `last_ids(...)` of the day before the frame's first day, so that ids
            lost at midnight count against the day after.
        kind: Override the kind derived from `table`.

    Returns:
        `COMPLETENESS_SCHEMA` rows: `expected_rows` is the id span of the day (from the
        previous day's last id + 1 to the day's last id), `present_rows` the distinct ids.
        Days without a single row do not appear (a day's span is unknown without rows).
    """
    kind = _id_kind(table, kind)
    id_column, time_column = ID_COLUMN[kind], TIME_COLUMN[kind]
    rows = _with_previous(frame, previous, kind)
    per_day = (
        rows.group_by("symbol", pl.col(time_column).dt.date().alias("day"), "_prev")
        .agg(
            lo=pl.col(id_column).min(),
            hi=pl.col(id_column).max(),
            present_rows=pl.col(id_column).n_unique().cast(pl.Int64),
            row_count=pl.len().cast(pl.Int64),
        )
        .sort("symbol", "day", "_prev", descending=[False, False, True])
    )
    start = pl.coalesce(pl.col("hi").shift(1).over("symbol") + 1, pl.col("lo"))
    out = (
        per_day.with_columns(start=start)
        .filter(~pl.col("_prev"))
        .with_columns(expected_rows=pl.col("hi") - pl.col("start") + 1)
        .with_columns(
            table=pl.lit(table),
            interval=pl.lit(None, dtype=pl.Utf8),
            missing_rows=(pl.col("expected_rows") - pl.col("present_rows")).clip(lower_bound=0),
            excused_rows=pl.lit(0, dtype=pl.Int64),
        )
        .with_columns(
            completeness=(pl.col("expected_rows") - pl.col("missing_rows"))
            / pl.col("expected_rows")
        )
    )
    return out.select(COMPLETENESS_SCHEMA.names()).cast(COMPLETENESS_SCHEMA).sort("symbol", "day")
