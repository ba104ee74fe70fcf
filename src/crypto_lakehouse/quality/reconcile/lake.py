"""Run the reconciliations over the lake and store mismatches in `gold.reconciliation`.

Three checks, each per (table, symbol, UTC day) and each idempotent (its slice is replaced):

- `klines_vs_agg_trades`: 1m klines rebuilt from silver aggTrades vs silver klines;
- `daily_vs_monthly`: the rows of daily archive files vs the same rows of the monthly file.
  Silver keeps one copy of each key (a monthly file replaces the daily rows of its span),
  so both sides are parsed from their kept bronze objects;
- `archive_vs_rest`: archive rows vs REST rows for the same range, from silver rows with
  `_source = 'rest'` where both exist, or from REST rows the caller fetched.

`gold.reconciliation_runs` records what was compared (rows, mismatches) so that "no
mismatch" can be told apart from "nothing compared".
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import polars as pl
import structlog

from crypto_lakehouse.datasets import dataset_for_table
from crypto_lakehouse.quality.reconcile.compare import (
    compare_archive_rest,
    compare_daily_monthly,
    reconcile_klines_with_agg_trades,
)
from crypto_lakehouse.quality.reconcile.inputs import (
    RECONCILIATION_SCHEMA,
    RUNS_SCHEMA,
    contract_size,
    month_files,
    parse_bronze,
    shape_mismatches,
    summarise,
)
from crypto_lakehouse.quality.refresh import store as gold
from crypto_lakehouse.quality.refresh.inputs import SILVER, manifest_state
from crypto_lakehouse.storage import partitions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)
StepCallback = Callable[[int, int, str], None]
KLINES_VS_AGG: Final = "klines_vs_agg_trades"
DAILY_VS_MONTHLY: Final = "daily_vs_monthly"
ARCHIVE_VS_REST: Final = "archive_vs_rest"


@dataclass(slots=True, frozen=True)
class ReconcileResult:
    """Mismatches (`RECONCILIATION_SCHEMA`) and per-day comparison counts (`RUNS_SCHEMA`)."""

    mismatches: pl.DataFrame
    runs: pl.DataFrame

    @property
    def compared_rows(self) -> int:
        """Return how many rows were compared in all."""
        return int(self.runs.get_column("compared_rows").sum())

    def count(self, check: str) -> int:
        """Return the number of mismatches of one check."""
        return self.mismatches.filter(pl.col("check") == check).height


def _days(start: date, end: date) -> list[date]:
    """Return every day from start to end inclusive."""
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def _read(lake: LakeRoot, dataset: Dataset, symbol: str, first: date, last: date) -> pl.DataFrame:
    """Read one symbol's silver rows of an inclusive day range (empty when absent)."""
    frame = partitions.scan_runs(
        lake, SILVER, dataset.table, {symbol: [(first, last)]}, time_column=dataset.time_column
    )
    return frame if frame is not None else pl.DataFrame(schema=dataset.silver_schema())


def _klines_vs_agg(
    lake: LakeRoot, klines: Dataset, trades: Dataset, symbol: str, day: date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rebuild one day's 1m klines from aggTrades and compare them with silver klines."""
    bars = _read(lake, klines, symbol, day, day).filter(pl.col("interval") == "1m")
    agg = _read(lake, trades, symbol, day, day)
    if bars.is_empty() or agg.is_empty():
        return pl.DataFrame(), pl.DataFrame()
    found = reconcile_klines_with_agg_trades(
        bars, agg, contract_size=contract_size(klines.market, symbol)
    )
    return found, bars.select("symbol", pl.col("open_time").alias("_t"))


def _daily_vs_monthly(
    lake: LakeRoot, dataset: Dataset, files: pl.DataFrame, start: date, end: date, workdir: Path
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Compare one month's daily files with its monthly file, parsed from bronze."""
    monthly = files.filter(pl.col("period") == "monthly")
    daily = files.filter(pl.col("period") == "daily")
    left = pl.concat([parse_bronze(lake, dataset, row, workdir) for row in daily.to_dicts()])
    right = parse_bronze(lake, dataset, monthly.row(0, named=True), workdir)
    time_column = dataset.time_column
    span = pl.col(time_column).dt.date()
    covered = daily.get_column("stamp").str.to_date().implode()
    left = left.filter(span.is_between(start, end))
    right = right.filter(span.is_between(start, end) & span.is_in(covered))
    found = compare_daily_monthly(left, right, key=dataset.primary_key)
    return found, left.select("symbol", pl.col(time_column).alias("_t"))


def _archive_vs_rest(
    lake: LakeRoot, dataset: Dataset, symbol: str, start: date, end: date, rest: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Compare archive rows with REST rows over the span both cover."""
    rows = _read(lake, dataset, symbol, start, end)
    archive = rows.filter(pl.col("_source") == "archive")
    other = rows.filter(pl.col("_source") == "rest") if rest is None else rest
    other = other.filter(pl.col("symbol") == symbol)
    time_column = dataset.time_column
    if archive.is_empty() or other.is_empty():
        return pl.DataFrame(), pl.DataFrame()
    lo = max(archive.get_column(time_column).min(), other.get_column(time_column).min())  # type: ignore[type-var]
    hi = min(archive.get_column(time_column).max(), other.get_column(time_column).max())  # type: ignore[type-var]
    within = pl.col(time_column).is_between(lo, hi)
    archive, other = archive.filter(within), other.filter(within)
    found = compare_archive_rest(archive, other, key=dataset.primary_key)
    return found, archive.select("symbol", pl.col(time_column).alias("_t"))


def reconcile_tables(
    lake: LakeRoot,
    *,
    klines_table: str,
    agg_table: str | None,
    symbols: Sequence[str],
    start: date,
    end: date,
    rest: pl.DataFrame | None = None,
    on_step: StepCallback | None = None,
) -> ReconcileResult:
    """Run the three reconciliations for some symbols and days and write gold.

    Args:
        lake: The lake.
        klines_table: Silver klines table (`spot_klines`, `um_klines`, `cm_klines`); its
            `1m` rows are compared with aggTrades, and all its intervals daily vs monthly
            and archive vs REST.
        agg_table: Silver aggTrades table of the same market; `None` skips that check.
        symbols: Symbols to reconcile.
        start: First UTC day (inclusive).
        end: Last UTC day (inclusive).
        rest: REST rows in the silver layout to compare with the archive rows (e.g. just
            fetched); by default silver's own `_source = 'rest'` rows are used.
        on_step: Called as `(done, total, label)` after each unit of work (progress bars).

    Returns:
        `ReconcileResult`. Each check's (table, symbol, day) slice of `gold.reconciliation`
        and `gold.reconciliation_runs` over [start, end] is replaced, also when empty.
    """
    klines = dataset_for_table(klines_table)
    trades = dataset_for_table(agg_table) if agg_table else None
    current, _ = manifest_state(lake, klines)
    days = _days(start, end)
    steps: list[tuple[str, str, object]] = []
    for symbol in symbols:
        if trades is not None:
            steps += [(KLINES_VS_AGG, symbol, day) for day in days]
        steps += [
            (DAILY_VS_MONTHLY, symbol, files) for files in month_files(current, symbol, start, end)
        ]
        steps.append((ARCHIVE_VS_REST, symbol, None))
    mismatches: list[pl.DataFrame] = [RECONCILIATION_SCHEMA.to_frame()]
    compared: list[pl.DataFrame] = [RUNS_SCHEMA.to_frame()]
    with tempfile.TemporaryDirectory(prefix="lakehouse-reconcile-") as workdir:
        for done, (check, symbol, arg) in enumerate(steps, start=1):
            if check == KLINES_VS_AGG and trades is not None:
                assert isinstance(arg, date)
                found, rows = _klines_vs_agg(lake, klines, trades, symbol, arg)
            elif check == DAILY_VS_MONTHLY:
                assert isinstance(arg, pl.DataFrame)
                found, rows = _daily_vs_monthly(lake, klines, arg, start, end, Path(workdir))
            else:
                found, rows = _archive_vs_rest(lake, klines, symbol, start, end, rest)
            mismatches.append(shape_mismatches(found, check, klines, symbol))
            compared.append(summarise(rows, found, check, klines))
            if on_step is not None:
                on_step(done, len(steps), f"{check} {symbol}")
    result = ReconcileResult(
        pl.concat(mismatches, how="vertical_relaxed"), pl.concat(compared, how="vertical_relaxed")
    )
    _write(lake, klines_table, result, symbols, start, end, with_trades=trades is not None)
    log.info(
        "reconciled",
        table=klines_table,
        symbols=len(symbols),
        compared=result.compared_rows,
        mismatches=result.mismatches.height,
    )
    return result


def _write(
    lake: LakeRoot,
    table: str,
    result: ReconcileResult,
    symbols: Sequence[str],
    start: date,
    end: date,
    *,
    with_trades: bool,
) -> None:
    """Replace each check's slice of the two gold reconciliation tables."""
    runs = {symbol: [(start, end)] for symbol in symbols}
    checks = [DAILY_VS_MONTHLY, ARCHIVE_VS_REST] + ([KLINES_VS_AGG] if with_trades else [])
    keep = partitions.in_runs(runs)
    for name, frame in (
        (gold.RECONCILIATION, result.mismatches),
        (gold.RECONCILIATION_RUNS, result.runs),
    ):
        for check in checks:
            rows = frame.filter((pl.col("check") == check) & keep)
            predicate = partitions.runs_predicate(runs, fixed={"table": table, "check": check})
            partitions.replace_slices(
                lake, gold.GOLD, name, rows, predicate, partition_by=gold.PARTITION_BY
            )
