"""Trust in the data: checks, reconciliation, scores and the quality report.

The checks, scores and comparisons are pure functions over polars frames in the silver
schema; `refresh` and `reconcile_lake` run them over the lake and write the gold tables.
"""

from __future__ import annotations

from crypto_lakehouse.quality.checks.run import (
    AnomalyConfig,
    CheckResults,
    CheckScope,
    ListingRange,
    UpstreamFacts,
    check_coverage,
    check_invariants,
    detect_anomalies,
    find_sequence_holes,
    fingerprint,
    id_completeness,
    is_new_fingerprint,
    last_ids,
    run_checks,
)
from crypto_lakehouse.quality.reconcile.compare import (
    Tolerance,
    compare_archive_rest,
    compare_daily_monthly,
    compare_frames,
    klines_from_agg_trades,
    reconcile_klines_with_agg_trades,
)
from crypto_lakehouse.quality.reconcile.lake import ReconcileResult, reconcile_tables
from crypto_lakehouse.quality.refresh.run import (
    QualityRefresh,
    refresh_after_ingest,
    refresh_quality,
)
from crypto_lakehouse.quality.report.render import render_report, write_report
from crypto_lakehouse.quality.score import ScoreResult, ScoreWeights, score_checks

__all__ = [
    "AnomalyConfig",
    "CheckResults",
    "CheckScope",
    "ListingRange",
    "QualityRefresh",
    "ReconcileResult",
    "ScoreResult",
    "ScoreWeights",
    "Tolerance",
    "UpstreamFacts",
    "check_coverage",
    "check_invariants",
    "compare_archive_rest",
    "compare_daily_monthly",
    "compare_frames",
    "detect_anomalies",
    "find_sequence_holes",
    "fingerprint",
    "id_completeness",
    "is_new_fingerprint",
    "klines_from_agg_trades",
    "last_ids",
    "reconcile_klines_with_agg_trades",
    "reconcile_tables",
    "refresh_after_ingest",
    "refresh_quality",
    "render_report",
    "run_checks",
    "score_checks",
    "write_report",
]
