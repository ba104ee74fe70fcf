"""Declare the silver column layouts that REST and WebSocket rows are converted into.

The registry in `crypto_lakehouse.datasets` is the authority for table layouts; this module
repeats the column names the sources produce so that sources do not depend on it. Each
layout is a tuple of (column, kind) pairs; the kind decides how a JSON value is converted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import polars as pl

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Market = Literal["spot", "um", "cm"]
Kind = Literal["str", "ms", "float", "int", "bool"]
Layout = tuple[tuple[str, Kind], ...]

TIMESTAMP = pl.Datetime("us", "UTC")

_DTYPES: dict[Kind, pl.DataType] = {
    "str": pl.String(),
    "ms": TIMESTAMP,
    "float": pl.Float64(),
    "int": pl.Int64(),
    "bool": pl.Boolean(),
}

_KLINE_HEAD: Layout = (
    ("symbol", "str"),
    ("interval", "str"),
    ("open_time", "ms"),
    ("open", "float"),
    ("high", "float"),
    ("low", "float"),
    ("close", "float"),
)
KLINES: Layout = (
    *_KLINE_HEAD,
    ("volume", "float"),
    ("close_time", "ms"),
    ("quote_volume", "float"),
    ("trades", "int"),
    ("taker_buy_volume", "float"),
    ("taker_buy_quote_volume", "float"),
)
CM_KLINES: Layout = (
    *_KLINE_HEAD,
    ("volume", "float"),
    ("close_time", "ms"),
    ("base_volume", "float"),
    ("trades", "int"),
    ("taker_buy_volume", "float"),
    ("taker_buy_base_volume", "float"),
)
PRICE_KLINES: Layout = (*_KLINE_HEAD, ("close_time", "ms"), ("samples", "int"))
AGG_TRADES: Layout = (
    ("symbol", "str"),
    ("agg_trade_id", "int"),
    ("price", "float"),
    ("quantity", "float"),
    ("first_trade_id", "int"),
    ("last_trade_id", "int"),
    ("transact_time", "ms"),
    ("is_buyer_maker", "bool"),
)
SPOT_AGG_TRADES: Layout = (*AGG_TRADES, ("is_best_match", "bool"))
FUNDING_RATE: Layout = (
    ("symbol", "str"),
    ("calc_time", "ms"),
    ("funding_interval_hours", "int"),
    ("funding_rate", "float"),
)
METRICS: Layout = (
    ("symbol", "str"),
    ("create_time", "ms"),
    ("sum_open_interest", "float"),
    ("sum_open_interest_value", "float"),
    ("count_toptrader_long_short_ratio", "float"),
    ("sum_toptrader_long_short_ratio", "float"),
    ("count_long_short_ratio", "float"),
    ("sum_taker_long_short_vol_ratio", "float"),
)
MARK_PRICE: Layout = (
    ("symbol", "str"),
    ("event_time", "ms"),
    ("mark_price", "float"),
    ("index_price", "float"),
    ("estimated_settle_price", "float"),
    ("funding_rate", "float"),
    ("next_funding_time", "ms"),
)
OPEN_INTEREST: Layout = (("symbol", "str"), ("time", "ms"), ("open_interest", "float"))
LIQUIDATIONS: Layout = (
    ("symbol", "str"),
    ("time", "ms"),
    ("side", "str"),
    ("order_type", "str"),
    ("time_in_force", "str"),
    ("original_quantity", "float"),
    ("price", "float"),
    ("average_price", "float"),
    ("order_status", "str"),
    ("last_fill_quantity", "float"),
    ("accumulated_fill_quantity", "float"),
)
EXCHANGE_SYMBOLS: Layout = (
    ("symbol", "str"),
    ("status", "str"),
    ("base_asset", "str"),
    ("quote_asset", "str"),
    ("contract_type", "str"),
    ("onboard_time", "ms"),
    ("delivery_time", "ms"),
)


def schema(layout: Layout) -> pl.Schema:
    """Return the polars schema of a layout, e.g. `schema(KLINES)["open_time"]` is UTC µs."""
    return pl.Schema([(name, _DTYPES[kind]) for name, kind in layout])


def _blank(value: Any) -> bool:
    """Return True for JSON values that mean "no value" (null or the empty string)."""
    return value is None or value == ""


def _series(name: str, kind: Kind, values: Sequence[Any]) -> pl.Series:
    """Convert one column of JSON values (strings, numbers, ms epochs) to its silver dtype."""
    if kind == "float":
        text = [None if _blank(v) else str(v) for v in values]
        return pl.Series(name, text, dtype=pl.String).cast(pl.Float64)
    if kind in ("int", "ms"):
        ints = pl.Series(name, [None if _blank(v) else int(v) for v in values], dtype=pl.Int64)
        if kind == "int":
            return ints
        return ints.cast(pl.Datetime("ms", "UTC")).cast(TIMESTAMP)
    if kind == "bool":
        return pl.Series(name, [None if _blank(v) else bool(v) for v in values], dtype=pl.Boolean)
    return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)


def build_frame(layout: Layout, columns: Mapping[str, Sequence[Any]], height: int) -> pl.DataFrame:
    """Build a DataFrame in the layout's column order; absent columns become all-null.

    Args:
        layout: The silver layout to produce.
        columns: JSON values per column name; every sequence has `height` items.
        height: The number of rows (needed when every column is absent).

    Returns:
        A frame whose schema equals `schema(layout)`.
    """
    series = []
    for name, kind in layout:
        values = columns.get(name)
        series.append(_series(name, kind, values if values is not None else [None] * height))
    return pl.DataFrame(series)
