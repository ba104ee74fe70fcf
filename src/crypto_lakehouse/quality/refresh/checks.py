"""Run the checks of a refresh over runs of days, per symbol and per kline interval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import polars as pl

from crypto_lakehouse.quality.checks.facts import ListingRange, UpstreamFacts
from crypto_lakehouse.quality.checks.run import CheckResults, CheckScope, run_checks
from crypto_lakehouse.quality.checks.sequences import last_ids
from crypto_lakehouse.quality.checks.tables import ID_COLUMN, TIME_COLUMN, TableKind
from crypto_lakehouse.quality.refresh.inputs import (
    divides_day,
    empty_id_days,
    listing_range,
    previous_ids,
    series_for,
)
from crypto_lakehouse.storage import partitions

if TYPE_CHECKING:
    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.quality.checks.anomalies import AnomalyConfig
    from crypto_lakehouse.storage.partitions import Runs
    from crypto_lakehouse.storage.root import LakeRoot


def _day(column: str) -> pl.Expr:
    """Return the UTC day of a silver time column."""
    return pl.col(column).dt.date()


@dataclass(frozen=True, slots=True)
class _TableChecks:
    """What every symbol of one table is checked with: its dataset, kind, carry-over ids."""

    dataset: Dataset
    kind: TableKind
    previous: pl.DataFrame
    anomaly_config: AnomalyConfig | None

    def before(self, first: date) -> pl.DataFrame | None:
        """Return the last ids of the day before `first`, for trade tables that have them."""
        if self.kind not in ID_COLUMN or self.previous.is_empty():
            return None
        time_column = TIME_COLUMN[self.kind]
        prior = self.previous.filter(_day(time_column) == first - timedelta(days=1))
        if prior.is_empty():
            return None
        return last_ids(prior, table=self.dataset.table, kind=self.kind)


def _check_symbol(
    rows: pl.DataFrame,
    checks: _TableChecks,
    *,
    symbol: str,
    runs: list[tuple[date, date]],
    mdays: pl.DataFrame,
    listing: ListingRange | None,
    series: pl.DataFrame,
) -> list[CheckResults]:
    """Run the checks over each run of days of one symbol (and one kline interval)."""
    kind = checks.kind
    table, time_column = checks.dataset.table, TIME_COLUMN[kind]
    listings = {symbol: listing} if listing is not None else None
    facts = UpstreamFacts.from_frame(mdays)
    found: list[CheckResults] = []
    for first, last in runs:
        part = rows.filter(_day(time_column).is_between(first, last))
        # A series without rows is checked only where the manifest says files belong.
        recorded = not mdays.filter(pl.col("day").is_between(first, last)).is_empty()
        scope = CheckScope(
            days=(first, last),
            facts=facts,
            listings=listings,
            previous=checks.before(first),
            series=series if recorded else None,
        )
        result = run_checks(
            part, table=table, scope=scope, anomaly_config=checks.anomaly_config, kind=kind
        )
        if kind in ID_COLUMN:
            seen = set(part.get_column(time_column).dt.date().unique().to_list())
            empty = [d for d in partitions.run_days((first, last)) if d not in seen]
            completeness, gaps = empty_id_days(table, symbol, empty, facts, listing)
            result = CheckResults(
                pl.concat([result.completeness, completeness]),
                pl.concat([result.gaps, gaps]),
                result.holes,
                result.violations,
                result.anomalies,
            )
        found.append(result)
    return found


def _by_interval(
    kind: TableKind, rows: pl.DataFrame, current: pl.DataFrame, mdays: pl.DataFrame
) -> list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]:
    """Split rows and manifest facts per kline interval (one part for other kinds).

    Facts are per (symbol, day); a day can have its 1m file and miss its 1h file, so each
    interval is checked against the files of that interval only.
    """
    if kind != "klines":
        return [(rows, current, mdays)]
    from_keys = pl.col("key").str.split("/").list.get(-2, null_on_oob=True)
    current = current.with_columns(_interval=from_keys)
    mdays = mdays.with_columns(_interval=from_keys)
    intervals = set(rows.get_column("interval").unique().to_list())
    intervals |= set(current.get_column("_interval").drop_nulls().to_list())
    return [
        (
            rows.filter(pl.col("interval") == interval),
            current.filter(pl.col("_interval") == interval).drop("_interval"),
            mdays.filter(pl.col("_interval") == interval).drop("_interval"),
        )
        for interval in sorted(i for i in intervals if i and divides_day(i))
    ]


def check_runs(
    lake: LakeRoot,
    dataset: Dataset,
    kind: TableKind,
    rows: pl.DataFrame,
    runs: Runs,
    current: pl.DataFrame,
    mdays: pl.DataFrame,
    anomaly_config: AnomalyConfig | None,
) -> CheckResults:
    """Run every check over every symbol's runs of days.

    Args:
        lake: The lake (read for listing ranges and the previous day's last ids).
        dataset: The silver table's dataset.
        kind: Its table kind.
        rows: Its silver rows of the runs.
        runs: Days per symbol to check.
        current: Current manifest rows of the dataset.
        mdays: Manifest facts per (symbol, day) within the runs (`manifest_days`).
        anomaly_config: Anomaly thresholds.

    Returns:
        The findings of every symbol, run and kline interval, stacked.
    """
    previous = pl.DataFrame()
    if kind in ID_COLUMN:
        carry = ["symbol", ID_COLUMN[kind], "last_trade_id", TIME_COLUMN[kind]]
        previous = previous_ids(lake, dataset, runs, carry)
    checks = _TableChecks(dataset, kind, previous, anomaly_config)
    parts: list[CheckResults] = []
    for symbol, spans in runs.items():
        mine = rows.filter(pl.col("symbol") == symbol)
        files = current.filter(pl.col("symbol") == symbol)
        loaded = files.filter(pl.col("status") == "loaded")
        listing = listing_range(lake, dataset, symbol, loaded, spans[0][0], mine)
        symbol_days = mdays.filter(pl.col("symbol") == symbol)
        for part_rows, part_files, part_days in _by_interval(kind, mine, files, symbol_days):
            series = series_for(
                kind,
                symbol,
                part_files.get_column("key").to_list(),
                has_interval=dataset.has_interval,
            )
            parts += _check_symbol(
                part_rows,
                checks,
                symbol=symbol,
                runs=spans,
                mdays=part_days,
                listing=listing,
                series=series,
            )
    return CheckResults.concat(parts)
