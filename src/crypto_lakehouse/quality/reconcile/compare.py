"""Cross-check data from two origins: klines vs aggTrades, daily vs monthly, archive vs REST.

Every comparison returns mismatch rows with one fixed shape: the key columns, then
`column`, `kind` (`value_differs`, `missing_left`, `missing_right`), `left_value`,
`right_value` (Float64; booleans as 0/1, timestamps as µs) and `left_source`,
`right_source`. For a row missing on one side, `column` is null and the present side's
value is its row count (1). Nothing is corrected: a mismatch is reported, never resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import polars as pl

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.tables import (
    KEY_COLUMNS,
    US_PER_MS,
    epoch_us,
    from_epoch_us,
    interval_us,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(slots=True, frozen=True)
class Tolerance:
    """Two values agree when |left − right| ≤ abs + rel · max(|left|, |right|)."""

    abs: float = 0.0
    rel: float = 0.0


# Exchange figures are exact decimals; rebuilt sums of float products drift by ~1e-12.
DEFAULT_TOLERANCE: Final = Tolerance(abs=1e-9, rel=1e-9)
KLINE_VALUE_COLUMNS: Final = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
CM_KLINE_VALUE_COLUMNS: Final = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "base_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_base_volume",
)
_MISSING_KINDS: Final = ("missing_left", "missing_right")


def klines_from_agg_trades(
    agg_trades: pl.DataFrame, *, interval: str = "1m", contract_size: float | None = None
) -> pl.DataFrame:
    """Rebuild klines from aggregate trades.

    Args:
        agg_trades: Silver aggTrades, any symbols. Binance's invalid placeholders
            (`first_trade_id = -1`) are left out. Trades are ordered by `agg_trade_id`, the
            exchange's sequence, since many share a millisecond.
        interval: The bar length, `1m` by default (any fixed interval).
        contract_size: For COIN-M (quantity in contracts of `contract_size` USD), emit
            `base_volume` / `taker_buy_base_volume` (sum of qty · size / price) instead of
            the quote columns.

    Returns:
        Silver-shaped klines (`symbol`, `interval`, `open_time`, OHLC, `volume`,
        `close_time` = open + interval − 1 ms, quote or base volumes, `trades` = Σ(last −
        first + 1), taker buy volumes = sums over rows where the buyer was the taker).
        Only bars with at least one trade exist: an empty minute is never invented.
    """
    step = interval_us(interval)
    t = epoch_us("transact_time")
    taker_buy = ~pl.col("is_buyer_maker")
    if contract_size is None:
        notional = pl.col("price") * pl.col("quantity")
        names = ("quote_volume", "taker_buy_quote_volume")
    else:
        notional = pl.col("quantity") * contract_size / pl.col("price")
        names = ("base_volume", "taker_buy_base_volume")
    bars = (
        agg_trades.filter(pl.col("first_trade_id") != -1)
        .sort("symbol", "agg_trade_id")
        .with_columns(bar=t - t % step, notional=notional)
        .group_by("symbol", "bar", maintain_order=True)
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("quantity").sum(),
            quote=pl.col("notional").sum(),
            trades=(pl.col("last_trade_id") - pl.col("first_trade_id") + 1).sum(),
            taker_buy_volume=pl.col("quantity").filter(taker_buy).sum(),
            taker_quote=pl.col("notional").filter(taker_buy).sum(),
        )
    )
    return bars.select(
        "symbol",
        pl.lit(interval).alias("interval"),
        from_epoch_us(pl.col("bar")).alias("open_time"),
        "open",
        "high",
        "low",
        "close",
        "volume",
        from_epoch_us(pl.col("bar") + step - US_PER_MS).alias("close_time"),
        pl.col("quote").alias(names[0]),
        pl.col("trades").cast(pl.Int64),
        "taker_buy_volume",
        pl.col("taker_quote").alias(names[1]),
    ).sort("symbol", "open_time")


def _as_float(column: str, dtype: pl.DataType) -> pl.Expr:
    """Return a comparable Float64 view of a column (µs for timestamps)."""
    if dtype.is_temporal():
        return epoch_us(column).cast(pl.Float64)
    if dtype.is_numeric() or dtype == pl.Boolean:
        return pl.col(column).cast(pl.Float64)
    raise ConfigurationError(f"column {column!r} of type {dtype} cannot be compared as a number")


def _differs(tolerance: Tolerance) -> pl.Expr:
    """Return whether `_l` and `_r` disagree beyond a tolerance (null vs value disagrees)."""
    left, right = pl.col("_l"), pl.col("_r")
    bound = tolerance.abs + tolerance.rel * pl.max_horizontal(left.abs(), right.abs())
    one_null = left.is_null() != right.is_null()
    return one_null | ((left - right).abs() > bound).fill_null(False)


def compare_frames(
    left: pl.DataFrame,
    right: pl.DataFrame,
    *,
    key: Sequence[str],
    columns: Sequence[str] | None = None,
    tolerances: Mapping[str, Tolerance] | None = None,
    default_tolerance: Tolerance = DEFAULT_TOLERANCE,
    left_source: str = "left",
    right_source: str = "right",
) -> pl.DataFrame:
    """Compare two frames row by row on a key.

    Args:
        left: One version of the rows. Keys should be unique (`check_invariants` reports
            duplicates); duplicated keys are compared pairwise.
        right: The other version.
        key: Columns identifying a row in both frames.
        columns: Value columns to compare (numeric, boolean or temporal); by default every
            column both frames share except the key and lineage (`_`-prefixed) columns.
        tolerances: Per-column tolerance; others use `default_tolerance`.
        default_tolerance: Tolerance for columns not in `tolerances`.
        left_source: Label written into `left_source` (e.g. `archive`, `daily`).
        right_source: Label written into `right_source` (e.g. `rest`, `monthly`).

    Returns:
        Mismatch rows (module docstring), sorted by key then column; empty when the frames
        agree within tolerance on every shared key and neither has extra rows.
    """
    key = list(key)
    if columns is None:
        shared = [c for c in left.columns if c in right.columns]
        columns = [c for c in shared if c not in key and not c.startswith("_")]
    tolerances = tolerances or {}
    lhs = left.select(*key, *(_as_float(c, left.schema[c]).alias(f"{c}_l") for c in columns))
    rhs = right.select(*key, *(_as_float(c, right.schema[c]).alias(f"{c}_r") for c in columns))
    joined = lhs.with_columns(_in_l=pl.lit(True)).join(
        rhs.with_columns(_in_r=pl.lit(True)), on=key, how="full", coalesce=True, nulls_equal=True
    )
    in_l, in_r = pl.col("_in_l").fill_null(False), pl.col("_in_r").fill_null(False)
    both = joined.filter(in_l & in_r)
    found = [
        both.select(*key, pl.col(f"{c}_l").alias("_l"), pl.col(f"{c}_r").alias("_r"))
        .filter(_differs(tolerances.get(c, default_tolerance)))
        .select(*key, pl.lit(c).alias("column"), pl.lit("value_differs").alias("kind"), "_l", "_r")
        for c in columns
    ]
    for kind, side in zip(_MISSING_KINDS, (in_r & ~in_l, in_l & ~in_r), strict=True):
        present = pl.lit(1.0)
        values = (pl.lit(None, dtype=pl.Float64), present)
        if kind == "missing_right":
            values = (present, pl.lit(None, dtype=pl.Float64))
        found.append(
            joined.filter(side).select(
                *key,
                pl.lit(None, dtype=pl.Utf8).alias("column"),
                pl.lit(kind).alias("kind"),
                values[0].alias("_l"),
                values[1].alias("_r"),
            )
        )
    out = pl.concat(found, how="vertical_relaxed")
    return out.select(
        *key,
        "column",
        "kind",
        pl.col("_l").alias("left_value"),
        pl.col("_r").alias("right_value"),
        pl.lit(left_source).alias("left_source"),
        pl.lit(right_source).alias("right_source"),
    ).sort(*key, "column", nulls_last=True)


def reconcile_klines_with_agg_trades(
    klines: pl.DataFrame,
    agg_trades: pl.DataFrame,
    *,
    tolerances: Mapping[str, Tolerance] | None = None,
    contract_size: float | None = None,
    klines_source: str = "archive_klines",
    trades_source: str = "agg_trades",
) -> pl.DataFrame:
    """Rebuild klines from aggTrades and compare them with the published klines.

    Args:
        klines: Silver klines of one interval (the published bars; the left side).
        agg_trades: Silver aggTrades of the same symbols (the right side).
        tolerances: Per-column tolerances (default 1e-9 absolute and relative).
        contract_size: COIN-M contract size, see `klines_from_agg_trades`.
        klines_source: Label of the left side.
        trades_source: Label of the right side.

    Returns:
        `compare_frames` mismatch rows keyed by (symbol, interval, open_time). Only UTC days
        that hold aggTrades are compared, and a published bar with zero trades that has no
        rebuilt counterpart is expected (no trades → no aggTrades), so it is not reported.
    """
    interval = klines.get_column("interval").unique().to_list()
    if len(interval) != 1:
        raise ConfigurationError(f"expected klines of one interval, got {sorted(interval)}")
    rebuilt = klines_from_agg_trades(
        agg_trades, interval=str(interval[0]), contract_size=contract_size
    )
    days = agg_trades.select(pl.col("transact_time").dt.date().unique()).to_series()
    published = klines.filter(pl.col("open_time").dt.date().is_in(days.implode()))
    value_columns = KLINE_VALUE_COLUMNS if contract_size is None else CM_KLINE_VALUE_COLUMNS
    columns = [c for c in value_columns if c in published.columns]
    found = compare_frames(
        published,
        rebuilt,
        key=KEY_COLUMNS["klines"],
        columns=columns,
        tolerances=tolerances,
        left_source=klines_source,
        right_source=trades_source,
    )
    idle = published.filter(pl.col("trades") == 0).select(KEY_COLUMNS["klines"])
    expected_missing = found.join(idle, on=list(KEY_COLUMNS["klines"]), how="semi").filter(
        pl.col("kind") == "missing_right"
    )
    return found.join(expected_missing, on=found.columns, how="anti", nulls_equal=True)


def compare_daily_monthly(
    daily: pl.DataFrame,
    monthly: pl.DataFrame,
    *,
    key: Sequence[str],
    tolerances: Mapping[str, Tolerance] | None = None,
) -> pl.DataFrame:
    """Compare rows loaded from daily files with the same rows from the monthly file.

    Args:
        daily: Rows from the month's daily files (left side, source `daily`).
        monthly: Rows from the monthly file (right side, source `monthly`); a truncated
            monthly file shows up as `missing_right` rows.
        key: The table's primary key, e.g. `KEY_COLUMNS["klines"]`.
        tolerances: Per-column tolerances.

    Returns:
        `compare_frames` mismatch rows.
    """
    return compare_frames(
        daily, monthly, key=key, tolerances=tolerances, left_source="daily", right_source="monthly"
    )


def compare_archive_rest(
    archive: pl.DataFrame,
    rest: pl.DataFrame,
    *,
    key: Sequence[str],
    tolerances: Mapping[str, Tolerance] | None = None,
) -> pl.DataFrame:
    """Compare archive rows with REST rows covering the same range.

    Args:
        archive: Rows from archive files (left side, source `archive`).
        rest: Rows fetched from the REST API for the same range (right side, source
            `rest`); restrict both to the common range before calling.
        key: The table's primary key.
        tolerances: Per-column tolerances.

    Returns:
        `compare_frames` mismatch rows.
    """
    return compare_frames(
        archive, rest, key=key, tolerances=tolerances, left_source="archive", right_source="rest"
    )
