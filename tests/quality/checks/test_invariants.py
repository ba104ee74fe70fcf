"""Row invariants: each violation names its rule and the row key."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from crypto_lakehouse.quality.checks.invariants import check_invariants
from tests.quality.conftest import read_spot_klines


def test_real_files_pass(
    real_klines: pl.DataFrame, cm_agg_trades: pl.DataFrame, um_funding: pl.DataFrame
) -> None:
    """The real klines, aggTrades and funding fixtures violate nothing."""
    assert check_invariants(real_klines, table="spot_klines").is_empty()
    assert check_invariants(cm_agg_trades, table="cm_agg_trades").is_empty()
    assert check_invariants(um_funding, table="um_funding_rate").is_empty()


def at(index: int, value: pl.Expr, column: str) -> pl.Expr:
    """Return `column` with row `index` replaced by `value`."""
    return (
        pl.when(pl.int_range(pl.len()) == index).then(value).otherwise(pl.col(column)).alias(column)
    )


@pytest.mark.req("R5.3")
def test_each_broken_rule_is_reported_with_its_key() -> None:
    """Low above open, a bad close_time, taker > volume, a negative volume and a duplicate."""
    day = read_spot_klines(date(2020, 1, 1))
    broken = day.with_columns(
        at(5, pl.col("high") + 1, "low"),
        at(7, pl.col("open_time") + timedelta(seconds=59), "close_time"),
        at(9, pl.col("volume") * 2, "taker_buy_volume"),
        at(11, pl.lit(-1.0), "volume"),
    )
    broken = pl.concat([broken, broken.slice(100, 1)])
    found = check_invariants(broken, table="spot_klines").select("rule", "key").rows()
    assert sorted(found) == sorted(
        [
            ("low_le_open_close", "interval=1m open_time=2020-01-01T00:05:00.000000Z"),
            ("close_time", "interval=1m open_time=2020-01-01T00:07:00.000000Z"),
            ("taker_le_volume", "interval=1m open_time=2020-01-01T00:09:00.000000Z"),
            ("taker_le_volume", "interval=1m open_time=2020-01-01T00:11:00.000000Z"),
            ("volume_nonnegative", "interval=1m open_time=2020-01-01T00:11:00.000000Z"),
            ("duplicate_key", "interval=1m open_time=2020-01-01T01:40:00.000000Z"),
            ("duplicate_key", "interval=1m open_time=2020-01-01T01:40:00.000000Z"),
        ]
    )


def test_microsecond_close_time_is_accepted() -> None:
    """Spot µs-era close times (open + interval − 1 µs) pass like ms-era ones."""
    day = read_spot_klines(date(2020, 1, 1)).with_columns(
        close_time=pl.col("open_time") + timedelta(microseconds=59_999_999)
    )
    assert check_invariants(day, table="spot_klines").is_empty()


def test_agg_trade_rules(cm_agg_trades: pl.DataFrame) -> None:
    """A zero price, reversed trade ids and a -1 placeholder are each reported by id."""
    head = (
        cm_agg_trades.head(5)
        .with_columns(at(0, pl.lit(0.0), "price"))
        .with_columns(at(1, pl.col("last_trade_id") + 5, "first_trade_id"))
        .with_columns(at(2, pl.lit(-1, dtype=pl.Int64), "first_trade_id"))
    )
    found = check_invariants(head, table="cm_agg_trades").select("rule", "key").rows()
    assert sorted(found) == [
        ("invalid_recovered_trade", "agg_trade_id=480537905"),
        ("price_positive", "agg_trade_id=480537903"),
        ("trade_id_order", "agg_trade_id=480537904"),
    ]


def test_funding_interval_must_divide_a_day(um_funding: pl.DataFrame) -> None:
    """A funding interval of 5 hours is flagged."""
    bad = um_funding.head(2).with_columns(
        at(0, pl.lit(5, dtype=pl.Int64), "funding_interval_hours")
    )
    assert check_invariants(bad, table="um_funding_rate").get_column("rule").to_list() == [
        "funding_interval"
    ]
