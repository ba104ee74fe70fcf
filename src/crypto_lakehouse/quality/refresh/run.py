"""Recompute the quality of some (symbol, day)s of a silver table and store it in gold.

`refresh_quality` reads only the rows of the days asked for (pushed down to the scan), the
manifest facts of those days and, for trade tables, the last ids of the day before; runs
every check; scores; and replaces exactly those (table, symbol, day) rows of `gold.quality`,
`gold.quality_deductions`, `gold.completeness`, `gold.gaps`, `gold.sequence_holes`,
`gold.violations` and `gold.anomalies` (one commit each). It also re-fingerprints the
dataset's files into `gold.format_fingerprints`. `refresh_after_ingest` is the cheap entry
point an ingest calls with the files it touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pyarrow.compute as pc
import structlog

from crypto_lakehouse.datasets import dataset_for_table
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.facts import (
    MANIFEST_DAYS_SCHEMA,
    manifest_days,
    stamp_days,
)
from crypto_lakehouse.quality.checks.fingerprints import FINGERPRINTS_SCHEMA, table_fingerprints
from crypto_lakehouse.quality.checks.run import CheckResults
from crypto_lakehouse.quality.checks.tables import ID_COLUMN, table_kind
from crypto_lakehouse.quality.refresh import store as gold
from crypto_lakehouse.quality.refresh.checks import check_runs
from crypto_lakehouse.quality.refresh.inputs import (
    SILVER,
    manifest_state,
)
from crypto_lakehouse.quality.score import score_checks
from crypto_lakehouse.storage import partitions

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.quality.checks.anomalies import AnomalyConfig
    from crypto_lakehouse.storage.partitions import Runs
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)


@dataclass(slots=True, frozen=True)
class QualityRefresh:
    """What one refresh computed and wrote for one silver table."""

    table: str
    runs: Runs
    results: CheckResults
    scores: pl.DataFrame
    deductions: pl.DataFrame
    fingerprints: pl.DataFrame = field(default_factory=FINGERPRINTS_SCHEMA.to_frame)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def days(self) -> int:
        """Return how many (symbol, day)s were checked."""
        return sum(len(partitions.run_days(run)) for runs in self.runs.values() for run in runs)

    @property
    def gaps(self) -> pl.DataFrame:
        """Return the gaps found (`GAPS_SCHEMA`)."""
        return self.results.gaps

    @property
    def new_fingerprints(self) -> pl.DataFrame:
        """Return the files whose format was never seen before for the dataset."""
        return self.fingerprints.filter(pl.col("is_new"))

    @property
    def min_score(self) -> float | None:
        """Return the lowest score refreshed, or None when nothing was scored."""
        value = self.scores.get_column("score").min()
        return None if value is None else float(value)  # type: ignore[arg-type]


def _day(column: str) -> pl.Expr:
    """Return the UTC day of a silver time column."""
    return pl.col(column).dt.date()


def _read_rows(lake: LakeRoot, dataset: Dataset, runs: Runs | None) -> pl.DataFrame:
    """Read the silver rows of the runs (all rows when `runs` is None)."""
    frame = partitions.scan_runs(lake, SILVER, dataset.table, runs, time_column=dataset.time_column)
    if frame is None or frame.is_empty():
        return pl.DataFrame(schema=dataset.silver_schema())
    return frame


def _requested(
    frame: pl.DataFrame, time_column: str, facts_days: pl.DataFrame
) -> dict[str, set[date]]:
    """Return every (symbol, day) holding rows or manifest facts: the `all` request."""
    found: dict[str, set[date]] = {}
    pairs = frame.select("symbol", _day(time_column).alias("day")).unique()
    for symbol, day in pl.concat([pairs, facts_days.select("symbol", "day")]).iter_rows():
        found.setdefault(symbol, set()).add(day)
    return found


def _with_next_days(runs: Runs) -> Runs:
    """Return runs extended by one day: a trade day's holes depend on the day before."""
    return {s: [(a, b + timedelta(days=1)) for a, b in spans] for s, spans in runs.items()}


def _only(results: CheckResults, runs: Runs) -> CheckResults:
    """Keep the findings inside the runs (holes may name the day after a run)."""
    keep = partitions.in_runs(runs)
    return CheckResults(
        results.completeness.filter(keep),
        results.gaps.filter(keep),
        results.holes.filter(keep),
        results.violations.filter(keep),
        results.anomalies.filter(keep),
    )


def refresh_quality(
    lake: LakeRoot,
    table: str,
    *,
    symbols_days: Mapping[str, Iterable[date]] | None = None,
    anomaly_config: AnomalyConfig | None = None,
) -> QualityRefresh:
    """Recompute checks and scores of some (symbol, day)s of a silver table; write gold.

    Args:
        lake: The lake.
        table: The silver table, e.g. `spot_klines`.
        symbols_days: UTC days to check per symbol; `None` checks every (symbol, day)
            that has rows or a manifest record. For trade tables the day after each run
            is re-checked too when it has rows (its first id follows this day's last).
        anomaly_config: Anomaly thresholds (defaults when `None`).

    Returns:
        `QualityRefresh` with the findings, scores and the fingerprints of the dataset's
        files. Tables the checks do not cover (book ticker, options...) get fingerprints
        only. Writes are idempotent: re-running replaces the same rows.

    Raises:
        ConfigurationError: `table` is not a silver table of the registry.
    """
    try:
        dataset = dataset_for_table(table)
    except KeyError as exc:
        raise ConfigurationError(str(exc)) from None
    current, events = manifest_state(lake, dataset)
    known = partitions.scan(
        lake, gold.GOLD, gold.FINGERPRINTS, filter_expr=pc.field("table") == table
    )
    fingerprints = table_fingerprints(lake, dataset, current, events, known)
    versions = {
        gold.FINGERPRINTS: gold.write_table(lake, gold.FINGERPRINTS, fingerprints, table=table)
    }
    for row in fingerprints.filter(pl.col("is_new")).iter_rows(named=True):
        log.warning(
            "format_fingerprint_new",
            table=table,
            key=row["key"],
            fingerprint=row["fingerprint"],
            header=row["header"],
        )
    try:
        kind = table_kind(table)
    except ConfigurationError:
        log.info("quality_checks_skipped", table=table, reason="no checks for this data type")
        empty = CheckResults.concat([])
        scored = score_checks(empty)
        return QualityRefresh(
            table, {}, empty, scored.scores, scored.deductions, fingerprints, versions
        )
    known = current.filter(pl.col("status") != "superseded")
    mdays = manifest_days(known) if not known.is_empty() else MANIFEST_DAYS_SCHEMA.to_frame()
    if symbols_days is None:
        rows = _read_rows(lake, dataset, None)
        runs = partitions.symbol_runs(_requested(rows, dataset.time_column, mdays))
    else:
        runs = partitions.symbol_runs(symbols_days)
        read_runs = _with_next_days(runs) if kind in ID_COLUMN else runs
        rows = _read_rows(lake, dataset, read_runs)
        if kind in ID_COLUMN:
            days = rows.select("symbol", _day(dataset.time_column).alias("day")).unique()
            wanted = {s: set(partitions.run_days(r)) for s, spans in runs.items() for r in spans}
            for symbol, day in days.iter_rows():
                wanted.setdefault(symbol, set()).add(day)
            runs = partitions.symbol_runs(wanted)
    mdays = mdays.filter(partitions.in_runs(runs))
    found = check_runs(lake, dataset, kind, rows, runs, current, mdays, anomaly_config)
    results = _only(found, runs)
    scored = score_checks(results)
    versions |= _write(lake, table, runs, results, scored.scores, scored.deductions)
    refresh = QualityRefresh(
        table, runs, results, scored.scores, scored.deductions, fingerprints, versions
    )
    log.info(
        "quality_refreshed",
        table=table,
        days=refresh.days,
        gaps=results.gaps.height,
        min_score=refresh.min_score,
        new_formats=refresh.new_fingerprints.height,
    )
    return refresh


def _write(
    lake: LakeRoot,
    table: str,
    runs: Runs,
    results: CheckResults,
    scores: pl.DataFrame,
    deductions: pl.DataFrame,
) -> dict[str, int]:
    """Replace the refreshed days in each gold quality table; return the new versions."""
    if not runs:
        return {}
    stamped = scores.with_columns(
        refreshed_at=pl.lit(gold.now()).cast(gold.QUALITY_SCHEMA["refreshed_at"])
    )
    frames = {
        gold.QUALITY: stamped,
        gold.DEDUCTIONS: deductions,
        gold.COMPLETENESS: results.completeness,
        gold.GAPS: results.gaps,
        gold.HOLES: results.holes,
        gold.VIOLATIONS: results.violations,
        gold.ANOMALIES: results.anomalies,
    }
    return {
        name: gold.write_days(lake, name, frame, table=table, runs=runs)
        for name, frame in frames.items()
    }


def loaded_days(loaded: Iterable[tuple[str, str, str]]) -> dict[str, set[date]]:
    """Return the UTC days per symbol that files cover.

    Args:
        loaded: `(symbol, period, stamp)` per file, e.g. `("BTCUSDT", "daily",
            "2020-01-02")` or `("BTCUSDT", "monthly", "2020-01")`.

    Returns:
        Days per symbol; a monthly stamp stands for every day of its month.
    """
    out: dict[str, set[date]] = {}
    for symbol, period, stamp in loaded:
        out.setdefault(symbol, set()).update(stamp_days(period, stamp))
    return out


def refresh_after_ingest(
    lake: LakeRoot, table: str, loaded: list[tuple[str, str, str]]
) -> QualityRefresh:
    """Refresh quality for the days an ingest touched; cheap when few files changed.

    Args:
        lake: The lake the ingest wrote.
        table: The silver table of the ingest (`IngestResult.table`).
        loaded: `(symbol, period, stamp)` of every file the run recorded a new state
            for: loaded ones, and also missing_upstream, quarantined and failed ones so
            that their days get their gap (from `ManifestEntry.symbol/.period/.stamp`).
            Files left unchanged need not be passed.

    Returns:
        The `QualityRefresh`; with an empty `loaded` nothing is read or written.
    """
    if not loaded:
        empty = CheckResults.concat([])
        scored = score_checks(empty)
        return QualityRefresh(table, {}, empty, scored.scores, scored.deductions)
    return refresh_quality(lake, table, symbols_days=loaded_days(loaded))
