"""Reconciliation: klines rebuilt from aggTrades, daily vs monthly, archive vs REST."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from crypto_lakehouse.quality.checks.invariants import check_invariants
from crypto_lakehouse.quality.checks.tables import KEY_COLUMNS
from crypto_lakehouse.quality.reconcile.compare import (
    compare_archive_rest,
    compare_daily_monthly,
    compare_frames,
    klines_from_agg_trades,
    reconcile_klines_with_agg_trades,
)
from tests.quality.conftest import TIME, lineage

START = datetime(2024, 5, 1, tzinfo=UTC)
KEY = list(KEY_COLUMNS["klines"])
VOLUMES = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")


def trade_count(row: dict[str, object]) -> int:
    """Return how many raw trades an aggTrade row aggregates."""
    return int(str(row["last_trade_id"])) - int(str(row["first_trade_id"])) + 1


def generated_trades(minutes: int = 30, seed: int = 3) -> list[dict[str, object]]:
    """Return aggTrades rows: a few per minute, some minutes idle, ids continuous."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    trade_id, price = 1000, 50_000.0
    for minute in range(minutes):
        if minute % 7 == 3:
            continue  # an idle minute: no trades, so no aggTrades
        for k in range(rng.randint(1, 6)):
            price = round(price + rng.choice([-1, 1]) * rng.randint(0, 20) * 0.5, 1)
            size = rng.randint(1, 4)
            rows.append(
                {
                    "symbol": "TESTUSDT",
                    "agg_trade_id": len(rows) + 1,
                    "price": price,
                    "quantity": round(rng.randint(1, 500) * 0.001, 3),
                    "first_trade_id": trade_id,
                    "last_trade_id": trade_id + size - 1,
                    "transact_time": START + timedelta(minutes=minute, seconds=5 * k + 1),
                    "is_buyer_maker": rng.random() < 0.5,
                }
            )
            trade_id += size
    return rows


def agg_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """Return aggTrades rows as a silver frame."""
    return pl.DataFrame(rows).with_columns(pl.col("transact_time").cast(TIME))


def python_klines(rows: list[dict[str, object]], idle_minutes: list[int]) -> pl.DataFrame:
    """Compute 1m klines from trades with plain Python, plus published zero-trade bars."""
    bars: dict[datetime, list[dict[str, object]]] = defaultdict(list)
    for row in rows:
        t = row["transact_time"]
        assert isinstance(t, datetime)
        bars[t.replace(second=0, microsecond=0)].append(row)
    out = []
    for open_time, trades in sorted(bars.items()):
        prices = [float(str(r["price"])) for r in trades]
        qty = [float(str(r["quantity"])) for r in trades]
        taker = [not r["is_buyer_maker"] for r in trades]
        out.append(
            {
                "open_time": open_time,
                "open": prices[0],
                "high": max(prices),
                "low": min(prices),
                "close": prices[-1],
                "volume": sum(qty),
                "quote_volume": sum(p * q for p, q in zip(prices, qty, strict=True)),
                "trades": sum(
                    int(str(r["last_trade_id"])) - int(str(r["first_trade_id"])) + 1 for r in trades
                ),
                "taker_buy_volume": sum(q for q, t in zip(qty, taker, strict=True) if t),
                "taker_buy_quote_volume": sum(
                    p * q for p, q, t in zip(prices, qty, taker, strict=True) if t
                ),
            }
        )
    for minute in idle_minutes:
        previous = out[-1]["close"]
        out.append(
            {
                "open_time": START + timedelta(minutes=minute),
                **dict.fromkeys(("open", "high", "low", "close"), previous),
                **dict.fromkeys(
                    ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"), 0.0
                ),
                "trades": 0,
            }
        )
    frame = pl.DataFrame(out).with_columns(
        pl.col("open_time").cast(TIME),
        symbol=pl.lit("TESTUSDT"),
        interval=pl.lit("1m"),
    )
    close_time = (pl.col("open_time") + timedelta(milliseconds=59_999)).alias("close_time")
    return frame.with_columns(close_time, *lineage("klines")).sort("open_time")


def test_rebuild_real_coin_m_day(cm_agg_trades: pl.DataFrame) -> None:
    """The real COIN-M day rebuilds one valid bar per minute that has trades."""
    minutes = {
        t.replace(second=0, microsecond=0) for t in cm_agg_trades.get_column("transact_time")
    }
    rebuilt = klines_from_agg_trades(cm_agg_trades)
    assert rebuilt.height == len(minutes) == 1437
    assert set(rebuilt.get_column("open_time")) == minutes
    first_ids = cm_agg_trades.get_column("first_trade_id")
    last_ids = cm_agg_trades.get_column("last_trade_id")
    assert rebuilt.get_column("trades").sum() == last_ids.max() - first_ids.min() + 1
    assert rebuilt.get_column("volume").sum() == pytest.approx(
        cm_agg_trades.get_column("quantity").sum()
    )
    assert check_invariants(rebuilt, table="cm_klines").is_empty()
    coin_m = klines_from_agg_trades(cm_agg_trades, contract_size=100.0)
    assert {"base_volume", "taker_buy_base_volume"} <= set(coin_m.columns)


def test_agreeing_pair_has_no_mismatch() -> None:
    """Klines computed independently from the same trades reconcile with zero mismatches."""
    rows = generated_trades()
    klines = python_klines(rows, idle_minutes=[3, 10])
    found = reconcile_klines_with_agg_trades(klines, agg_frame(rows))
    assert found.is_empty(), found


@pytest.mark.req("R5.3", "R3.3")
def test_altered_trade_is_reported_with_both_values() -> None:
    """Raising one trade's price shows the published and rebuilt high side by side."""
    rows = generated_trades()
    klines = python_klines(rows, idle_minutes=[])
    target = rows[5]
    minute = target["transact_time"]
    assert isinstance(minute, datetime)
    published_high = klines.filter(pl.col("open_time") == minute.replace(second=0)).item(0, "high")
    altered = [dict(row) for row in rows]
    altered[5]["price"] = published_high + 1000.0
    found = reconcile_klines_with_agg_trades(klines, agg_frame(altered))
    high = found.filter(pl.col("column") == "high").row(0, named=True)
    assert high["open_time"] == minute.replace(second=0)
    assert (high["left_value"], high["right_value"]) == (published_high, published_high + 1000.0)
    assert (high["left_source"], high["right_source"]) == ("archive_klines", "agg_trades")
    assert set(found.get_column("open_time")) == {minute.replace(second=0)}


def test_missing_bars_on_either_side() -> None:
    """A published bar without trades behind it, and a rebuilt bar not published, are reported."""
    rows = generated_trades()
    klines = python_klines(rows, idle_minutes=[])
    extra = klines.tail(1).with_columns(
        open_time=pl.col("open_time") + timedelta(minutes=1), trades=pl.lit(5, dtype=pl.Int64)
    )
    published = pl.concat([klines.slice(1), extra])
    found = reconcile_klines_with_agg_trades(published, agg_frame(rows))
    kinds = found.select("kind", "open_time").rows()
    assert kinds == [("missing_left", START), ("missing_right", extra.item(0, "open_time"))]


def test_daily_vs_monthly_truncated_month(real_klines: pl.DataFrame) -> None:
    """A monthly file that stops early shows each lost row as missing_right."""
    monthly = real_klines.head(2000)
    found = compare_daily_monthly(real_klines, monthly, key=KEY)
    assert found.height == real_klines.height - 2000
    assert set(found.get_column("kind")) == {"missing_right"}
    assert found.select("left_source", "right_source").unique().rows() == [("daily", "monthly")]


@pytest.mark.req("R5.3", "R3.3")
def test_archive_vs_rest_value_and_tolerance(real_klines: pl.DataFrame) -> None:
    """A REST close off by 0.01 is reported; a 1e-12 float wobble is within tolerance."""
    rest = real_klines.with_columns(
        close=pl.when(pl.int_range(pl.len()) == 10).then(pl.col("close") + 0.01).otherwise("close"),
        volume=pl.col("volume") * (1 + 1e-12),
        _source=pl.lit("rest"),
    )
    found = compare_archive_rest(real_klines, rest, key=KEY)
    assert found.select("column", "kind", "left_source", "right_source").rows() == [
        ("close", "value_differs", "archive", "rest")
    ]
    row = found.row(0, named=True)
    assert row["right_value"] - row["left_value"] == pytest.approx(0.01)


def test_compare_frames_on_generic_key() -> None:
    """Any key works; null vs value differs; booleans compare as 0/1."""
    left = pl.DataFrame({"id": [1, 2, 3], "x": [1.0, None, 3.0], "flag": [True, False, True]})
    right = pl.DataFrame({"id": [2, 3, 4], "x": [2.0, 3.0, 4.0], "flag": [False, False, True]})
    found = compare_frames(left, right, key=["id"])
    assert found.select("id", "column", "kind", "left_value", "right_value").rows() == [
        (1, None, "missing_right", 1.0, None),
        (2, "x", "value_differs", None, 2.0),
        (3, "flag", "value_differs", 1.0, 0.0),
        (4, None, "missing_left", None, 1.0),
    ]
