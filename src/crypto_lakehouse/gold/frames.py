"""Derive gold frames from silver ones: resampled bars, daily summaries, funding, basis, OI.

Pure functions over polars frames; the caller reads silver and writes gold. Nothing here
fills a gap: a bar or day built from fewer inputs than expected is still emitted, with
`complete = false` and its `input_rows` / `expected_rows`, and a bar with no input at all
is not emitted (the gaps table explains it). Inputs must have unique keys, as silver does.
"""

from __future__ import annotations

from typing import Final, Literal

import polars as pl

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.tables import (
    US_PER_MS,
    epoch_us,
    from_epoch_us,
    interval_us,
    single_interval,
    slots_per_day,
)

# Summed when present: spot/UM name the quote columns, COIN-M the base ones.
SUM_COLUMNS: Final = (
    "volume",
    "quote_volume",
    "base_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "taker_buy_base_volume",
)
METRICS_INTERVAL: Final = "5m"
_LINEAGE_FLAG: Final = "_provisional"


def _sums(frame: pl.DataFrame) -> list[pl.Expr]:
    """Return the volume sums (and the provisional flag) for the columns present."""
    exprs = [pl.col(c).sum() for c in SUM_COLUMNS if c in frame.columns]
    if _LINEAGE_FLAG in frame.columns:
        exprs.append(pl.col(_LINEAGE_FLAG).any())
    return exprs


def _ohlc() -> list[pl.Expr]:
    """Return first-open, max-high, min-low, last-close over bars sorted by time."""
    return [
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
    ]


def resample_klines(klines: pl.DataFrame, every: str, *, offset: str | None = None) -> pl.DataFrame:
    """Aggregate klines into longer bars.

    Args:
        klines: Silver klines of one interval (usually `1m`), any symbols.
        every: The bar length, e.g. `5m`, `1h`, `4h`, `1d`; a multiple of the input interval.
        offset: Shift of the bar boundaries, e.g. `30m` gives 4h bars at 00:30, 04:30...
            Bars are aligned to multiples of `every` since the Unix epoch plus `offset` (so
            `1w` bars need offset `4d` to start on Mondays).

    Returns:
        One row per (symbol, bar) with at least one input: `symbol`, `interval` (= every),
        `offset`, `open_time`, `close_time` (open + every − 1 ms), OHLC, the volume sums,
        `input_rows`, `expected_rows`, `complete` (input_rows == expected_rows) and
        `_provisional` (any input provisional) when the input has it.

    Raises:
        ConfigurationError: `every` or `offset` are not multiples of the input interval.
    """
    source = single_interval(klines)
    step, every_us = interval_us(source), interval_us(every)
    offset_us = interval_us(offset) % every_us if offset else 0
    if every_us % step or offset_us % step:
        raise ConfigurationError(
            f"cannot build {every} bars (offset {offset}) from {source} bars: not a multiple"
        )
    t = epoch_us("open_time")
    bar = (t - offset_us) // every_us * every_us + offset_us
    out = (
        klines.sort("symbol", "open_time")
        .with_columns(_bar=bar)
        .group_by("symbol", "_bar", maintain_order=True)
        .agg(*_ohlc(), *_sums(klines), input_rows=pl.col("open_time").n_unique().cast(pl.Int64))
        .with_columns(expected_rows=pl.lit(every_us // step, dtype=pl.Int64))
    )
    sums = [c for c in (*SUM_COLUMNS, _LINEAGE_FLAG) if c in out.columns]
    return out.select(
        "symbol",
        pl.lit(every).alias("interval"),
        pl.lit(offset or "0m").alias("offset"),
        from_epoch_us(pl.col("_bar")).alias("open_time"),
        from_epoch_us(pl.col("_bar") + every_us - US_PER_MS).alias("close_time"),
        "open",
        "high",
        "low",
        "close",
        *sums,
        "input_rows",
        "expected_rows",
        (pl.col("input_rows") == pl.col("expected_rows")).alias("complete"),
    ).sort("symbol", "open_time")


def _log_returns(klines: pl.DataFrame) -> pl.DataFrame:
    """Add `day` and `log_return` between consecutive bars of the same symbol and day."""
    step = interval_us(single_interval(klines))
    t = epoch_us("open_time")
    key = ["symbol", "day"]
    consecutive = t - t.shift(1).over(key) == step
    ratio = pl.col("close") / pl.col("close").shift(1).over(key)
    return (
        klines.sort("symbol", "open_time")
        .with_columns(day=pl.col("open_time").dt.date())
        .with_columns(log_return=pl.when(consecutive).then(ratio.log()))
    )


def daily_summary(
    klines: pl.DataFrame,
    *,
    funding: pl.DataFrame | None = None,
    scores: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Summarise each (symbol, UTC day) of intraday klines.

    Args:
        klines: Silver klines of one intraday interval (`1m` for the intended realised
            volatility), any symbols.
        funding: Silver funding_rate rows (`symbol`, `calc_time`, `funding_rate`); the
            rates whose `calc_time` falls on the day are summed into `funding_paid`.
        scores: Quality scores (`symbol`, `day`, `score`); when the frame holds several
            tables, the day's lowest score is used.

    Returns:
        One row per (symbol, day): `open`, `high`, `low`, `close`, the volume sums,
        `vwap` (quote_volume / volume; null for COIN-M and zero volume), `daily_return`
        (close / open − 1), `realized_volatility` (sqrt of the sum of squared log returns
        between consecutive bars within the day), `taker_buy_ratio`, `input_rows`,
        `expected_rows`, `complete`, `funding_paid` and `funding_events` (null without
        funding rows that day), `quality_score` (null without a score).
    """
    interval = single_interval(klines)
    bars = _log_returns(klines)
    volume = pl.col("volume")
    out = (
        bars.group_by("symbol", "day", maintain_order=True)
        .agg(
            *_ohlc(),
            *_sums(bars),
            realized_volatility=(pl.col("log_return") ** 2).sum().sqrt(),
            input_rows=pl.len().cast(pl.Int64),
        )
        .with_columns(
            expected_rows=pl.lit(slots_per_day(interval), dtype=pl.Int64),
            daily_return=pl.col("close") / pl.col("open") - 1,
            vwap=(
                pl.when(volume > 0).then(pl.col("quote_volume") / volume)
                if "quote_volume" in bars.columns
                else pl.lit(None, dtype=pl.Float64)
            ),
            taker_buy_ratio=pl.when(volume > 0).then(pl.col("taker_buy_volume") / volume),
        )
        .with_columns(complete=pl.col("input_rows") == pl.col("expected_rows"))
    )
    out = out.join(_funding_per_day(funding), on=["symbol", "day"], how="left")
    return out.join(_scores_per_day(scores), on=["symbol", "day"], how="left").sort("symbol", "day")


def _funding_per_day(funding: pl.DataFrame | None) -> pl.DataFrame:
    """Return funding rates summed per (symbol, UTC day of calc_time)."""
    schema = pl.Schema(
        {
            "symbol": pl.Utf8(),
            "day": pl.Date(),
            "funding_paid": pl.Float64(),
            "funding_events": pl.Int64(),
        }
    )
    if funding is None:
        return schema.to_frame()
    return (
        funding.group_by("symbol", day=pl.col("calc_time").dt.date())
        .agg(funding_paid=pl.col("funding_rate").sum(), funding_events=pl.len())
        .cast(schema)
    )


def _scores_per_day(scores: pl.DataFrame | None) -> pl.DataFrame:
    """Return the lowest quality score per (symbol, day)."""
    if scores is None:
        return pl.DataFrame(schema={"symbol": pl.Utf8, "day": pl.Date, "quality_score": pl.Float64})
    return scores.group_by("symbol", "day").agg(quality_score=pl.col("score").min())


def funding_adjusted_returns(summary: pl.DataFrame) -> pl.DataFrame:
    """Return perpetual daily returns net of the funding a long position paid.

    Args:
        summary: `daily_summary(...)` of perpetual klines built with a funding frame.

    Returns:
        `symbol`, `day`, `daily_return`, `funding_paid`, `funding_adjusted_return`
        (daily_return − funding_paid; null when the day has no funding rows, rather than
        assuming zero).
    """
    return summary.select(
        "symbol",
        "day",
        "daily_return",
        "funding_paid",
        (pl.col("daily_return") - pl.col("funding_paid")).alias("funding_adjusted_return"),
    )


def _single_symbol(frame: pl.DataFrame, side: str) -> str:
    """Return the one symbol of a frame, or raise."""
    symbols = frame.get_column("symbol").unique().to_list()
    if len(symbols) != 1:
        raise ConfigurationError(f"{side} klines must hold exactly one symbol, got {symbols}")
    return str(symbols[0])


def basis(
    perp: pl.DataFrame, spot: pl.DataFrame, *, per: Literal["minute", "day"] = "minute"
) -> pl.DataFrame:
    """Return the basis (perp_close − spot_close) / spot_close of a perpetual vs its spot.

    Args:
        perp: Klines of one perpetual symbol (e.g. UM `BTCUSDT`).
        spot: Klines of its spot market, same interval.
        per: `minute` for every bar both sides have; `day` for the last bar of each UTC day
            that both sides have (its time in `as_of`, so a truncated side is visible).

    Returns:
        `perp_symbol`, `spot_symbol`, `open_time` (minute) or `day`, `as_of`,
        `common_bars` (day), `perp_close`, `spot_close`, `basis`. Bars present on one side
        only are left out, never matched to a neighbour.
    """
    if single_interval(perp) != single_interval(spot):
        raise ConfigurationError("perp and spot klines must have the same interval")
    names = {
        "perp_symbol": _single_symbol(perp, "perp"),
        "spot_symbol": _single_symbol(spot, "spot"),
    }
    joined = (
        perp.select("open_time", pl.col("close").alias("perp_close"))
        .join(spot.select("open_time", pl.col("close").alias("spot_close")), on="open_time")
        .sort("open_time")
        .with_columns(
            *(pl.lit(value).alias(name) for name, value in names.items()),
            basis=(pl.col("perp_close") - pl.col("spot_close")) / pl.col("spot_close"),
        )
    )
    if per == "minute":
        return joined.select(*names, "open_time", "perp_close", "spot_close", "basis")
    daily = joined.group_by(day=pl.col("open_time").dt.date(), maintain_order=True).agg(
        pl.col("perp_symbol", "spot_symbol", "perp_close", "spot_close", "basis").last(),
        as_of=pl.col("open_time").last(),
        common_bars=pl.len().cast(pl.Int64),
    )
    return daily.select(
        *names, "day", "as_of", "common_bars", "perp_close", "spot_close", "basis"
    ).sort("day")


def open_interest_with_price(
    klines: pl.DataFrame,
    metrics: pl.DataFrame,
    *,
    label: Literal["start", "end"] = "start",
) -> pl.DataFrame:
    """Put open interest and the other 5-minute metrics next to 5-minute price bars.

    Args:
        klines: Klines of an interval dividing 5 minutes (usually `1m`), any symbols.
        metrics: Silver metrics rows (`symbol`, `create_time`, `sum_open_interest`, ...).
        label: `start` when `create_time` labels the start of its 5 minutes (CM, and UM
            from 2026-06-25), `end` when it labels the end (UM before 2026-06-25).

    Returns:
        One row per 5-minute bar (`resample_klines(klines, "5m")` columns) with the metric
        columns and `metrics_time` joined on (symbol, bar open); null where no metric row.
    """
    bars = resample_klines(klines, METRICS_INTERVAL)
    shift = interval_us(METRICS_INTERVAL) if label == "end" else 0
    values = [
        c for c in metrics.columns if c not in {"symbol", "create_time"} and not c.startswith("_")
    ]
    aligned = metrics.select(
        "symbol",
        from_epoch_us(epoch_us("create_time") - shift).alias("open_time"),
        pl.col("create_time").alias("metrics_time"),
        *values,
    )
    return bars.join(aligned, on=["symbol", "open_time"], how="left").sort("symbol", "open_time")
