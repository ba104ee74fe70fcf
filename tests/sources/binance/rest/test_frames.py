"""Tests for the pure REST JSON → silver DataFrame functions and the paging arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from crypto_lakehouse.exceptions import SourceError
from crypto_lakehouse.sources.binance._silver import (
    AGG_TRADES,
    CM_KLINES,
    FUNDING_RATE,
    KLINES,
    METRICS,
    PRICE_KLINES,
    SPOT_AGG_TRADES,
    schema,
)
from crypto_lakehouse.sources.binance.rest import frames as rest_frames
from crypto_lakehouse.sources.binance.rest.paging import next_time_cursor, to_ms, window_end

T0 = 1_577_836_800_000  # 2020-01-01T00:00Z
H = 3_600_000
SPOT_ROW = [
    T0,
    "7195.24000000",
    "7196.25000000",
    "7183.14000000",
    "7186.68000000",
    "51.64281200",
    T0 + 59_999,
    "371233.51835535",
    493,
    "19.59823000",
    "140888.41428273",
    "0",
]


def test_klines_frame_maps_positions_and_converts_ms() -> None:
    """A spot kline array becomes one typed row; times are UTC µs, decimals float64."""
    frame = rest_frames.klines_frame("spot", "BTCUSDT", "1m", [SPOT_ROW])
    assert frame.schema == schema(KLINES)
    row = frame.row(0, named=True)
    assert row["open_time"] == datetime(2020, 1, 1, tzinfo=UTC)
    assert row["close_time"].microsecond == 999_000
    assert (row["close"], row["trades"], row["quote_volume"]) == (7186.68, 493, 371233.51835535)
    assert (row["symbol"], row["interval"]) == ("BTCUSDT", "1m")


def test_cm_klines_name_columns_7_and_10_as_base_volumes() -> None:
    """COIN-M arrays put base-asset volume at 7 and 10, so those columns are named base_*."""
    frame = rest_frames.klines_frame("cm", "BTCUSD_PERP", "1m", [SPOT_ROW])
    assert frame.schema == schema(CM_KLINES)
    assert frame["base_volume"][0] == 371233.51835535
    assert frame["taker_buy_base_volume"][0] == 140888.41428273


def test_empty_pages_give_empty_typed_frames() -> None:
    """No rows still yields the full schema, so concatenation downstream works."""
    assert rest_frames.klines_frame("um", "X", "1m", []).schema == schema(KLINES)
    assert rest_frames.funding_rate_frame("X", []).schema == schema(FUNDING_RATE)


def test_price_klines_frame_keeps_ohlc_and_samples() -> None:
    """Mark/index/premium arrays keep OHLC, close_time and element 8 as samples."""
    row = [T0, "1.0", "2.0", "0.5", "1.5", "0", T0 + 59_999, "0", 60, "0", "0", "0"]
    frame = rest_frames.price_klines_frame("BTCUSD", "1m", [row])
    assert frame.schema == schema(PRICE_KLINES)
    assert frame.row(0)[3:9] == (1.0, 2.0, 0.5, 1.5, frame["close_time"][0], 60)


def test_agg_trades_frame_adds_best_match_for_spot_only() -> None:
    """Spot rows carry is_best_match from M; futures layouts have no such column."""
    trade = {
        "a": 26129,
        "p": "0.01633102",
        "q": "4.70443515",
        "f": 27781,
        "l": 27781,
        "T": T0,
        "m": True,
        "M": True,
    }
    spot = rest_frames.agg_trades_frame("spot", "LTCBTC", [trade])
    assert spot.schema == schema(SPOT_AGG_TRADES)
    assert spot.row(0, named=True)["is_best_match"] is True
    um = rest_frames.agg_trades_frame(
        "um", "LTCUSDT", [{k: v for k, v in trade.items() if k != "M"}]
    )
    assert um.schema == schema(AGG_TRADES)
    assert um["agg_trade_id"][0] == 26129 and um["price"][0] == 0.01633102


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0, 8 * H, 16 * H], [None, 8, 8]),
        ([0, 8 * H, 12 * H, 16 * H + 5], [None, 8, 4, 4]),  # switch to 4 h; ms jitter ok
        ([0, 16 * H], [None, None]),  # a missing event: 16 h is not an interval
        ([0, 3 * H + 30 * 60_000], [None, None]),  # not a whole number of hours
    ],
)
def test_funding_interval_is_derived_only_from_plausible_gaps(
    times: list[int], expected: list[int | None]
) -> None:
    """The interval is the gap to the previous event when it is 1, 2, 4 or 8 hours."""
    assert rest_frames.derive_funding_interval_hours(times) == expected


def test_funding_rate_frame_uses_funding_time_as_calc_time() -> None:
    """fundingTime becomes calc_time and fundingRate funding_rate; markPrice is dropped."""
    rows = [
        {
            "symbol": "BTCUSDT",
            "fundingTime": T0,
            "fundingRate": "-0.03750000",
            "markPrice": "34287.5",
        },
        {"symbol": "BTCUSDT", "fundingTime": T0 + 8 * H, "fundingRate": "0.00010000"},
    ]
    frame = rest_frames.funding_rate_frame("BTCUSDT", rows)
    assert frame["funding_rate"].to_list() == [-0.0375, 0.0001]
    assert frame["funding_interval_hours"].to_list() == [None, 8]
    assert frame["calc_time"][1] == datetime(2020, 1, 1, 8, tzinfo=UTC)


def test_open_interest_hist_accepts_string_timestamps_and_pairs() -> None:
    """UM string timestamps and CM `pair` rows both land in the metrics layout."""
    um = rest_frames.open_interest_hist_frame(
        "BTCUSDT",
        [
            {
                "symbol": "BTCUSDT",
                "sumOpenInterest": "20403.6",
                "sumOpenInterestValue": "1.5e8",
                "timestamp": str(T0),
            }
        ],
    )
    cm = rest_frames.open_interest_hist_frame(
        "BTCUSD",
        [
            {
                "pair": "BTCUSD",
                "contractType": "ALL",
                "sumOpenInterest": "1.0",
                "sumOpenInterestValue": "2.0",
                "timestamp": T0,
            }
        ],
    )
    for frame in (um, cm):
        assert frame.schema == schema(METRICS)
        assert frame["create_time"][0] == datetime(2020, 1, 1, tzinfo=UTC)
        assert frame["sum_toptrader_long_short_ratio"].null_count() == 1
    assert cm["symbol"][0] == "BTCUSD" and um["sum_open_interest"][0] == 20403.6


def test_premium_index_nulls_delivery_contract_blanks() -> None:
    """An object or an array is accepted; "" funding rates and 0 next-funding times are null."""
    perpetual = {
        "symbol": "BTCUSDT",
        "markPrice": "11793.6",
        "indexPrice": "11781.8",
        "estimatedSettlePrice": "11781.2",
        "lastFundingRate": "0.0003",
        "nextFundingTime": T0 + 8 * H,
        "time": T0,
    }
    delivery = {**perpetual, "symbol": "BTCUSD_200925", "lastFundingRate": "", "nextFundingTime": 0}
    assert rest_frames.premium_index_frame(perpetual).height == 1
    frame = rest_frames.premium_index_frame([perpetual, delivery])
    assert frame["funding_rate"].to_list() == [0.0003, None]
    assert frame["next_funding_time"].null_count() == 1


def test_open_interest_and_exchange_symbols_frames() -> None:
    """openInterest gives one row; exchangeInfo gives status and contract dates per symbol."""
    oi = rest_frames.open_interest_frame(
        {"openInterest": "10659.5", "symbol": "BTCUSDT", "time": T0}
    )
    assert oi.row(0) == ("BTCUSDT", datetime(2020, 1, 1, tzinfo=UTC), 10659.5)
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
            {
                "symbol": "BTCUSD_PERP",
                "contractStatus": "TRADING",
                "baseAsset": "BTC",
                "quoteAsset": "USD",
                "contractType": "PERPETUAL",
                "onboardDate": T0,
                "deliveryDate": 4133404800000,
            },
        ]
    }
    frame = rest_frames.exchange_symbols_frame(info)
    assert frame["status"].to_list() == ["TRADING", "TRADING"]
    assert frame["onboard_time"].to_list()[0] is None
    assert frame.filter(pl.col("contract_type") == "PERPETUAL").height == 1


def test_paging_arithmetic() -> None:
    """Windows end inclusively before the range end; full pages continue after their last row."""
    assert to_ms(datetime(2020, 1, 1, tzinfo=UTC)) == T0
    assert to_ms(datetime(2020, 1, 1)) == T0  # naive means UTC
    assert window_end(0, 10 * H, None) == 10 * H - 1
    assert window_end(0, 10 * H, H) == H - 1
    assert window_end(9 * H + 5, 10 * H, H) == 10 * H - 1
    assert next_time_cursor(0, [0, 60_000], 2, 999_999) == 60_001
    assert next_time_cursor(0, [0], 2, 999_999) == 1_000_000
    with pytest.raises(SourceError, match="paging stalled"):
        next_time_cursor(120_000, [0, 60_000], 2, 999_999)
