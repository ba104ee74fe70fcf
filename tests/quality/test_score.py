"""Scores: 100 for the real days, traceable deductions for each problem."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from crypto_lakehouse.quality.checks.run import (
    CheckResults,
    CheckScope,
    ListingRange,
    UpstreamFacts,
    run_checks,
)
from crypto_lakehouse.quality.score import ScoreWeights, score_checks
from tests.quality.conftest import read_spot_klines

JAN_1, JAN_2 = date(2020, 1, 1), date(2020, 1, 2)


def day_score(results: CheckResults, day: date) -> float:
    """Return the score of one day of BTCUSDT."""
    scores = score_checks(results).scores
    return float(scores.filter(pl.col("day") == day).item(0, "score"))


def test_real_days_score_100(real_klines: pl.DataFrame) -> None:
    """The three real 1m days score 100 with no deduction and zero gaps."""
    results = run_checks(real_klines, table="spot_klines")
    scored = score_checks(results)
    assert results.gaps.is_empty()
    assert scored.scores.get_column("score").to_list() == [100.0, 100.0, 100.0]
    assert scored.scores.get_column("deductions").to_list() == [0, 0, 0]
    assert scored.deductions.is_empty()


@pytest.mark.req("R5.3")
def test_missing_day_scores_zero_and_says_why(real_klines: pl.DataFrame) -> None:
    """A day missing upstream loses all completeness points plus one gap."""
    frame = real_klines.filter(pl.col("open_time").dt.date() != JAN_2)
    facts = UpstreamFacts(missing_upstream=frozenset({("BTCUSDT", JAN_2)}))
    scored = score_checks(run_checks(frame, table="spot_klines", scope=CheckScope(facts=facts)))
    assert scored.scores.get_column("score").to_list() == [100.0, 0.0, 100.0]
    why = scored.deductions.select("day", "check", "points").rows()
    assert why == [(JAN_2, "completeness", 100.0), (JAN_2, "gaps", 1.0)]


@pytest.mark.req("R5.3")
def test_truncated_and_in_file_days_follow_the_formula() -> None:
    """740 missing minutes cost 100·740/1440 + 1; two missing minutes cost 100·2/1440 + 1."""
    day = read_spot_klines(JAN_1)
    truncated = run_checks(
        day.head(700), table="spot_klines", scope=CheckScope(days=(JAN_1, JAN_1))
    )
    assert day_score(truncated, JAN_1) == pytest.approx(round(100 - 100 * 740 / 1440 - 1, 2))
    holed = run_checks(day.filter(~pl.int_range(pl.len()).is_in([600, 601])), table="spot_klines")
    assert day_score(holed, JAN_1) == pytest.approx(round(100 - 100 * 2 / 1440 - 1, 2))


def test_violations_are_capped_per_rule() -> None:
    """Twenty duplicated rows cost 30 points, the per-rule cap, under `invariant:duplicate_key`."""
    day = read_spot_klines(JAN_1)
    results = run_checks(pl.concat([day, day.head(10)]), table="spot_klines")
    scored = score_checks(results)
    assert scored.deductions.select("check", "points").rows() == [("invariant:duplicate_key", 30.0)]
    assert scored.scores.item(0, "score") == 70.0


def test_listing_gaps_are_excused() -> None:
    """Minutes before listing neither count as missing nor as gaps."""
    day = read_spot_klines(JAN_1).slice(60)
    listing = {"BTCUSDT": ListingRange(first=datetime(2020, 1, 1, 1, tzinfo=UTC))}
    results = run_checks(day, table="spot_klines", scope=CheckScope(listings=listing))
    assert results.gaps.get_column("cause").to_list() == ["before_listing"]
    assert day_score(results, JAN_1) == 100.0


def test_weights_change_the_score(real_klines: pl.DataFrame) -> None:
    """Making medium anomalies cost points lowers the real 2020-01-03 (a genuine 2 % minute)."""
    results = run_checks(real_klines, table="spot_klines")
    scored = score_checks(results, weights=ScoreWeights(anomaly_medium=1.5))
    jan_3 = scored.scores.filter(pl.col("day") == date(2020, 1, 3)).item(0, "score")
    assert jan_3 == 98.5
    assert scored.deductions.get_column("check").to_list() == ["anomalies"]
