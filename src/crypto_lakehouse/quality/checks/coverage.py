"""Measure completeness and explain every gap of slotted tables (klines, metrics, funding).

Each (symbol, interval, day) has a grid of expected slots starting at 00:00 UTC: the kline
interval, 5 minutes for metrics, the funding interval for funding rates. A row covers the
slot its time falls in (floored, so a `calc_time` a few ms past the hour still counts) and,
for funding, every finer slot until its own interval ends, so a day whose interval changes
from 4h to 8h is not reported as holed. A missing slot's cause, first rule that applies:

- `before_listing` / `after_delisting`: before the first / after the last ever row of the
  symbol, when the caller passes a `ListingRange`;
- `missing_upstream`: the day has no rows and the manifest holds no verified file for it;
- `truncated`: after the day's last row (and a verified file with no rows at all);
- `not_loaded`: the day has no rows and its file was rejected (checksum mismatch,
  quarantined, download failed): the data exists upstream but not here;
- `in_file`: rows exist later that day (between rows, or before the day's first row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

import polars as pl

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.facts import ListingRange, UpstreamFacts
from crypto_lakehouse.quality.checks.tables import (
    METRICS_INTERVAL,
    TIME_COLUMN,
    TIME_DTYPE,
    US_PER_DAY,
    US_PER_SECOND,
    TableKind,
    epoch_us,
    from_epoch_us,
    interval_us,
    interval_us_expr,
    slots_per_day,
    table_kind,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

GapCause = Literal[
    "missing_upstream", "truncated", "not_loaded", "in_file", "before_listing", "after_delisting"
]
EXCUSED_CAUSES: Final = frozenset({"before_listing", "after_delisting"})

COMPLETENESS_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "interval": pl.Utf8(),
        "day": pl.Date(),
        "expected_rows": pl.Int64(),
        "present_rows": pl.Int64(),
        "missing_rows": pl.Int64(),
        "excused_rows": pl.Int64(),
        "row_count": pl.Int64(),
        "completeness": pl.Float64(),
    }
)
GAPS_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "interval": pl.Utf8(),
        "day": pl.Date(),
        "gap_start": TIME_DTYPE,
        "gap_end": TIME_DTYPE,
        "missing": pl.Int64(),
        "cause": pl.Utf8(),
        "detail": pl.Utf8(),
    }
)
_SERIES: Final = ["symbol", "interval"]
_DAY_KEY: Final = ["symbol", "interval", "day_us"]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True, frozen=True)
class Coverage:
    """Completeness per (table, symbol, interval, day) and one row per gap run."""

    completeness: pl.DataFrame
    gaps: pl.DataFrame


def _step_expr(frame: pl.DataFrame, kind: TableKind) -> pl.Expr:
    """Return the slot length in µs of each row."""
    if kind == "klines":
        for interval in frame.get_column("interval").drop_nulls().unique():
            slots_per_day(interval)  # raises for 3d, 1w, 1M: they have no per-day slots
        return interval_us_expr(frame)
    if kind == "metrics":
        return pl.lit(interval_us(METRICS_INTERVAL), dtype=pl.Int64)
    if kind == "funding_rate":
        return pl.col("funding_interval_hours").cast(pl.Int64) * (3_600 * US_PER_SECOND)
    raise ConfigurationError(f"{kind} has no slots; use sequences.id_completeness for it")


def _rows(frame: pl.DataFrame, kind: TableKind) -> pl.DataFrame:
    """Return one row per input row: series, floored slot, its step and its day."""
    interval = pl.col("interval") if kind == "klines" else pl.lit(None, dtype=pl.Utf8)
    return (
        frame.select(
            pl.col("symbol"),
            interval.alias("interval"),
            epoch_us(TIME_COLUMN[kind]).alias("t"),
            _step_expr(frame, kind).alias("step"),
        )
        .drop_nulls(["symbol", "t", "step"])
        .filter(pl.col("step") > 0)
        .with_columns(slot=pl.col("t") - pl.col("t") % pl.col("step"))
        .with_columns(day_us=pl.col("slot") - pl.col("slot") % US_PER_DAY)
    )


def _day_grid(
    rows: pl.DataFrame, days: tuple[date, date] | None, series: pl.DataFrame | None
) -> pl.DataFrame:
    """Return every checked (series, day) with its row stats and grid step."""
    stats = rows.group_by(_DAY_KEY).agg(
        row_count=pl.len().cast(pl.Int64),
        first_slot=pl.col("slot").min(),
        last_slot=pl.col("slot").max(),
        day_step=pl.col("step").min(),
    )
    if days is None:
        bounds = stats.group_by(_SERIES).agg(lo=pl.col("day_us").min(), hi=pl.col("day_us").max())
    else:
        lo, hi = (_day_us(day) for day in days)
        known = [stats.select(_SERIES)]
        if series is not None:
            known.append(
                series.select(pl.col("symbol").cast(pl.Utf8), pl.col("interval").cast(pl.Utf8))
            )
        bounds = pl.concat(known).unique().with_columns(lo=pl.lit(lo), hi=pl.lit(hi))
    grid = (
        bounds.with_columns(day_us=pl.int_ranges("lo", pl.col("hi") + US_PER_DAY, US_PER_DAY))
        .explode("day_us")
        .drop("lo", "hi")
        .drop_nulls("day_us")
        .join(stats, on=_DAY_KEY, how="left", nulls_equal=True)
        .sort([*_SERIES, "day_us"], nulls_last=True)
    )
    # A day without rows inherits the grid step of the nearest day that has rows, or the
    # caller's step for a series without any row in the range.
    step = pl.col("day_step").forward_fill().backward_fill().over(_SERIES)
    grid = grid.with_columns(day_step=step, row_count=pl.col("row_count").fill_null(0))
    if series is None:
        return grid
    seeded = series.select(
        pl.col("symbol").cast(pl.Utf8),
        pl.col("interval").cast(pl.Utf8),
        pl.col("step").cast(pl.Int64).alias("_seed_step"),
    ).unique(subset=_SERIES)
    return (
        grid.join(seeded, on=_SERIES, how="left", nulls_equal=True)
        .with_columns(day_step=pl.coalesce("day_step", "_seed_step"))
        .drop("_seed_step")
        .drop_nulls("day_step")
    )


def _day_us(day: date) -> int:
    """Return 00:00 UTC of a date in µs since the epoch."""
    return (day - date(1970, 1, 1)).days * US_PER_DAY


def _facts_frame(facts: UpstreamFacts | None) -> pl.DataFrame:
    """Return manifest facts as (symbol, day_us, has_file, recorded, rejected)."""
    facts = facts or UpstreamFacts()
    records = [(s, _day_us(d), True, False, False) for s, d in facts.with_file]
    records += [(s, _day_us(d), False, True, False) for s, d in facts.missing_upstream]
    records += [(s, _day_us(d), False, False, True) for s, d in facts.not_loaded]
    schema = {
        "symbol": pl.Utf8,
        "day_us": pl.Int64,
        "has_file": pl.Boolean,
        "recorded": pl.Boolean,
        "rejected": pl.Boolean,
    }
    frame = pl.DataFrame(records, schema=schema, orient="row")
    return frame.group_by("symbol", "day_us").agg(pl.col("has_file", "recorded", "rejected").any())


def _listing_frame(listings: Mapping[str, ListingRange] | None) -> pl.DataFrame:
    """Return listing ranges as (symbol, first_us, last_us)."""
    records = [
        (symbol, _dt_us(rng.first), _dt_us(rng.last)) for symbol, rng in (listings or {}).items()
    ]
    schema = {"symbol": pl.Utf8, "first_us": pl.Int64, "last_us": pl.Int64}
    return pl.DataFrame(records, schema=schema, orient="row")


def _dt_us(value: datetime | None) -> int | None:
    """Return an aware datetime as µs since the epoch, or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ConfigurationError(f"listing time {value!r} must be timezone-aware (UTC)")
    return (value - _EPOCH) // timedelta(microseconds=1)


def _cause_exprs() -> tuple[pl.Expr, pl.Expr]:
    """Return the (cause, detail) expressions for a missing slot, in rule order."""
    slot = pl.col("slot")
    before = slot < pl.col("first_us")
    after = slot > pl.col("last_us")
    empty = pl.col("row_count") == 0
    has_file = pl.col("has_file").fill_null(False)
    recorded = pl.col("recorded").fill_null(False)
    rejected = pl.col("rejected").fill_null(False)
    late = slot > pl.col("last_slot")
    leading = slot < pl.col("first_slot")
    cause = (
        pl.when(before).then(pl.lit("before_listing"))
        .when(after).then(pl.lit("after_delisting"))
        .when(empty & has_file).then(pl.lit("truncated"))
        .when(empty & rejected).then(pl.lit("not_loaded"))
        .when(empty).then(pl.lit("missing_upstream"))
        .when(late).then(pl.lit("truncated"))
        .otherwise(pl.lit("in_file"))
    )  # fmt: skip
    detail = (
        pl.when(before).then(pl.lit("before the symbol's first row"))
        .when(after).then(pl.lit("after the symbol's last row"))
        .when(empty & has_file).then(pl.lit("verified file holds no rows for the day"))
        .when(empty & rejected).then(pl.lit("manifest: file rejected; see its reason"))
        .when(empty & recorded).then(pl.lit("manifest: missing upstream"))
        .when(empty).then(pl.lit("no rows and no verified file for the day"))
        .when(late).then(pl.lit("rows stop before the day's last slot"))
        .when(leading).then(pl.lit("rows start after the day's first slot"))
        .otherwise(pl.lit("rows exist on both sides"))
    )  # fmt: skip
    return cause, detail


def check_coverage(
    frame: pl.DataFrame,
    *,
    table: str,
    days: tuple[date, date] | None = None,
    facts: UpstreamFacts | None = None,
    listings: Mapping[str, ListingRange] | None = None,
    kind: TableKind | None = None,
    series: pl.DataFrame | None = None,
) -> Coverage:
    """Compute completeness and gaps per (symbol, interval, UTC day).

    Args:
        frame: Silver rows of one slotted table (klines of any intervals `1s`..`1d`,
            metrics, funding_rate), any number of symbols and days, in any order.
        table: The silver table name, written into the `table` column of the results.
        days: Inclusive (first, last) UTC days to check for every series in the frame; by
            default each series' own first..last day with rows. Rows outside are ignored.
            Series (symbol, interval) come from the frame and `series`: a symbol with no
            row at all in the range is reported only when `series` names it. Rows with a
            null symbol or time are skipped here (`check_invariants` reports them).
        facts: Manifest facts deciding `missing_upstream` vs `truncated` for empty days.
        listings: Per symbol listing range, for `before_listing` / `after_delisting`.
        kind: Override the kind derived from `table`.
        series: Extra series to check over `days` even without rows (`symbol`,
            `interval` (null unless klines), `step` in µs); ignored when `days` is None.

    Returns:
        `Coverage` with `completeness` (`COMPLETENESS_SCHEMA`; `interval` is null for
        metrics and funding) and `gaps` (`GAPS_SCHEMA`: one row per run of consecutive
        missing slots of one cause within one day, `gap_end` exclusive). Gaps spanning
        midnight are split per day. No data is ever filled in.

    Raises:
        ConfigurationError: The table has no slots (trades), or a kline interval does not
            divide a UTC day (`3d`, `1w`, `1M`).
    """
    kind = kind or table_kind(table)
    rows = _rows(frame, kind)
    if days is not None:
        lo, hi = _day_us(days[0]), _day_us(days[1])
        rows = rows.filter(pl.col("day_us").is_between(lo, hi))
    if days is None or (series is not None and series.is_empty()):
        series = None
    if rows.is_empty() and series is None:
        return Coverage(COMPLETENESS_SCHEMA.to_frame(), GAPS_SCHEMA.to_frame())
    grid_days = _day_grid(rows, days, series)
    grid = (
        grid_days.select(*_DAY_KEY, "day_step")
        .with_columns(slot=pl.int_ranges("day_us", pl.col("day_us") + US_PER_DAY, "day_step"))
        .explode("slot")
    )
    covered = (
        rows.join(grid_days.select(*_DAY_KEY, "day_step"), on=_DAY_KEY, nulls_equal=True)
        .with_columns(
            slot=pl.int_ranges("slot", pl.col("slot") + pl.col("step"), pl.col("day_step"))
        )
        .explode("slot")
        .select(*_SERIES, "slot")
        .unique()
    )
    missing = grid.join(covered, on=[*_SERIES, "slot"], how="anti", nulls_equal=True)
    cause, detail = _cause_exprs()
    missing = (
        missing.join(grid_days.drop("day_step"), on=_DAY_KEY, how="left", nulls_equal=True)
        .join(_facts_frame(facts), on=["symbol", "day_us"], how="left")
        .join(_listing_frame(listings), on="symbol", how="left")
        .with_columns(cause=cause, detail=detail)
        .sort([*_DAY_KEY, "slot"], nulls_last=True)
    )
    return Coverage(
        completeness=_completeness(grid_days, missing, table),
        gaps=_gap_runs(missing, table),
    )


def _gap_runs(missing: pl.DataFrame, table: str) -> pl.DataFrame:
    """Collapse sorted missing slots into runs of one cause within one day."""
    if missing.is_empty():
        return GAPS_SCHEMA.to_frame()
    contiguous = (pl.col("slot") - pl.col("slot").shift(1) == pl.col("day_step")) & (
        pl.col("cause") == pl.col("cause").shift(1)
    )
    runs = missing.with_columns(
        run=(~contiguous.fill_null(False)).cum_sum().over(_DAY_KEY, order_by="slot")
    )
    out = runs.group_by([*_DAY_KEY, "run"]).agg(
        gap_start=pl.col("slot").min(),
        gap_end=pl.col("slot").max() + pl.col("day_step").first(),
        missing=pl.len().cast(pl.Int64),
        cause=pl.col("cause").first(),
        detail=pl.col("detail").first(),
    )
    return (
        out.with_columns(
            table=pl.lit(table),
            day=from_epoch_us(pl.col("day_us")).dt.date(),
            gap_start=from_epoch_us(pl.col("gap_start")),
            gap_end=from_epoch_us(pl.col("gap_end")),
        )
        .select(GAPS_SCHEMA.names())
        .cast(GAPS_SCHEMA)
        .sort("symbol", "interval", "gap_start", nulls_last=True)
    )


def _completeness(grid_days: pl.DataFrame, missing: pl.DataFrame, table: str) -> pl.DataFrame:
    """Return expected, present, missing and excused slot counts per day."""
    lost = missing.group_by(_DAY_KEY).agg(
        missing_rows=pl.len().cast(pl.Int64),
        excused_rows=pl.col("cause").is_in(list(EXCUSED_CAUSES)).sum().cast(pl.Int64),
    )
    out = grid_days.join(lost, on=_DAY_KEY, how="left", nulls_equal=True).with_columns(
        expected_rows=(US_PER_DAY // pl.col("day_step")).cast(pl.Int64),
        missing_rows=pl.col("missing_rows").fill_null(0),
        excused_rows=pl.col("excused_rows").fill_null(0),
    )
    return (
        out.with_columns(
            table=pl.lit(table),
            day=from_epoch_us(pl.col("day_us")).dt.date(),
            present_rows=pl.col("expected_rows") - pl.col("missing_rows"),
        )
        .with_columns(completeness=pl.col("present_rows") / pl.col("expected_rows"))
        .select(COMPLETENESS_SCHEMA.names())
        .cast(COMPLETENESS_SCHEMA)
        .sort("symbol", "interval", "day", nulls_last=True)
    )
