"""Describe silver tables for the checks: kinds, time and key columns, interval lengths.

Everything here works in integer microseconds since the Unix epoch, the unit of silver's
`timestamp[us, UTC]` columns, so slot arithmetic is exact.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import polars as pl

from crypto_lakehouse.exceptions import ConfigurationError

TableKind = Literal["klines", "agg_trades", "trades", "funding_rate", "metrics"]

US_PER_SECOND: Final = 1_000_000
US_PER_MS: Final = 1_000
US_PER_DAY: Final = 86_400 * US_PER_SECOND
TIME_DTYPE: Final = pl.Datetime("us", "UTC")

TIME_COLUMN: Final[dict[TableKind, str]] = {
    "klines": "open_time",
    "agg_trades": "transact_time",
    "trades": "time",
    "funding_rate": "calc_time",
    "metrics": "create_time",
}
KEY_COLUMNS: Final[dict[TableKind, tuple[str, ...]]] = {
    "klines": ("symbol", "interval", "open_time"),
    "agg_trades": ("symbol", "agg_trade_id"),
    "trades": ("symbol", "trade_id"),
    "funding_rate": ("symbol", "calc_time"),
    "metrics": ("symbol", "create_time"),
}
ID_COLUMN: Final[dict[TableKind, str]] = {"agg_trades": "agg_trade_id", "trades": "trade_id"}
METRICS_INTERVAL: Final = "5m"

_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_INTERVAL_RE: Final = re.compile(r"^([1-9][0-9]*)([smhdw])$")
# Longest suffix first so that `_agg_trades` wins over `_trades`.
_SUFFIXES: Final[tuple[tuple[str, TableKind], ...]] = (
    ("agg_trades", "agg_trades"),
    ("trades", "trades"),
    ("klines", "klines"),
    ("funding_rate", "funding_rate"),
    ("metrics", "metrics"),
)


def table_kind(table: str) -> TableKind:
    """Return the kind of a silver table from its name.

    Args:
        table: A silver table name such as `spot_klines`, `um_mark_price_klines`,
            `cm_agg_trades` or a bare kind such as `klines`.

    Returns:
        The table kind the checks dispatch on.

    Raises:
        ConfigurationError: The name ends in no known data type.
    """
    for suffix, kind in _SUFFIXES:
        if table == suffix or table.endswith("_" + suffix):
            return kind
    known = ", ".join(suffix for suffix, _ in _SUFFIXES)
    raise ConfigurationError(
        f"table {table!r} is not a checked data type; its name must end in {known}"
    )


def interval_us(interval: str) -> int:
    """Return the length of a fixed interval string in microseconds.

    Args:
        interval: A Binance interval such as `1s`, `1m`, `4h`, `1d` or `1w`.

    Returns:
        The interval length in µs (60,000,000 for `1m`).

    Raises:
        ConfigurationError: The string is not a fixed-length interval (`1M`/`1mo` are
            calendar months and have no fixed length).
    """
    match = _INTERVAL_RE.match(interval)
    if match is None:
        raise ConfigurationError(
            f"interval {interval!r} is not a fixed length; use a number and one of s, m, h, d, w"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)] * US_PER_SECOND


def slots_per_day(interval: str) -> int:
    """Return how many slots of an interval fit in one UTC day.

    Args:
        interval: An interval string from `1s` to `1d`.

    Returns:
        The expected rows per day: 86,400 for `1s`, 1,440 for `1m`, 1 for `1d`.

    Raises:
        ConfigurationError: The interval does not divide a day evenly (for example `7m`
            or `3d`).
    """
    length = interval_us(interval)
    if US_PER_DAY % length != 0:
        raise ConfigurationError(f"interval {interval!r} does not divide a UTC day evenly")
    return US_PER_DAY // length


def interval_us_expr(frame: pl.DataFrame, column: str = "interval") -> pl.Expr:
    """Return an expression mapping each interval string of `frame[column]` to its µs length.

    Args:
        frame: The frame whose distinct interval values are parsed once.
        column: The column holding interval strings.

    Returns:
        An Int64 expression; raises `ConfigurationError` early for an unparseable value.
    """
    values = [value for value in frame.get_column(column).unique().to_list() if value is not None]
    mapping = {value: interval_us(value) for value in values}
    return pl.col(column).replace_strict(mapping, default=None, return_dtype=pl.Int64)


def single_interval(frame: pl.DataFrame) -> str:
    """Return the one interval of a klines frame.

    Args:
        frame: A silver klines frame.

    Returns:
        The interval string shared by every row.

    Raises:
        ConfigurationError: The frame is empty of intervals or mixes several.
    """
    values = frame.get_column("interval").drop_nulls().unique().to_list()
    if len(values) != 1:
        raise ConfigurationError(
            f"expected klines of exactly one interval, got {sorted(values)}; "
            "filter by interval first"
        )
    return str(values[0])


def epoch_us(column: str) -> pl.Expr:
    """Return a silver timestamp column as Int64 microseconds since the epoch."""
    return pl.col(column).dt.epoch("us")


def from_epoch_us(expr: pl.Expr) -> pl.Expr:
    """Return Int64 microseconds as silver's `Datetime("us", "UTC")`."""
    return expr.cast(pl.Int64).cast(TIME_DTYPE)
