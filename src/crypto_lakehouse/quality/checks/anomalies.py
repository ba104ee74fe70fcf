"""Flag suspicious but possibly genuine kline behaviour, each finding with a severity.

- `return_outlier`: robust z-score of a bar's log return against the day's median and MAD
  (z = (r − median) / (1.4826 · MAD)); returns are only taken between consecutive bars;
- `volume_outlier`: the same robust z-score of log(1 + volume), high side only;
- `zero_volume_streak`: consecutive bars with zero volume (outage bars, ISS-#103);
- `flat_price_run`: consecutive bars with open = high = low = close = previous close.

Severity is the highest band reached: `low`, `medium` or `high` (thresholds in
`AnomalyConfig`). A day whose MAD is zero has no robust scale and yields no outliers; its
flat stretches show up as `flat_price_run` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from crypto_lakehouse.quality.checks.tables import (
    TIME_DTYPE,
    epoch_us,
    from_epoch_us,
    interval_us_expr,
)

ANOMALIES_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "interval": pl.Utf8(),
        "day": pl.Date(),
        "kind": pl.Utf8(),
        "start": TIME_DTYPE,
        "end": TIME_DTYPE,
        "value": pl.Float64(),
        "severity": pl.Utf8(),
        "detail": pl.Utf8(),
    }
)
MAD_SCALE: Final = 1.4826
SEVERITIES: Final = ("low", "medium", "high")
_SERIES: Final = ["symbol", "interval"]


@dataclass(slots=True, frozen=True)
class AnomalyConfig:
    """Thresholds: each tuple holds the (low, medium, high) band starts."""

    return_z: tuple[float, float, float] = (10.0, 25.0, 50.0)
    volume_z: tuple[float, float, float] = (10.0, 25.0, 50.0)
    zero_volume_bars: tuple[float, float, float] = (5, 30, 120)
    flat_price_bars: tuple[float, float, float] = (10, 60, 240)


def _severity(value: pl.Expr, bands: tuple[float, float, float]) -> pl.Expr:
    """Return the severity band of a value, null below the lowest band."""
    low, medium, high = bands
    return (
        pl.when(value >= high).then(pl.lit("high"))
        .when(value >= medium).then(pl.lit("medium"))
        .when(value >= low).then(pl.lit("low"))
        .otherwise(pl.lit(None, dtype=pl.Utf8))
    )  # fmt: skip


def _robust_z(value: str) -> pl.Expr:
    """Return the robust z-score of a column within its (series, day)."""
    over = [*_SERIES, "day"]
    median = pl.col(value).median().over(over)
    mad = (pl.col(value) - median).abs().median().over(over)
    return pl.when(mad > 0).then((pl.col(value) - median) / (MAD_SCALE * mad))


def _prepared(klines: pl.DataFrame) -> pl.DataFrame:
    """Return bars sorted per series with step, consecutiveness and log values."""
    t = epoch_us("open_time")
    step = interval_us_expr(klines)
    prev_t = t.shift(1).over(_SERIES)
    prev_close = pl.col("close").shift(1).over(_SERIES)
    return (
        klines.sort(*_SERIES, "open_time")
        .with_columns(t=t, step=step, day=pl.col("open_time").dt.date())
        .with_columns(
            consecutive=(pl.col("t") - prev_t == pl.col("step")).fill_null(False),
            prev_close=prev_close,
        )
        .with_columns(
            log_return=pl.when(pl.col("consecutive") & (pl.col("prev_close") > 0)).then(
                (pl.col("close") / pl.col("prev_close")).log()
            ),
            log_volume=pl.col("volume").log1p(),
        )
    )


def _outliers(
    bars: pl.DataFrame, *, kind: str, value: str, bands: tuple[float, float, float], two_sided: bool
) -> pl.DataFrame:
    """Return one anomaly per bar whose robust z-score reaches the lowest band."""
    z = _robust_z(value)
    size = z.abs() if two_sided else z
    found = bars.with_columns(z=z, size=size).with_columns(
        severity=_severity(pl.col("size"), bands)
    )
    return found.filter(pl.col("severity").is_not_null()).select(
        *_SERIES,
        "day",
        pl.lit(kind).alias("kind"),
        pl.col("open_time").alias("start"),
        from_epoch_us(pl.col("t") + pl.col("step")).alias("end"),
        pl.col("z").alias("value"),
        "severity",
        pl.format(
            "robust z = {} ({} = {})", pl.col("z").round(2), pl.lit(value), pl.col(value)
        ).alias("detail"),
    )


def _runs(
    bars: pl.DataFrame, *, kind: str, flag: pl.Expr, bands: tuple[float, float, float]
) -> pl.DataFrame:
    """Return one anomaly per run of consecutive flagged bars reaching the lowest band."""
    flagged = bars.with_columns(flag=flag.fill_null(False))
    continues = pl.col("flag") & pl.col("flag").shift(1).over(_SERIES) & pl.col("consecutive")
    runs = flagged.with_columns(run=(~continues.fill_null(False)).cum_sum().over(_SERIES))
    grouped = (
        runs.filter(pl.col("flag"))
        .group_by(*_SERIES, "run")
        .agg(
            day=pl.col("day").first(),
            start=pl.col("open_time").min(),
            end_us=pl.col("t").max() + pl.col("step").last(),
            length=pl.len(),
            price=pl.col("close").first(),
        )
        .with_columns(severity=_severity(pl.col("length"), bands))
    )
    return grouped.filter(pl.col("severity").is_not_null()).select(
        *_SERIES,
        "day",
        pl.lit(kind).alias("kind"),
        "start",
        from_epoch_us(pl.col("end_us")).alias("end"),
        pl.col("length").cast(pl.Float64).alias("value"),
        "severity",
        pl.format("{} consecutive bars at close {}", pl.col("length"), pl.col("price")).alias(
            "detail"
        ),
    )


def detect_anomalies(
    klines: pl.DataFrame, *, table: str = "klines", config: AnomalyConfig | None = None
) -> pl.DataFrame:
    """Return return, volume, zero-volume and flat-price anomalies of a klines frame.

    Args:
        klines: Silver klines with a `volume` column, any symbols, intervals and days.
        table: The silver table name, written into the `table` column.
        config: Band thresholds; `AnomalyConfig()` by default.

    Returns:
        `ANOMALIES_SCHEMA` rows; `value` is the z-score for outliers and the bar count for
        runs, `[start, end)` the time span, `day` the UTC day where it starts.
    """
    config = config or AnomalyConfig()
    if klines.is_empty():
        return ANOMALIES_SCHEMA.to_frame()
    bars = _prepared(klines)
    flat = (
        (pl.col("open") == pl.col("close"))
        & (pl.col("high") == pl.col("close"))
        & (pl.col("low") == pl.col("close"))
        & (pl.col("close") == pl.col("prev_close"))
        & pl.col("consecutive")
    )
    found = [
        _outliers(
            bars, kind="return_outlier", value="log_return", bands=config.return_z, two_sided=True
        ),
        _outliers(
            bars, kind="volume_outlier", value="log_volume", bands=config.volume_z, two_sided=False
        ),
        _runs(
            bars,
            kind="zero_volume_streak",
            flag=pl.col("volume") == 0,
            bands=config.zero_volume_bars,
        ),
        _runs(bars, kind="flat_price_run", flag=flat, bands=config.flat_price_bars),
    ]
    out = pl.concat(found).with_columns(table=pl.lit(table))
    return (
        out.select(ANOMALIES_SCHEMA.names())
        .cast(ANOMALIES_SCHEMA)
        .sort("symbol", "interval", "start", "kind")
    )
