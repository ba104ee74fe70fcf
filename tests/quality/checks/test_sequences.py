"""Id continuity of aggTrades and trades, within a day and across midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from crypto_lakehouse.quality.checks.sequences import find_sequence_holes, id_completeness, last_ids
from tests.quality.conftest import TIME

HOLE_ID = 480_600_000


def make_agg_trades(first_id: int, count: int, start: datetime) -> pl.DataFrame:
    """Generate continuous aggTrades: each aggregates two raw trades, one per second."""
    ids = list(range(first_id, first_id + count))
    return pl.DataFrame(
        {
            "symbol": "TESTUSDT",
            "agg_trade_id": ids,
            "price": 100.0,
            "quantity": 1.0,
            "first_trade_id": [2 * i for i in ids],
            "last_trade_id": [2 * i + 1 for i in ids],
            "transact_time": [start + timedelta(seconds=i - first_id) for i in ids],
            "is_buyer_maker": False,
        }
    ).with_columns(pl.col("transact_time").cast(TIME))


def test_real_agg_trades_are_continuous(cm_agg_trades: pl.DataFrame) -> None:
    """The real COIN-M day has no break in agg_trade_id nor in the raw trade id chain."""
    assert find_sequence_holes(cm_agg_trades, table="cm_agg_trades").is_empty()
    completeness = id_completeness(cm_agg_trades, table="cm_agg_trades")
    assert completeness.select("expected_rows", "present_rows").row(0) == (105_280, 105_280)


def test_removed_agg_trade_is_found_at_its_id(cm_agg_trades: pl.DataFrame) -> None:
    """Removing one real aggTrade reports both sequences broken around exactly that id."""
    removed = cm_agg_trades.filter(pl.col("agg_trade_id") == HOLE_ID).row(0, named=True)
    holes = find_sequence_holes(
        cm_agg_trades.filter(pl.col("agg_trade_id") != HOLE_ID), table="cm_agg_trades"
    )
    by_check = {row["check"]: row for row in holes.iter_rows(named=True)}
    agg = by_check["agg_trade_id"]
    assert (agg["before_id"], agg["after_id"], agg["missing"]) == (HOLE_ID - 1, HOLE_ID + 1, 1)
    assert agg["kind"] == "hole"
    raw = by_check["trade_id"]
    assert raw["before_id"] == removed["first_trade_id"] - 1
    assert raw["after_id"] == removed["last_trade_id"] + 1
    assert raw["missing"] == removed["last_trade_id"] - removed["first_trade_id"] + 1


def test_hole_across_midnight_uses_previous_day_ids() -> None:
    """Given the previous day's last ids, ids lost at midnight count against the new day."""
    day1 = make_agg_trades(1, 10, datetime(2024, 1, 1, 23, 59, 50, tzinfo=UTC))
    day2 = make_agg_trades(14, 5, datetime(2024, 1, 2, tzinfo=UTC))
    previous = last_ids(day1, table="spot_agg_trades")
    assert previous.select("agg_trade_id", "last_trade_id").row(0) == (10, 21)
    holes = find_sequence_holes(day2, table="spot_agg_trades", previous=previous)
    assert holes.select("check", "before_id", "after_id", "missing").rows() == [
        ("agg_trade_id", 10, 14, 3),
        ("trade_id", 21, 28, 6),
    ]
    assert find_sequence_holes(day2, table="spot_agg_trades").is_empty()
    completeness = id_completeness(day2, table="spot_agg_trades", previous=previous)
    assert completeness.select("expected_rows", "present_rows", "missing_rows").row(0) == (8, 5, 3)


def test_overlap_and_invalid_placeholders() -> None:
    """Repeated raw trade ids are an overlap; Binance's -1 placeholders are skipped."""
    frame = make_agg_trades(1, 4, datetime(2024, 1, 1, tzinfo=UTC))
    frame = frame.with_columns(
        first_trade_id=pl.when(pl.col("agg_trade_id") == 3).then(4).otherwise("first_trade_id")
    )
    placeholder = frame.tail(1).with_columns(
        agg_trade_id=pl.lit(5, dtype=pl.Int64),
        first_trade_id=pl.lit(-1, dtype=pl.Int64),
        last_trade_id=pl.lit(-1, dtype=pl.Int64),
        price=pl.lit(0.0),
    )
    holes = find_sequence_holes(pl.concat([frame, placeholder]), table="spot_agg_trades")
    assert holes.select("check", "kind", "before_id", "after_id", "missing").rows() == [
        ("trade_id", "overlap", 5, 4, -2)
    ]


def test_trade_ids_of_trades_table() -> None:
    """A trades frame missing ids 5..7 reports one hole between 4 and 8."""
    ids = [i for i in range(1, 11) if i not in (5, 6, 7)]
    frame = pl.DataFrame(
        {
            "symbol": "BTCUSDT",
            "trade_id": ids,
            "price": 1.0,
            "quantity": 1.0,
            "quote_quantity": 1.0,
            "time": [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in ids],
            "is_buyer_maker": True,
        }
    ).with_columns(pl.col("time").cast(TIME))
    holes = find_sequence_holes(frame, table="um_trades")
    assert holes.select("check", "before_id", "after_id", "missing").rows() == [
        ("trade_id", 4, 8, 3)
    ]
