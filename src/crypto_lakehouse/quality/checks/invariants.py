"""Check row-level invariants of silver tables and name every violating row by its key.

Rules per kind (a rule only runs when its columns exist, so mark/index/premium klines and
COIN-M's `base_volume` columns are handled by the same code):

- klines: `price_positive`, `low_le_open_close` (low ≤ open, close), `high_ge_open_close`
  (open, close ≤ high), `volume_nonnegative`, `taker_le_volume`, `close_time`
  (open + interval − 1 ms for ms-origin files, or − 1 µs for spot µs-era files),
  `off_grid` (open_time not a multiple of the interval);
- agg_trades: `price_positive`, `quantity_nonnegative`, `trade_id_order`
  (first ≤ last), `invalid_recovered_trade` (Binance's 2022-04 placeholders, first id −1);
- trades: `price_positive`, `quantity_nonnegative`;
- funding_rate: `funding_interval` (hours must divide a day);
- metrics: `open_interest_nonnegative`;
- every kind: `null_value` in a key or required column, `duplicate_key`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import polars as pl

from crypto_lakehouse.quality.checks.tables import (
    KEY_COLUMNS,
    TIME_COLUMN,
    US_PER_MS,
    TableKind,
    epoch_us,
    interval_us_expr,
    table_kind,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

VIOLATIONS_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "rule": pl.Utf8(),
        "key": pl.Utf8(),
        "detail": pl.Utf8(),
    }
)
# Float sums and decimal strings: allow this much slack before calling taker > volume.
REL_SLACK: Final = 1e-9
_PRICES: Final = ("open", "high", "low", "close", "price")
_VOLUMES: Final = (
    "volume",
    "quote_volume",
    "base_volume",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "taker_buy_base_volume",
    "trades",
)
_QUANTITIES: Final = ("quantity", "quote_quantity", "base_quantity")
_TAKER_PAIRS: Final = (
    ("taker_buy_volume", "volume"),
    ("taker_buy_quote_volume", "quote_volume"),
    ("taker_buy_base_volume", "base_volume"),
)

Rule = tuple[str, pl.Expr, pl.Expr]


def _any(columns: Sequence[str], predicate: str) -> pl.Expr:
    """Return `any(col <predicate> 0)` over columns, e.g. `<= 0` or `< 0`."""
    tests = [pl.col(c) <= 0 if predicate == "<=" else pl.col(c) < 0 for c in columns]
    return pl.any_horizontal(tests)


def _values(columns: Sequence[str]) -> pl.Expr:
    """Return a `name=value` listing of columns for a violation's detail."""
    parts: list[pl.Expr] = []
    for i, column in enumerate(columns):
        parts.append(pl.lit(f"{', ' if i else ''}{column}="))
        parts.append(pl.col(column).cast(pl.Utf8))
    return pl.concat_str(parts)


def _price_rules(present: set[str]) -> list[Rule]:
    """Return the positive-price and non-negative-size rules for the columns present."""
    rules: list[Rule] = []
    prices = [c for c in _PRICES if c in present]
    if prices:
        rules.append(("price_positive", _any(prices, "<="), _values(prices)))
    volumes = [c for c in _VOLUMES if c in present]
    if volumes:
        rules.append(("volume_nonnegative", _any(volumes, "<"), _values(volumes)))
    quantities = [c for c in _QUANTITIES if c in present]
    if quantities:
        rules.append(("quantity_nonnegative", _any(quantities, "<"), _values(quantities)))
    return rules


def _kline_rules(frame: pl.DataFrame) -> list[Rule]:
    """Return the OHLC, taker and close-time rules of klines."""
    present = set(frame.columns)
    ohlc = ["open", "high", "low", "close"]
    rules: list[Rule] = [
        ("low_le_open_close", pl.col("low") > pl.min_horizontal("open", "close"), _values(ohlc)),
        ("high_ge_open_close", pl.col("high") < pl.max_horizontal("open", "close"), _values(ohlc)),
    ]
    for taker, total in _TAKER_PAIRS:
        if taker in present and total in present:
            over = pl.col(taker) > pl.col(total) * (1 + REL_SLACK) + REL_SLACK
            rules.append(("taker_le_volume", over, _values([taker, total])))
    step = interval_us_expr(frame)
    length = epoch_us("close_time") - epoch_us("open_time")
    if "close_time" in present:
        # ms-origin files end 1 ms before the next bar, spot µs-era files 1 µs before it.
        bad = (length != step - US_PER_MS) & (length != step - 1)
        detail = pl.format("close_time - open_time = {} µs", length)
        rules.append(("close_time", bad, detail))
    off_grid = epoch_us("open_time") % step != 0
    rules.append(("off_grid", off_grid, pl.format("open_time not a multiple of {} µs", step)))
    return rules


def _kind_rules(frame: pl.DataFrame, kind: TableKind) -> list[Rule]:
    """Return the rules specific to one table kind."""
    if kind == "klines":
        return _kline_rules(frame)
    if kind == "agg_trades":
        return [
            (
                "trade_id_order",
                pl.col("first_trade_id") > pl.col("last_trade_id"),
                _values(["first_trade_id", "last_trade_id"]),
            ),
            (
                "invalid_recovered_trade",
                pl.col("first_trade_id") == -1,
                pl.lit("Binance placeholder for a recovered trade (first_trade_id = -1)"),
            ),
        ]
    if kind == "funding_rate":
        hours = pl.col("funding_interval_hours")
        bad = (hours <= 0) | (24 % hours.clip(lower_bound=1) != 0)
        return [("funding_interval", bad, _values(["funding_interval_hours"]))]
    if kind == "metrics" and "sum_open_interest" in frame.columns:
        columns = [
            c for c in ("sum_open_interest", "sum_open_interest_value") if c in frame.columns
        ]
        return [("open_interest_nonnegative", _any(columns, "<"), _values(columns))]
    return []


def _key_expr(kind: TableKind) -> pl.Expr:
    """Return a readable rendering of a row's primary key (without the symbol)."""
    parts: list[pl.Expr] = []
    for i, column in enumerate(KEY_COLUMNS[kind][1:]):
        parts.append(pl.lit(f"{' ' if i else ''}{column}="))
        value = pl.col(column)
        if column == TIME_COLUMN[kind]:
            value = value.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        parts.append(value.cast(pl.Utf8).fill_null("null"))
    return pl.concat_str(parts)


def check_invariants(
    frame: pl.DataFrame, *, table: str, kind: TableKind | None = None
) -> pl.DataFrame:
    """Return one row per (violating row, rule) of a silver frame.

    Args:
        frame: Silver rows of one table, any symbols and days.
        table: The silver table name, written into the `table` column.
        kind: Override the kind derived from `table`.

    Returns:
        `VIOLATIONS_SCHEMA` rows: `key` renders the row's primary key (e.g.
        `interval=1m open_time=2020-01-01T00:05:00.000000Z`), `detail` the offending
        values, `day` the UTC day of the row's time. Empty when every row passes. Rows
        with a null price compare as unknown and are reported once under `null_value`.
    """
    kind = kind or table_kind(table)
    present = set(frame.columns)
    key_columns = list(KEY_COLUMNS[kind])
    required = [c for c in [*key_columns, *_PRICES, "volume"] if c in present]
    nulls = pl.any_horizontal(pl.col(required).is_null())
    duplicated = pl.struct(key_columns).is_duplicated()
    rules: list[Rule] = [
        ("null_value", nulls, pl.lit("null in one of " + ", ".join(required))),
        *_price_rules(present),
        *_kind_rules(frame, kind),
        ("duplicate_key", duplicated, pl.lit("key appears more than once")),
    ]
    base = frame.with_columns(_key=_key_expr(kind), _day=pl.col(TIME_COLUMN[kind]).dt.date())
    found = [
        base.filter(violates.fill_null(False)).select(
            pl.lit(table).alias("table"),
            pl.col("symbol"),
            pl.col("_day").alias("day"),
            pl.lit(name).alias("rule"),
            pl.col("_key").alias("key"),
            detail.alias("detail"),
        )
        for name, violates, detail in rules
    ]
    return pl.concat(found).cast(VIOLATIONS_SCHEMA).sort("symbol", "day", "rule", "key")
