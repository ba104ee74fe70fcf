"""The registry of every Binance archive dataset: where it lives, its columns, its keys.

Columns are listed **by position** in the CSV, because header rows come and go between files
and COIN-M headers name columns for what UM files hold (binance-archive.md §2.1-2.2).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import polars as pl

if TYPE_CHECKING:
    from datetime import date

Market = Literal["spot", "um", "cm", "option"]
Period = Literal["daily", "monthly"]
ColumnKind = Literal["int", "float", "bool", "str", "ts", "ts_text", "date_text", "ignore"]

MARKET_PATHS: dict[str, str] = {
    "spot": "spot",
    "um": "futures/um",
    "cm": "futures/cm",
    "option": "option",
}

KLINE_INTERVALS: tuple[str, ...] = tuple(
    "1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1mo".split()
)
DAILY_INTERVALS: tuple[str, ...] = KLINE_INTERVALS[:13]

TIMESTAMP = pl.Datetime("us", "UTC")
LINEAGE_SCHEMA: dict[str, pl.DataType] = {
    "_source": pl.String(),
    "_bronze_key": pl.String(),
    "_revision": pl.Int64(),
    "_ingested_at": TIMESTAMP,
    "_provisional": pl.Boolean(),
}

_KIND_DTYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "str": pl.String(),
    "ts": TIMESTAMP,
    "ts_text": TIMESTAMP,
    "date_text": pl.Date(),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One CSV column by position: its silver name and how its text is parsed."""

    name: str
    kind: ColumnKind


@dataclass(frozen=True, slots=True)
class Dataset:
    """One (market, archive data type): path template, CSV layout, key and table layout."""

    market: Market
    data_type: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    time_column: str
    periods: tuple[Period, ...] = ("daily", "monthly")
    has_interval: bool = False
    tick: bool = False
    derived_time_from_date_hour: bool = False
    notes: str = ""
    intervals: tuple[str, ...] = field(default=())

    @property
    def table(self) -> str:
        """Return the silver table name, e.g. `cm_agg_trades`."""
        return f"{self.market}_{_snake(self.data_type)}"

    @property
    def market_path(self) -> str:
        """Return the archive path segment of the market, e.g. `futures/cm`."""
        return MARKET_PATHS[self.market]

    @property
    def csv_columns(self) -> tuple[Column, ...]:
        """Return the columns as they stand in the CSV, ignored ones included."""
        return self.columns

    @property
    def partition_by(self) -> tuple[str, ...]:
        """Return partition columns: symbol (and interval) for bars, symbol and day for ticks.

        A tick day is tens of MB for liquid symbols, and one archive file covers whole day
        partitions, so a file's rows replace whole partitions (see ingest/write/ticks.py).
        """
        if self.has_interval:
            return ("symbol", "interval")
        if self.tick:
            return ("symbol", "date")
        return ("symbol",)

    def silver_schema(self) -> dict[str, pl.DataType]:
        """Return the silver table schema: symbol, [interval], data columns, [date], lineage."""
        schema: dict[str, pl.DataType] = {"symbol": pl.String()}
        if self.has_interval:
            schema["interval"] = pl.String()
        for column in self.columns:
            if column.kind != "ignore":
                schema[column.name] = _KIND_DTYPES[column.kind]
        if self.derived_time_from_date_hour:
            schema["time"] = TIMESTAMP
        if self.tick:
            schema["date"] = pl.Date()
        schema.update(LINEAGE_SCHEMA)
        return schema

    def archive_prefix(self, period: Period, symbol: str, interval: str | None = None) -> str:
        """Return the listing prefix of one symbol's files.

        Example: `data/spot/daily/klines/BTCUSDT/1m/`.
        """
        base = f"data/{self.market_path}/{period}/{self.data_type}/{symbol}/"
        if self.has_interval:
            if not interval:
                raise ValueError(f"{self.table} needs an interval")
            return f"{base}{interval}/"
        return base

    def symbols_prefix(self, period: Period) -> str:
        """Return the listing prefix whose sub-directories are the symbols.

        Example: `data/futures/um/monthly/fundingRate/`.
        """
        return f"data/{self.market_path}/{period}/{self.data_type}/"

    def archive_key(
        self, period: Period, symbol: str, day: date, interval: str | None = None
    ) -> str:
        """Return the archive key of one file.

        Example: `data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip`.
        """
        stamp = day.strftime("%Y-%m-%d") if period == "daily" else day.strftime("%Y-%m")
        middle = interval if self.has_interval else self.data_type
        return f"{self.archive_prefix(period, symbol, interval)}{symbol}-{middle}-{stamp}.zip"


@functools.cache  # asked per file of a run (`Dataset.table`)
def _snake(name: str) -> str:
    """Return `aggTrades` as `agg_trades`, `BVOLIndex` as `bvol_index`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _cols(spec: str) -> tuple[Column, ...]:
    """Parse `name:kind,name:kind` into columns."""
    out = []
    for item in spec.split(","):
        name, kind = item.strip().split(":")
        out.append(Column(name, kind))  # type: ignore[arg-type]
    return tuple(out)


_KLINES = (
    "open_time:ts,open:float,high:float,low:float,close:float,volume:float,close_time:ts,"
    "quote_volume:float,trades:int,taker_buy_volume:float,taker_buy_quote_volume:float,ignore:ignore"
)
_CM_KLINES = (
    "open_time:ts,open:float,high:float,low:float,close:float,volume:float,close_time:ts,"
    "base_volume:float,trades:int,taker_buy_volume:float,taker_buy_base_volume:float,ignore:ignore"
)
_PRICE_KLINES = (
    "open_time:ts,open:float,high:float,low:float,close:float,ignore_volume:ignore,close_time:ts,"
    "ignore_quote:ignore,samples:int,ignore_taker:ignore,ignore_taker_quote:ignore,ignore:ignore"
)
_SPOT_AGG = (
    "agg_trade_id:int,price:float,quantity:float,first_trade_id:int,last_trade_id:int,"
    "transact_time:ts,is_buyer_maker:bool,is_best_match:bool"
)
_FUT_AGG = (
    "agg_trade_id:int,price:float,quantity:float,first_trade_id:int,last_trade_id:int,"
    "transact_time:ts,is_buyer_maker:bool"
)
_SPOT_TRADES = (
    "trade_id:int,price:float,quantity:float,quote_quantity:float,time:ts,"
    "is_buyer_maker:bool,is_best_match:bool"
)
_UM_TRADES = (
    "trade_id:int,price:float,quantity:float,quote_quantity:float,time:ts,is_buyer_maker:bool"
)
_CM_TRADES = (
    "trade_id:int,price:float,quantity:float,base_quantity:float,time:ts,is_buyer_maker:bool"
)
_FUNDING = "calc_time:ts,funding_interval_hours:int,funding_rate:float"
_BOOK_TICKER = (
    "update_id:int,best_bid_price:float,best_bid_qty:float,best_ask_price:float,"
    "best_ask_qty:float,transaction_time:ts,event_time:ts"
)
_BOOK_DEPTH = "timestamp:ts_text,percentage:float,depth:float,notional:float"
_METRICS = (
    "create_time:ts_text,file_symbol:ignore,sum_open_interest:float,sum_open_interest_value:float,"
    "count_toptrader_long_short_ratio:float,sum_toptrader_long_short_ratio:float,"
    "count_long_short_ratio:float,sum_taker_long_short_vol_ratio:float"
)
_LIQUIDATION = (
    "time:ts,side:str,order_type:str,time_in_force:str,original_quantity:float,price:float,"
    "average_price:float,order_status:str,last_fill_quantity:float,accumulated_fill_quantity:float"
)
_BVOL = "calc_time:ts,file_symbol:ignore,base_asset:str,quote_asset:str,index_value:float"
_EOH = (
    "date:date_text,hour:int,option_symbol:str,underlying:str,type:str,strike:str,open:float,"
    "high:float,low:float,close:float,volume_contracts:float,volume_usdt:float,"
    "best_bid_price:float,best_ask_price:float,best_bid_qty:float,best_ask_qty:float,"
    "best_buy_iv:float,best_sell_iv:float,mark_price:float,mark_iv:float,delta:float,"
    "gamma:float,vega:float,theta:float,openinterest_contracts:float,openinterest_usdt:float"
)
_LIQ_KEY = tuple(c.name for c in _cols(_LIQUIDATION))


def _build_registry() -> dict[tuple[str, str], Dataset]:
    """Build every dataset of binance-archive.md §1.6."""
    kline_key = ("symbol", "interval", "open_time")
    entries: list[Dataset] = [
        Dataset("spot", "klines", _cols(_KLINES), kline_key, "open_time", has_interval=True,
                intervals=KLINE_INTERVALS),
        Dataset("spot", "aggTrades", _cols(_SPOT_AGG), ("symbol", "agg_trade_id"),
                "transact_time", tick=True),
        Dataset("spot", "trades", _cols(_SPOT_TRADES), ("symbol", "trade_id"), "time", tick=True),
    ]  # fmt: skip
    for market in ("um", "cm"):
        klines = _KLINES if market == "um" else _CM_KLINES
        trades = _UM_TRADES if market == "um" else _CM_TRADES
        futures_intervals = tuple(i for i in KLINE_INTERVALS if i != "1s")
        entries += [
            Dataset(market, "klines", _cols(klines), kline_key, "open_time", has_interval=True,
                    intervals=futures_intervals),
            Dataset(market, "aggTrades", _cols(_FUT_AGG), ("symbol", "agg_trade_id"),
                    "transact_time", tick=True),
            Dataset(market, "trades", _cols(trades), ("symbol", "trade_id"), "time", tick=True),
            Dataset(market, "fundingRate", _cols(_FUNDING), ("symbol", "calc_time"), "calc_time",
                    periods=("monthly",)),
            Dataset(market, "bookTicker", _cols(_BOOK_TICKER), ("symbol", "update_id"),
                    "transaction_time", tick=True, notes="discontinued 2024"),
            Dataset(market, "bookDepth", _cols(_BOOK_DEPTH),
                    ("symbol", "timestamp", "percentage"), "timestamp", periods=("daily",),
                    tick=True),
            Dataset(market, "metrics", _cols(_METRICS), ("symbol", "create_time"), "create_time",
                    periods=("daily",)),
            Dataset(market, "liquidationSnapshot", _cols(_LIQUIDATION), ("symbol", *_LIQ_KEY),
                    "time", periods=("daily",), notes="every row repeated; discontinued 2024"),
        ]  # fmt: skip
        for kind in ("indexPriceKlines", "markPriceKlines", "premiumIndexKlines"):
            entries.append(
                Dataset(market, kind, _cols(_PRICE_KLINES), kline_key, "open_time",
                        has_interval=True, intervals=futures_intervals)
            )  # fmt: skip
    entries += [
        Dataset("option", "BVOLIndex", _cols(_BVOL), ("symbol", "calc_time"), "calc_time",
                periods=("daily",)),
        Dataset("option", "EOHSummary", _cols(_EOH), ("symbol", "option_symbol", "time"), "time",
                periods=("daily",), derived_time_from_date_hour=True),
    ]  # fmt: skip
    return {(d.market, d.data_type): d for d in entries}


REGISTRY: dict[tuple[str, str], Dataset] = _build_registry()
_ALIASES: dict[str, str] = {_snake(d.data_type): d.data_type for d in REGISTRY.values()}
_ALIASES.update({d.data_type.lower(): d.data_type for d in REGISTRY.values()})
_MARKET_ALIASES: dict[str, str] = {
    "usdm": "um",
    "coinm": "cm",
    "futures/um": "um",
    "futures/cm": "cm",
}


def get_dataset(market: str, data_type: str) -> Dataset:
    """Return the dataset for a market and data type, accepting `agg_trades` or `aggTrades`.

    Raises:
        KeyError: with the list of known datasets, when the pair is unknown.
    """
    market_key = _MARKET_ALIASES.get(market.lower(), market.lower())
    type_key = _ALIASES.get(data_type.lower(), data_type)
    try:
        return REGISTRY[(market_key, type_key)]
    except KeyError:
        known = ", ".join(f"{m} {t}" for m, t in sorted(REGISTRY))
        raise KeyError(f"unknown dataset {market} {data_type}; known: {known}") from None


def dataset_for_table(table: str) -> Dataset:
    """Return the dataset whose silver table is `table`."""
    for dataset in REGISTRY.values():
        if dataset.table == table:
            return dataset
    raise KeyError(f"no dataset writes the table {table}")


def interval_micros(interval: str) -> int:
    """Return the length of a fixed kline interval in µs (`1mo` has none and raises)."""
    match = re.fullmatch(r"(\d+)([smhdw])", interval)
    if not match:
        raise ValueError(f"interval {interval!r} has no fixed length")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return int(match.group(1)) * unit * 1_000_000
