"""Run every quality check of a silver table per (table, symbol, day); fingerprint formats.

This is the one import point for the checks. Each check lives in its own module and
returns a polars frame with a fixed schema, so results can be appended to gold tables:

- `check_coverage` (coverage.py): completeness and gaps of slotted tables (klines,
  metrics, funding_rate), each gap with its cause;
- `find_sequence_holes` / `id_completeness` / `last_ids` (sequences.py): id continuity
  of trades and aggTrades, across day boundaries;
- `check_invariants` (invariants.py): row rules, each violation with the row key;
- `detect_anomalies` (anomalies.py): robust outliers and runs with a severity;
- `fingerprint` / `is_new_fingerprint` (here): format drift of raw files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import polars as pl

from crypto_lakehouse.quality.checks.anomalies import (
    ANOMALIES_SCHEMA,
    AnomalyConfig,
    detect_anomalies,
)
from crypto_lakehouse.quality.checks.coverage import (
    COMPLETENESS_SCHEMA,
    EXCUSED_CAUSES,
    GAPS_SCHEMA,
    Coverage,
    GapCause,
    check_coverage,
)
from crypto_lakehouse.quality.checks.facts import ListingRange, UpstreamFacts
from crypto_lakehouse.quality.checks.invariants import VIOLATIONS_SCHEMA, check_invariants
from crypto_lakehouse.quality.checks.sequences import (
    HOLES_SCHEMA,
    find_sequence_holes,
    id_completeness,
    last_ids,
)
from crypto_lakehouse.quality.checks.tables import ID_COLUMN, TableKind, table_kind

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import date

__all__ = [
    "ANOMALIES_SCHEMA",
    "COMPLETENESS_SCHEMA",
    "EXCUSED_CAUSES",
    "FINGERPRINT_LENGTH",
    "GAPS_SCHEMA",
    "HOLES_SCHEMA",
    "VIOLATIONS_SCHEMA",
    "AnomalyConfig",
    "CheckResults",
    "CheckScope",
    "Coverage",
    "GapCause",
    "ListingRange",
    "UpstreamFacts",
    "check_coverage",
    "check_invariants",
    "detect_anomalies",
    "find_sequence_holes",
    "fingerprint",
    "id_completeness",
    "is_new_fingerprint",
    "last_ids",
    "run_checks",
]

FINGERPRINT_LENGTH: Final = 16
_TIMESTAMP_UNITS: Final = frozenset({"s", "ms", "us", "ns", "text"})


@dataclass(slots=True, frozen=True)
class CheckResults:
    """Every check's findings for one table; each frame has its module's fixed schema."""

    completeness: pl.DataFrame
    gaps: pl.DataFrame
    holes: pl.DataFrame
    violations: pl.DataFrame
    anomalies: pl.DataFrame

    @classmethod
    def concat(cls, results: Iterable[CheckResults]) -> CheckResults:
        """Stack several tables' (or days') results frame by frame.

        Args:
            results: Results of `run_checks` calls.

        Returns:
            One `CheckResults`; empty frames of each schema when `results` is empty.
        """
        parts = list(results)
        names = ("completeness", "gaps", "holes", "violations", "anomalies")
        schemas = (
            COMPLETENESS_SCHEMA,
            GAPS_SCHEMA,
            HOLES_SCHEMA,
            VIOLATIONS_SCHEMA,
            ANOMALIES_SCHEMA,
        )
        frames = [
            pl.concat([schema.to_frame(), *(getattr(part, name) for part in parts)])
            for name, schema in zip(names, schemas, strict=True)
        ]
        return cls(*frames)


@dataclass(slots=True, frozen=True)
class CheckScope:
    """What the checks know beyond the rows, so gaps get causes and ids continue across days.

    Every field is optional: an empty scope checks the rows alone.

    Attributes:
        days: Inclusive UTC day range for coverage (see `check_coverage`).
        facts: Manifest facts for gap causes.
        listings: Listing ranges per symbol for gap causes.
        previous: `last_ids(...)` of the preceding day, for trade tables.
        series: Series to cover even without rows (see `check_coverage`).
    """

    days: tuple[date, date] | None = None
    facts: UpstreamFacts | None = None
    listings: Mapping[str, ListingRange] | None = None
    previous: pl.DataFrame | None = None
    series: pl.DataFrame | None = None


def run_checks(
    frame: pl.DataFrame,
    *,
    table: str,
    scope: CheckScope | None = None,
    anomaly_config: AnomalyConfig | None = None,
    kind: TableKind | None = None,
) -> CheckResults:
    """Run the checks that apply to a silver table's rows.

    Slotted tables (klines, metrics, funding_rate) get coverage; trade tables get id
    completeness and sequence holes; every table gets invariants; klines with a volume
    column get anomalies. Checks that do not apply return an empty frame of their schema.

    Args:
        frame: Silver rows of one table, any symbols and days.
        table: The silver table name (`spot_klines`, `cm_agg_trades`...).
        scope: Day range, upstream facts, listings, previous ids and series; none by default.
        anomaly_config: Thresholds for anomalies.
        kind: Override the kind derived from `table`.

    Returns:
        `CheckResults` with the five frames.
    """
    kind = kind or table_kind(table)
    scope = scope or CheckScope()
    gaps = GAPS_SCHEMA.to_frame()
    holes = HOLES_SCHEMA.to_frame()
    anomalies = ANOMALIES_SCHEMA.to_frame()
    if kind in ID_COLUMN:
        completeness = id_completeness(frame, table=table, previous=scope.previous, kind=kind)
        holes = find_sequence_holes(frame, table=table, previous=scope.previous, kind=kind)
    else:
        coverage = check_coverage(
            frame,
            table=table,
            days=scope.days,
            facts=scope.facts,
            listings=scope.listings,
            kind=kind,
            series=scope.series,
        )
        completeness, gaps = coverage.completeness, coverage.gaps
    if kind == "klines" and "volume" in frame.columns:
        anomalies = detect_anomalies(frame, table=table, config=anomaly_config)
    return CheckResults(
        completeness=completeness,
        gaps=gaps,
        holes=holes,
        violations=check_invariants(frame, table=table, kind=kind),
        anomalies=anomalies,
    )


def fingerprint(
    header: list[str] | None, column_count: int, timestamp_unit: str, dtypes: list[str]
) -> str:
    """Return a stable hash of a raw file's format.

    Args:
        header: The header row's names as read (whitespace stripped, case kept, so a
            renamed or re-cased column is new), or `None` for a headerless file.
        column_count: Number of columns per row.
        timestamp_unit: `s`, `ms`, `us`, `ns` or `text` (for example `ms` before and `us`
            after spot's 2025-01-01 switch).
        dtypes: The inferred type per column, in order (for example `["int64",
            "float64", ...]`).

    Returns:
        A 16-hex-digit digest; equal formats give equal digests across runs and machines.

    Raises:
        ValueError: `timestamp_unit` is not one of the known units.
    """
    if timestamp_unit not in _TIMESTAMP_UNITS:
        raise ValueError(f"timestamp_unit must be one of {sorted(_TIMESTAMP_UNITS)}")
    canonical = {
        "header": None if header is None else [name.strip() for name in header],
        "column_count": column_count,
        "timestamp_unit": timestamp_unit,
        "dtypes": [dtype.strip().lower() for dtype in dtypes],
    }
    payload = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def is_new_fingerprint(known: set[str], fp: str) -> bool:
    """Return whether a format fingerprint has never been seen.

    Args:
        known: Fingerprints already recorded for the dataset.
        fp: The fingerprint of the file at hand.

    Returns:
        True when `fp` is not in `known`: the file's format drifted and needs review.
    """
    return fp not in known
