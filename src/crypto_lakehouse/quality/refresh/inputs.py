"""Gather what a quality refresh needs besides the rows: manifest state, series, listing, ids.

Everything that reads the lake for `refresh.py` lives here, next to the small pure helpers
that turn manifest rows into the checks' inputs.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta
from typing import TYPE_CHECKING, Final

import polars as pl
import pyarrow.compute as pc

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.coverage import COMPLETENESS_SCHEMA, GAPS_SCHEMA
from crypto_lakehouse.quality.checks.facts import ListingRange, stamp_days
from crypto_lakehouse.quality.checks.tables import (
    METRICS_INTERVAL,
    TIME_DTYPE,
    US_PER_DAY,
    US_PER_SECOND,
    TableKind,
    interval_us,
)
from crypto_lakehouse.storage import partitions
from crypto_lakehouse.storage.bronze import Manifest

if TYPE_CHECKING:
    from collections.abc import Iterable

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.quality.checks.facts import UpstreamFacts
    from crypto_lakehouse.storage.root import LakeRoot

SILVER: Final = "silver"
DEFAULT_FUNDING_HOURS: Final = 8
MANIFEST_SCHEMA: Final = pl.Schema(
    {
        "key": pl.Utf8(),
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "period": pl.Utf8(),
        "stamp": pl.Utf8(),
        "revision": pl.Int64(),
        "bronze_path": pl.Utf8(),
        "status": pl.Utf8(),
        "reason": pl.Utf8(),
        "header": pl.Utf8(),
        "time_unit": pl.Utf8(),
        "recorded_at": TIME_DTYPE,
    }
)


def manifest_state(lake: LakeRoot, dataset: Dataset) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (current state per key, every event) of the dataset's archive files."""
    manifest = Manifest(lake)
    prefix = f"data/{dataset.market_path}/"
    rows = [asdict(entry) for entry in manifest.current(key_prefix=prefix).values()]
    names = MANIFEST_SCHEMA.names()
    current = pl.DataFrame([{n: row[n] for n in names} for row in rows], schema=MANIFEST_SCHEMA)
    events = manifest.events(key_prefix=prefix)
    table = pl.col("table") == dataset.table
    return current.filter(table), events.filter(table).select("key", "recorded_at")


def interval_of(key: str) -> str:
    """Return the interval folder of a kline archive key (`.../BTCUSDT/1m/BTCUSDT-1m-...zip`)."""
    return key.rsplit("/", 2)[-2]


def divides_day(interval: str) -> bool:
    """Tell whether a kline interval has whole slots per UTC day (not 3d, 1w, 1mo)."""
    try:
        return US_PER_DAY % interval_us(interval) == 0
    except ConfigurationError:
        return False


def series_for(
    kind: TableKind, symbol: str, keys: Iterable[str], *, has_interval: bool
) -> pl.DataFrame:
    """Return the series a symbol must be checked for even without rows (symbol, interval, step).

    Kline intervals come from the archive keys of the symbol's files; metrics have 5-minute
    slots; funding rows default to 8-hour slots when the range holds no row to tell.
    """
    schema = {"symbol": pl.Utf8, "interval": pl.Utf8, "step": pl.Int64}
    rows: list[tuple[str, str | None, int]]
    if kind == "klines":
        intervals = {interval_of(key) for key in keys} if has_interval else set()
        rows = [(symbol, i, interval_us(i)) for i in sorted(intervals) if divides_day(i)]
    elif kind == "metrics":
        rows = [(symbol, None, interval_us(METRICS_INTERVAL))]
    elif kind == "funding_rate":
        rows = [(symbol, None, DEFAULT_FUNDING_HOURS * 3_600 * US_PER_SECOND)]
    else:
        rows = []
    return pl.DataFrame(rows, schema=schema, orient="row")


def listing_range(
    lake: LakeRoot,
    dataset: Dataset,
    symbol: str,
    loaded: pl.DataFrame,
    first_requested: date,
    rows: pl.DataFrame,
) -> ListingRange | None:
    """Return when the symbol's data starts: the first row of its earliest loaded file.

    Args:
        lake: The lake (read only when `rows` lacks the earliest file's rows).
        dataset: The dataset.
        symbol: The symbol.
        loaded: Current manifest rows of the symbol's loaded files.
        first_requested: The earliest day being checked.
        rows: The silver rows already read for the symbol.

    Returns:
        A `ListingRange` with `first` only (delisting cannot be told from the archive), or
        `None` when nothing is loaded. Slots before it are excused as `before_listing`.
    """
    if loaded.is_empty():
        return None
    starts = [
        (stamp_days(period, stamp)[0], stamp_days(period, stamp)[-1], key)
        for key, period, stamp in loaded.select("key", "period", "stamp").iter_rows()
    ]
    first_day, last_day, key = min(starts)
    if first_requested > last_day:
        return ListingRange(first=partitions.midnight(first_day))
    column = dataset.time_column
    mine = rows.filter(pl.col("_bronze_key") == key) if "_bronze_key" in rows.columns else rows
    if mine.is_empty():
        found = partitions.scan_runs(
            lake,
            SILVER,
            dataset.table,
            {symbol: [(first_day, last_day)]},
            time_column=column,
            columns=[column],
            pad_days=1,
            where=pc.field("_bronze_key") == key,
        )
        mine = found if found is not None else mine
    if mine.is_empty():
        return None
    return ListingRange(first=mine.get_column(column).min())  # type: ignore[arg-type]


def previous_ids(
    lake: LakeRoot, dataset: Dataset, runs: partitions.Runs, columns: list[str]
) -> pl.DataFrame:
    """Return the rows of the day before each run (only `columns`), for id continuity."""
    before = {
        symbol: [(first - timedelta(days=1), first - timedelta(days=1)) for first, _ in spans]
        for symbol, spans in runs.items()
    }
    frame = partitions.scan_runs(
        lake, SILVER, dataset.table, before, time_column=dataset.time_column, columns=columns
    )
    return frame if frame is not None else pl.DataFrame()


def empty_id_days(
    table: str,
    symbol: str,
    days: Iterable[date],
    facts: UpstreamFacts,
    listing: ListingRange | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (completeness, gaps) rows for trade-table days that hold no row at all.

    A trade day's id span is unknown without rows, so such a day counts as one missing
    unit (completeness 0) and its gap has a null `missing`. Days without any manifest fact
    are not reported (nothing says they should exist yet); days before the symbol's first
    row are excused.
    """
    completeness: list[dict[str, object]] = []
    gaps: list[dict[str, object]] = []
    for day in sorted(days):
        fact = (symbol, day)
        start = partitions.midnight(day)
        excused = listing is not None and listing.first is not None and start < listing.first
        if excused:
            cause, detail = "before_listing", "before the symbol's first row"
        elif fact in facts.with_file:
            cause, detail = "truncated", "verified file holds no rows for the day"
        elif fact in facts.not_loaded:
            cause, detail = "not_loaded", "manifest: file rejected; see its reason"
        elif fact in facts.missing_upstream:
            cause, detail = "missing_upstream", "manifest: missing upstream"
        else:
            continue
        base: dict[str, object] = {"table": table, "symbol": symbol, "interval": None, "day": day}
        completeness.append(
            base
            | {
                "expected_rows": 1,
                "present_rows": 0,
                "missing_rows": 1,
                "excused_rows": int(excused),
                "row_count": 0,
                "completeness": 0.0,
            }
        )
        gaps.append(
            base
            | {
                "gap_start": start,
                "gap_end": start + timedelta(days=1),
                "missing": None,
                "cause": cause,
                "detail": detail,
            }
        )
    return (
        pl.DataFrame(completeness, schema=COMPLETENESS_SCHEMA),
        pl.DataFrame(gaps, schema=GAPS_SCHEMA),
    )
