"""Turn Binance REST JSON payloads into silver-layout polars DataFrames (pure functions).

Every function takes already-decoded JSON (lists and dicts, decimals as strings, times as
epoch milliseconds) and returns a frame whose schema is the silver layout of its table.
Nothing here performs I/O, so each function is tested on literal payloads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crypto_lakehouse.sources.binance import _silver

if TYPE_CHECKING:
    import polars as pl

    from crypto_lakehouse.sources.binance._silver import Market

HOUR_MS = 3_600_000
# Funding intervals Binance has used (hours); a gap outside this set means missing rows.
_KNOWN_FUNDING_HOURS = frozenset({1, 2, 4, 8})
_FUNDING_SLACK_MS = 60_000


def _column(rows: Sequence[Sequence[Any]], index: int) -> list[Any]:
    """Return element `index` of every array row."""
    return [row[index] for row in rows]


def _field(rows: Sequence[Mapping[str, Any]], key: str, *alternatives: str) -> list[Any]:
    """Return `row[key]` (or the first present alternative key) of every object row."""
    out: list[Any] = []
    for row in rows:
        value = row.get(key)
        for alt in alternatives:
            if value is None:
                value = row.get(alt)
        out.append(value)
    return out


def klines_frame(
    market: Market, symbol: str, interval: str, rows: Sequence[Sequence[Any]]
) -> pl.DataFrame:
    """Convert `/klines` arrays to the `*_klines` silver layout.

    Args:
        market: "spot", "um" or "cm"; COIN-M columns 7 and 10 are base-asset volumes.
        symbol: The requested symbol (kline arrays do not carry it).
        interval: The requested interval, e.g. "1m".
        rows: 12-element arrays `[openTime, o, h, l, c, v, closeTime, qv, n, tbv, tbqv, 0]`.

    Returns:
        One row per array, in input order.
    """
    layout = _silver.CM_KLINES if market == "cm" else _silver.KLINES
    names = [name for name, _ in layout[2:]]
    columns: dict[str, Sequence[Any]] = {
        name: _column(rows, index) for index, name in enumerate(names)
    }
    columns["symbol"] = [symbol] * len(rows)
    columns["interval"] = [interval] * len(rows)
    return _silver.build_frame(layout, columns, len(rows))


def price_klines_frame(symbol: str, interval: str, rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Convert mark/index/premium-index kline arrays to their silver layout (`samples` = [8]).

    Args:
        symbol: The requested symbol, or the pair for index price klines.
        interval: The requested interval.
        rows: 12-element arrays; only OHLC, the two times and element 8 carry data.

    Returns:
        One row per array, in input order.
    """
    positions = {"open_time": 0, "open": 1, "high": 2, "low": 3, "close": 4, "close_time": 6}
    columns: dict[str, Sequence[Any]] = {
        name: _column(rows, index) for name, index in positions.items()
    }
    columns["samples"] = _column(rows, 8)
    columns["symbol"] = [symbol] * len(rows)
    columns["interval"] = [interval] * len(rows)
    return _silver.build_frame(_silver.PRICE_KLINES, columns, len(rows))


def agg_trades_frame(
    market: Market, symbol: str, rows: Sequence[Mapping[str, Any]]
) -> pl.DataFrame:
    """Convert `/aggTrades` objects `{a, p, q, f, l, T, m[, M]}` to the `*_agg_trades` layout.

    Args:
        market: "spot" adds `is_best_match` (from `M`); futures layouts lack it.
        symbol: The requested symbol (the objects do not carry it).
        rows: Aggregate trade objects.

    Returns:
        One row per object, in input order.
    """
    layout = _silver.SPOT_AGG_TRADES if market == "spot" else _silver.AGG_TRADES
    keys = {
        "agg_trade_id": "a",
        "price": "p",
        "quantity": "q",
        "first_trade_id": "f",
        "last_trade_id": "l",
        "transact_time": "T",
        "is_buyer_maker": "m",
        "is_best_match": "M",
    }
    columns: dict[str, Sequence[Any]] = {name: _field(rows, key) for name, key in keys.items()}
    columns["symbol"] = [symbol] * len(rows)
    return _silver.build_frame(layout, columns, len(rows))


def derive_funding_interval_hours(funding_times_ms: Sequence[int]) -> list[int | None]:
    """Derive each funding event's interval from the gap to the previous event.

    REST `fundingRate` has no interval column, unlike the archive. The interval of event i
    is taken as the whole number of hours since event i-1, but only when that gap is within
    a minute of 1, 2, 4 or 8 hours; otherwise (first event, or a gap that implies missing
    events) it is None. Input must be ascending.

    Args:
        funding_times_ms: Ascending funding times in epoch milliseconds.

    Returns:
        One interval (or None) per input time.
    """
    out: list[int | None] = []
    previous: int | None = None
    for current in funding_times_ms:
        hours: int | None = None
        if previous is not None:
            gap = current - previous
            rounded = round(gap / HOUR_MS)
            near = abs(gap - rounded * HOUR_MS) <= _FUNDING_SLACK_MS
            if rounded in _KNOWN_FUNDING_HOURS and near:
                hours = rounded
        out.append(hours)
        previous = current
    return out


def funding_rate_frame(symbol: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Convert `/fundingRate` objects to the `*_funding_rate` layout.

    `funding_interval_hours` is derived from consecutive `fundingTime` gaps (see
    `derive_funding_interval_hours`); it is null where it cannot be derived.

    Args:
        symbol: Used when an object lacks `symbol`.
        rows: Objects `{symbol, fundingTime, fundingRate[, markPrice]}` in ascending time.

    Returns:
        One row per object, in input order.
    """
    times = [int(t) for t in _field(rows, "fundingTime")]
    columns: dict[str, Sequence[Any]] = {
        "symbol": [s or symbol for s in _field(rows, "symbol")],
        "calc_time": times,
        "funding_interval_hours": derive_funding_interval_hours(times),
        "funding_rate": _field(rows, "fundingRate"),
    }
    return _silver.build_frame(_silver.FUNDING_RATE, columns, len(rows))


def open_interest_hist_frame(symbol: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Convert `/futures/data/openInterestHist` objects to the `*_metrics` layout.

    Only `create_time` (from `timestamp`, an int or a numeric string), `sum_open_interest`
    and `sum_open_interest_value` are filled; the ratio columns stay null.

    Args:
        symbol: Used when an object has neither `symbol` nor `pair`.
        rows: Objects `{symbol|pair, sumOpenInterest, sumOpenInterestValue, timestamp}`.

    Returns:
        One row per object, in input order.
    """
    columns: dict[str, Sequence[Any]] = {
        "symbol": [s or symbol for s in _field(rows, "symbol", "pair")],
        "create_time": _field(rows, "timestamp"),
        "sum_open_interest": _field(rows, "sumOpenInterest"),
        "sum_open_interest_value": _field(rows, "sumOpenInterestValue"),
    }
    return _silver.build_frame(_silver.METRICS, columns, len(rows))


def premium_index_frame(payload: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Convert a `/premiumIndex` object or array to mark-price rows.

    Delivery contracts report `lastFundingRate` "" and `nextFundingTime` 0; both become null.

    Args:
        payload: One object (UM with a symbol) or an array of objects.

    Returns:
        Rows with symbol, event_time, mark_price, index_price, estimated_settle_price,
        funding_rate, next_funding_time.
    """
    rows = [payload] if isinstance(payload, Mapping) else list(payload)
    columns: dict[str, Sequence[Any]] = {
        "symbol": _field(rows, "symbol"),
        "event_time": _field(rows, "time"),
        "mark_price": _field(rows, "markPrice"),
        "index_price": _field(rows, "indexPrice"),
        "estimated_settle_price": _field(rows, "estimatedSettlePrice"),
        "funding_rate": _field(rows, "lastFundingRate"),
        "next_funding_time": [t or None for t in _field(rows, "nextFundingTime")],
    }
    return _silver.build_frame(_silver.MARK_PRICE, columns, len(rows))


def open_interest_frame(payload: Mapping[str, Any]) -> pl.DataFrame:
    """Convert a `/openInterest` object `{openInterest, symbol, time}` to one row."""
    columns: dict[str, Sequence[Any]] = {
        "symbol": [payload.get("symbol")],
        "time": [payload.get("time")],
        "open_interest": [payload.get("openInterest")],
    }
    return _silver.build_frame(_silver.OPEN_INTEREST, columns, 1)


def exchange_symbols_frame(payload: Mapping[str, Any]) -> pl.DataFrame:
    """Convert `exchangeInfo.symbols` to rows: status, assets and (futures) contract dates.

    Args:
        payload: The decoded `exchangeInfo` response.

    Returns:
        One row per listed symbol; spot rows have null contract columns.
    """
    rows: list[Mapping[str, Any]] = list(payload.get("symbols", []))
    columns: dict[str, Sequence[Any]] = {
        "symbol": _field(rows, "symbol"),
        "status": _field(rows, "status", "contractStatus"),
        "base_asset": _field(rows, "baseAsset"),
        "quote_asset": _field(rows, "quoteAsset"),
        "contract_type": [t or None for t in _field(rows, "contractType")],
        "onboard_time": [t or None for t in _field(rows, "onboardDate")],
        "delivery_time": [t or None for t in _field(rows, "deliveryDate")],
    }
    return _silver.build_frame(_silver.EXCHANGE_SYMBOLS, columns, len(rows))
