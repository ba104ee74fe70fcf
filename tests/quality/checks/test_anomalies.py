"""Anomalies: robust return and volume outliers, zero-volume streaks and flat runs."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import polars as pl
import pytest

from crypto_lakehouse.quality.checks.anomalies import AnomalyConfig, detect_anomalies
from tests.quality.conftest import make_klines

START = datetime(2024, 1, 1, tzinfo=UTC)


def random_walk(n: int, seed: int = 7) -> list[float]:
    """Return n + 1 prices of a 0.1 %-per-minute random walk."""
    rng = random.Random(seed)
    prices = [100.0]
    for _ in range(n):
        prices.append(prices[-1] * math.exp(rng.gauss(0, 0.001)))
    return prices


@pytest.mark.req("R5.3")
def test_price_spike_is_a_high_severity_outlier() -> None:
    """A 50 % one-minute spike is a high-severity return outlier at that minute."""
    klines = make_klines(START, random_walk(1440))
    spiked = klines.with_columns(
        close=pl.when(pl.int_range(pl.len()) == 500).then(pl.col("close") * 1.5).otherwise("close")
    )
    found = detect_anomalies(spiked).filter(pl.col("kind") == "return_outlier")
    first = found.row(0, named=True)
    assert first["start"] == datetime(2024, 1, 1, 8, 20, tzinfo=UTC)
    assert first["severity"] == "high"
    assert first["value"] > 50


@pytest.mark.req("R5.3")
def test_zero_volume_streak_and_flat_run() -> None:
    """Twelve flat zero-volume bars are one streak and one flat run, each with a severity."""
    prices = random_walk(100)
    prices[40:53] = [prices[40]] * 13
    klines = make_klines(START, prices).with_columns(
        volume=pl.when(pl.int_range(pl.len()).is_between(40, 51)).then(0.0).otherwise("volume"),
        high=pl.when(pl.int_range(pl.len()).is_between(40, 51)).then("close").otherwise("high"),
        low=pl.when(pl.int_range(pl.len()).is_between(40, 51)).then("close").otherwise("low"),
    )
    found = detect_anomalies(klines).filter(pl.col("kind") != "volume_outlier")
    rows = {row["kind"]: row for row in found.iter_rows(named=True)}
    streak = rows["zero_volume_streak"]
    assert (streak["value"], streak["severity"]) == (12.0, "low")
    assert streak["start"] == datetime(2024, 1, 1, 0, 40, tzinfo=UTC)
    assert streak["end"] == datetime(2024, 1, 1, 0, 52, tzinfo=UTC)
    assert rows["flat_price_run"]["value"] == 12.0


def test_thresholds_are_configurable(real_klines: pl.DataFrame) -> None:
    """Real BTC days have no high-severity finding; a lower threshold finds more outliers."""
    default = detect_anomalies(real_klines, table="spot_klines")
    assert "high" not in default.get_column("severity").to_list()
    strict = detect_anomalies(real_klines, config=AnomalyConfig(return_z=(5.0, 10.0, 20.0)))
    assert strict.height > default.height
