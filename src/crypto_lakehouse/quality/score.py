"""Score each (table, symbol, day) from 0 to 100 with deductions traceable to the checks.

Formula (weights are the `ScoreWeights` defaults)::

    score = max(0, 100 − Σ deductions), rounded to 2 decimals

    completeness   100 × unexcused missing / (expected − excused) of the day's worst
                   interval (slots before listing / after delisting are excused)
    gaps           1 per unexcused gap run, at most 10
    sequence       1 per id hole or overlap, at most 10
    invariant:R    2 per row violating rule R, at most 30 per rule
    anomalies      per finding: low 0, medium 0, high 2; at most 10 in total

Completeness dominates by design: a day with no data scores 0, a day missing 2 of 1,440
minutes loses 0.14 + 1 (one gap). Anomalies are suspicious rather than proven wrong (a real
2 % BTC minute is an outlier), so only `high` ones cost points. Every deduction with points
> 0 is returned as a row naming its check, so each score can be explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import polars as pl

from crypto_lakehouse.quality.checks.coverage import EXCUSED_CAUSES

if TYPE_CHECKING:
    from crypto_lakehouse.quality.checks.run import CheckResults

DAY_KEY: Final = ["table", "symbol", "day"]
DEDUCTIONS_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "check": pl.Utf8(),
        "detail": pl.Utf8(),
        "points": pl.Float64(),
    }
)
SCORES_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "score": pl.Float64(),
        "deductions": pl.Int64(),
    }
)
MAX_SCORE: Final = 100.0


@dataclass(slots=True, frozen=True)
class ScoreWeights:
    """Points per finding and caps; see the module docstring for the formula."""

    completeness: float = 100.0
    per_gap: float = 1.0
    gap_cap: float = 10.0
    per_hole: float = 1.0
    hole_cap: float = 10.0
    per_violation: float = 2.0
    violation_cap: float = 30.0
    anomaly_low: float = 0.0
    anomaly_medium: float = 0.0
    anomaly_high: float = 2.0
    anomaly_cap: float = 10.0


@dataclass(slots=True, frozen=True)
class ScoreResult:
    """Scores per (table, symbol, day) and the deductions that explain them."""

    scores: pl.DataFrame
    deductions: pl.DataFrame


def _deduction(
    frame: pl.DataFrame, check: pl.Expr, detail: pl.Expr, points: pl.Expr
) -> pl.DataFrame:
    """Return a per-day aggregate as deduction rows, dropping those worth no points."""
    return frame.select(
        *DAY_KEY,
        check.alias("check"),
        detail.alias("detail"),
        points.round(4).cast(pl.Float64).alias("points"),
    ).filter(pl.col("points") > 0)


def _completeness(completeness: pl.DataFrame, weights: ScoreWeights) -> pl.DataFrame:
    """Deduct for the worst interval's unexcused missing share of the day."""
    counted = pl.col("expected_rows") - pl.col("excused_rows")
    lost = pl.col("missing_rows") - pl.col("excused_rows")
    worst = (
        completeness.with_columns(share=pl.when(counted > 0).then(lost / counted).otherwise(0.0))
        .sort("share", descending=True)
        .group_by(DAY_KEY, maintain_order=True)
        .first()
    )
    interval = pl.when(pl.col("interval").is_not_null()).then(
        pl.format(" ({})", pl.col("interval"))
    )
    detail = pl.format("{} of {} missing", lost, counted) + interval.fill_null("")
    return _deduction(
        worst,
        pl.lit("completeness"),
        detail.str.strip_chars(),
        weights.completeness * pl.col("share"),
    )


def _gaps(gaps: pl.DataFrame, weights: ScoreWeights) -> pl.DataFrame:
    """Deduct per unexcused gap run."""
    per_day = (
        gaps.filter(~pl.col("cause").is_in(list(EXCUSED_CAUSES)))
        .group_by(DAY_KEY)
        .agg(n=pl.len(), causes=pl.col("cause").unique().sort().str.join(", "))
    )
    points = pl.min_horizontal(pl.col("n") * weights.per_gap, pl.lit(weights.gap_cap))
    detail = pl.format("{} gap(s): {}", pl.col("n"), pl.col("causes"))
    return _deduction(per_day, pl.lit("gaps"), detail, points)


def _holes(holes: pl.DataFrame, weights: ScoreWeights) -> pl.DataFrame:
    """Deduct per id hole or overlap."""
    per_day = holes.group_by(DAY_KEY).agg(n=pl.len(), ids=pl.col("missing").sum())
    points = pl.min_horizontal(pl.col("n") * weights.per_hole, pl.lit(weights.hole_cap))
    detail = pl.format("{} break(s), {} ids missing net", pl.col("n"), pl.col("ids"))
    return _deduction(per_day, pl.lit("sequence"), detail, points)


def _violations(violations: pl.DataFrame, weights: ScoreWeights) -> pl.DataFrame:
    """Deduct per violating row, capped per rule."""
    per_rule = violations.group_by(*DAY_KEY, "rule").agg(n=pl.len(), first=pl.col("key").min())
    points = pl.min_horizontal(pl.col("n") * weights.per_violation, pl.lit(weights.violation_cap))
    detail = pl.format("{} row(s), first {}", pl.col("n"), pl.col("first"))
    return _deduction(per_rule, pl.format("invariant:{}", pl.col("rule")), detail, points)


def _anomalies(anomalies: pl.DataFrame, weights: ScoreWeights) -> pl.DataFrame:
    """Deduct per anomaly by severity, capped per day."""
    points = {
        "low": weights.anomaly_low,
        "medium": weights.anomaly_medium,
        "high": weights.anomaly_high,
    }
    per_day = (
        anomalies.with_columns(p=pl.col("severity").replace_strict(points, default=0.0))
        .group_by(DAY_KEY)
        .agg(n=pl.len(), p=pl.col("p").sum(), high=(pl.col("severity") == "high").sum())
    )
    capped = pl.min_horizontal(pl.col("p"), pl.lit(weights.anomaly_cap))
    detail = pl.format("{} finding(s), {} high", pl.col("n"), pl.col("high"))
    return _deduction(per_day, pl.lit("anomalies"), detail, capped)


def score_checks(results: CheckResults, *, weights: ScoreWeights | None = None) -> ScoreResult:
    """Score every (table, symbol, day) that any check reports on.

    Args:
        results: The findings of `run_checks` (or several tables' results concatenated
            frame by frame into one `CheckResults`).
        weights: Points and caps; `ScoreWeights()` by default (the module formula).

    Returns:
        `ScoreResult`: `scores` (`SCORES_SCHEMA`, one row per day found in any frame,
        `deductions` = how many deduction rows it has) and `deductions`
        (`DEDUCTIONS_SCHEMA`, one row per check that cost points, with a readable detail).
        A day present only in `completeness` with nothing wrong scores 100.
    """
    weights = weights or ScoreWeights()
    deductions = pl.concat(
        [
            DEDUCTIONS_SCHEMA.to_frame(),
            _completeness(results.completeness, weights),
            _gaps(results.gaps, weights),
            _holes(results.holes, weights),
            _violations(results.violations, weights),
            _anomalies(results.anomalies, weights),
        ],
        how="vertical_relaxed",
    ).cast(DEDUCTIONS_SCHEMA)
    frames = (
        results.completeness,
        results.gaps,
        results.holes,
        results.violations,
        results.anomalies,
    )
    days = pl.concat([frame.select(DAY_KEY) for frame in frames]).unique()
    totals = deductions.group_by(DAY_KEY).agg(lost=pl.col("points").sum(), deductions=pl.len())
    scores = days.join(totals, on=DAY_KEY, how="left").with_columns(
        score=(MAX_SCORE - pl.col("lost").fill_null(0.0)).clip(lower_bound=0.0).round(2),
        deductions=pl.col("deductions").fill_null(0),
    )
    return ScoreResult(
        scores=scores.select(SCORES_SCHEMA.names()).cast(SCORES_SCHEMA).sort(DAY_KEY),
        deductions=deductions.sort(*DAY_KEY, "check"),
    )
