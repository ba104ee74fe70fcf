"""Gold frames: resampled bars checked against plain Python over the raw CSV, summaries, basis."""

from __future__ import annotations

import csv
import io
import itertools
import math
import zipfile
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.gold.frames import (
    basis,
    daily_summary,
    funding_adjusted_returns,
    open_interest_with_price,
    resample_klines,
)
from tests.quality.conftest import REAL_DAYS, TIME, read_spot_klines, spot_kline_path

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def real_klines() -> pl.DataFrame:
    """Return the three real BTCUSDT 1m days in the silver schema."""
    return pl.concat([read_spot_klines(day) for day in REAL_DAYS])


def raw_rows() -> list[list[str]]:
    """Return the raw CSV rows of the three real days, read with the csv module."""
    rows: list[list[str]] = []
    for day in REAL_DAYS:
        with zipfile.ZipFile(spot_kline_path(day)) as archive:
            text = archive.read(archive.namelist()[0]).decode()
        rows.extend(csv.reader(io.StringIO(text)))
    return rows


def python_hourly(rows: list[list[str]]) -> dict[int, dict[str, float]]:
    """Compute hourly OHLCV from raw rows with plain Python, keyed by the hour's epoch ms."""
    hours: dict[int, dict[str, float]] = {}
    for row in rows:
        hour = int(row[0]) // HOUR_MS * HOUR_MS
        o, h, lo, c, v = (float(x) for x in row[1:6])
        bar = hours.get(hour)
        if bar is None:
            hours[hour] = {"open": o, "high": h, "low": lo, "close": c, "volume": v,
                           "trades": float(row[8]), "n": 1.0}  # fmt: skip
            continue
        bar["high"] = max(bar["high"], h)
        bar["low"] = min(bar["low"], lo)
        bar["close"] = c
        bar["volume"] += v
        bar["trades"] += float(row[8])
        bar["n"] += 1
    return hours


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Return an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_hourly_bars_match_plain_python(real_klines: pl.DataFrame) -> None:
    """1m → 1h over the real days gives 72 complete bars equal to a csv-module computation."""
    bars = resample_klines(real_klines, "1h")
    expected = python_hourly(raw_rows())
    assert bars.height == len(expected) == 72
    assert bars.get_column("complete").all()
    for bar in bars.iter_rows(named=True):
        want = expected[int(bar["open_time"].timestamp() * 1000)]
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (
            want["open"],
            want["high"],
            want["low"],
            want["close"],
        )
        assert bar["volume"] == pytest.approx(want["volume"], rel=1e-12)
        assert bar["trades"] == want["trades"]
        assert bar["input_rows"] == want["n"] == bar["expected_rows"] == 60
        assert bar["close_time"] == bar["open_time"] + timedelta(minutes=60, milliseconds=-1)


def test_offset_bars_and_partial_edges(real_klines: pl.DataFrame) -> None:
    """4h bars offset by 30m start at 20:30 the evening before; edge bars are flagged partial."""
    bars = resample_klines(real_klines, "4h", offset="30m")
    assert bars.item(0, "open_time") == utc(2019, 12, 31, 20, 30)
    assert bars.row(0, named=True)["input_rows"] == 30
    assert bars.select("complete").to_series().to_list() == [False] + [True] * 17 + [False]
    assert bars.item(-1, "input_rows") == 210
    assert set(bars.get_column("offset")) == {"30m"}


def test_incomplete_bar_is_emitted_not_filled(real_klines: pl.DataFrame) -> None:
    """Two missing minutes mark their hour incomplete; an hour with no minute is not invented."""
    minute = pl.col("open_time")
    holed = real_klines.filter(
        ~minute.is_in([utc(2020, 1, 1, 5, 10), utc(2020, 1, 1, 5, 11)])
        & ~((minute >= utc(2020, 1, 2, 7)) & (minute < utc(2020, 1, 2, 8)))
    )
    bars = resample_klines(holed, "1h")
    assert bars.height == 71
    five = bars.filter(pl.col("open_time") == utc(2020, 1, 1, 5)).row(0, named=True)
    assert (five["input_rows"], five["expected_rows"], five["complete"]) == (58, 60, False)
    assert bars.filter(pl.col("open_time") == utc(2020, 1, 2, 7)).is_empty()


def test_every_must_be_a_multiple(real_klines: pl.DataFrame) -> None:
    """90-second bars cannot be built from 1m bars."""
    with pytest.raises(ConfigurationError, match="multiple"):
        resample_klines(real_klines, "90s")


def generated_funding() -> pl.DataFrame:
    """Return 8-hourly funding rows for 2020-01-01..03 of BTCUSDT, 1 bp each."""
    times = [utc(2020, 1, 1) + timedelta(hours=8 * i) for i in range(9)]
    return pl.DataFrame(
        {"symbol": "BTCUSDT", "calc_time": times, "funding_interval_hours": 8, "funding_rate": 1e-4}
    ).with_columns(pl.col("calc_time").cast(TIME))


def test_daily_summary(real_klines: pl.DataFrame) -> None:
    """Daily OHLCV, VWAP, return, realised volatility, funding and score per real day."""
    scores = pl.DataFrame(
        {"table": "spot_klines", "symbol": "BTCUSDT", "day": list(REAL_DAYS), "score": 100.0}
    )
    summary = daily_summary(real_klines, funding=generated_funding(), scores=scores)
    assert summary.height == 3
    jan_2_ms = 1_577_923_200_000
    rows = [r for r in raw_rows() if int(r[0]) < jan_2_ms]
    day1 = summary.row(0, named=True)
    closes = [float(r[4]) for r in rows]
    opens = float(rows[0][1])
    assert day1["open"] == opens and day1["close"] == closes[-1]
    assert day1["daily_return"] == pytest.approx(closes[-1] / opens - 1)
    returns = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    assert day1["realized_volatility"] == pytest.approx(math.sqrt(sum(r * r for r in returns)))
    assert day1["vwap"] == pytest.approx(day1["quote_volume"] / day1["volume"])
    assert 0 < day1["taker_buy_ratio"] < 1
    assert day1["complete"] and day1["input_rows"] == 1440
    assert day1["funding_paid"] == pytest.approx(3e-4) and day1["funding_events"] == 3
    assert day1["quality_score"] == 100.0


def test_summary_without_funding_or_scores_keeps_columns(real_klines: pl.DataFrame) -> None:
    """Without funding or scores the columns exist and are null."""
    summary = daily_summary(real_klines)
    assert summary.get_column("funding_paid").null_count() == 3
    assert summary.get_column("quality_score").null_count() == 3


def test_funding_adjusted_returns(real_klines: pl.DataFrame) -> None:
    """Adjusted return is the daily return minus the day's funding; null without funding."""
    funding = generated_funding().filter(pl.col("calc_time") < utc(2020, 1, 3))
    adjusted = funding_adjusted_returns(daily_summary(real_klines, funding=funding))
    first = adjusted.row(0, named=True)
    assert first["funding_adjusted_return"] == pytest.approx(first["daily_return"] - 3e-4)
    assert adjusted.item(2, "funding_adjusted_return") is None


def test_basis_per_minute_and_day() -> None:
    """A perp 0.1 % above spot has basis 0.001; bars on one side only are left out."""
    spot = read_spot_klines(date(2020, 1, 1))
    perp = spot.with_columns(close=pl.col("close") * 1.001).filter(
        pl.col("open_time") != utc(2020, 1, 1, 23, 59)
    )
    per_minute = basis(perp, spot)
    assert per_minute.height == 1439
    assert per_minute.get_column("basis").to_list() == pytest.approx([0.001] * 1439)
    per_day = basis(perp, spot, per="day").row(0, named=True)
    assert per_day["as_of"] == utc(2020, 1, 1, 23, 58)
    assert per_day["common_bars"] == 1439
    assert (per_day["perp_symbol"], per_day["spot_symbol"]) == ("BTCUSDT", "BTCUSDT")


def test_open_interest_alongside_price() -> None:
    """Metrics join 5m bars on their start (or, for end labels, 5 minutes earlier)."""
    klines = read_spot_klines(date(2020, 1, 1))
    times = [utc(2020, 1, 1) + timedelta(minutes=5 * i) for i in range(288)]
    metrics = pl.DataFrame(
        {
            "symbol": "BTCUSDT",
            "create_time": times,
            "sum_open_interest": [float(i) for i in range(288)],
        }
    ).with_columns(pl.col("create_time").cast(TIME))
    joined = open_interest_with_price(klines, metrics)
    assert joined.height == 288
    assert joined.get_column("complete").all()
    assert joined.item(1, "sum_open_interest") == 1.0
    ended = open_interest_with_price(klines, metrics, label="end")
    assert ended.item(0, "sum_open_interest") == 1.0
    assert ended.item(-1, "sum_open_interest") is None
