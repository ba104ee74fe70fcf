"""Inputs of the gold build: what changed per (symbol, day), the build state, gold schemas.

Change detection: every silver row carries `_ingested_at`, and a re-loaded file rewrites its
rows with a new one. The signature of a (symbol, day) input is its row count and latest
`_ingested_at` per input table (plus the quality score for summaries); `gold._build_state`
keeps the signature each product was last built from. A product is rebuilt for exactly the
(symbol, day)s whose signature differs, appeared or disappeared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import polars as pl
import pyarrow.compute as pc

from crypto_lakehouse.quality.checks.tables import TIME_DTYPE
from crypto_lakehouse.storage import partitions

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import date, datetime

    from crypto_lakehouse.storage.partitions import Runs
    from crypto_lakehouse.storage.root import LakeRoot

SILVER: Final = "silver"
GOLD: Final = "gold"
STATE: Final = "_build_state"
STATE_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "product": pl.Utf8(),
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "signature": pl.Utf8(),
        "built_at": TIME_DTYPE,
    }
)
SIGNATURE_SCHEMA: Final = pl.Schema({"symbol": pl.Utf8(), "day": pl.Date(), "part": pl.Utf8()})
_VOLUMES: Final = {
    "volume": pl.Float64(),
    "quote_volume": pl.Float64(),
    "base_volume": pl.Float64(),
    "trades": pl.Int64(),
    "taker_buy_volume": pl.Float64(),
    "taker_buy_quote_volume": pl.Float64(),
    "taker_buy_base_volume": pl.Float64(),
    "_provisional": pl.Boolean(),
}
_PRICES: Final = {name: pl.Float64() for name in ("open", "high", "low", "close")}
_KEY: Final = {"table": pl.Utf8(), "symbol": pl.Utf8(), "day": pl.Date()}
BARS_SCHEMA: Final = pl.Schema(
    {
        **_KEY,
        "interval": pl.Utf8(),
        "offset": pl.Utf8(),
        "open_time": TIME_DTYPE,
        "close_time": TIME_DTYPE,
        **_PRICES,
        **_VOLUMES,
        "input_rows": pl.Int64(),
        "expected_rows": pl.Int64(),
        "complete": pl.Boolean(),
        "built_at": TIME_DTYPE,
    }
)
SUMMARY_SCHEMA: Final = pl.Schema(
    {
        **_KEY,
        **_PRICES,
        **_VOLUMES,
        "vwap": pl.Float64(),
        "daily_return": pl.Float64(),
        "realized_volatility": pl.Float64(),
        "taker_buy_ratio": pl.Float64(),
        "input_rows": pl.Int64(),
        "expected_rows": pl.Int64(),
        "complete": pl.Boolean(),
        "funding_paid": pl.Float64(),
        "funding_events": pl.Int64(),
        "quality_score": pl.Float64(),
        "built_at": TIME_DTYPE,
    }
)
FUNDING_RETURNS_SCHEMA: Final = pl.Schema(
    {
        **_KEY,
        "daily_return": pl.Float64(),
        "funding_paid": pl.Float64(),
        "funding_adjusted_return": pl.Float64(),
        "built_at": TIME_DTYPE,
    }
)
BASIS_SCHEMA: Final = pl.Schema(
    {
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "perp_symbol": pl.Utf8(),
        "spot_symbol": pl.Utf8(),
        "open_time": TIME_DTYPE,
        "perp_close": pl.Float64(),
        "spot_close": pl.Float64(),
        "basis": pl.Float64(),
        "built_at": TIME_DTYPE,
    }
)
OPEN_INTEREST_SCHEMA: Final = pl.Schema(
    {
        **_KEY,
        "open_time": TIME_DTYPE,
        "close": pl.Float64(),
        "volume": pl.Float64(),
        "complete": pl.Boolean(),
        "metrics_time": TIME_DTYPE,
        "sum_open_interest": pl.Float64(),
        "sum_open_interest_value": pl.Float64(),
        "count_toptrader_long_short_ratio": pl.Float64(),
        "sum_toptrader_long_short_ratio": pl.Float64(),
        "count_long_short_ratio": pl.Float64(),
        "sum_taker_long_short_vol_ratio": pl.Float64(),
        "built_at": TIME_DTYPE,
    }
)


def conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Return `frame` with exactly the schema's columns (missing ones null), in order."""
    return frame.select(
        [
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


def input_parts(
    lake: LakeRoot,
    table: str,
    time_column: str,
    *,
    symbols: Sequence[str] | None,
    start: date | None,
    end: date | None,
    interval: str | None = None,
    label: str,
) -> pl.DataFrame:
    """Return one signature part per (symbol, day) of a silver table: rows and last ingest.

    Returns:
        `SIGNATURE_SCHEMA` rows, `part` like `klines=1440@2026-01-01T00:00:00.000000`;
        empty when the table does not exist.
    """
    where = pc.field("interval") == interval if interval is not None else None
    filter_expr = partitions.range_filter(
        time_column, symbols=symbols, start=start, end=end, where=where
    )
    frame = partitions.scan(
        lake,
        SILVER,
        table,
        filter_expr=filter_expr,
        columns=["symbol", time_column, "_ingested_at"],
    )
    if frame is None or frame.is_empty():
        return SIGNATURE_SCHEMA.to_frame()
    stats = frame.group_by("symbol", day=pl.col(time_column).dt.date()).agg(
        rows=pl.len(), last=pl.col("_ingested_at").max()
    )
    part = pl.format(
        "{}={}@{}",
        pl.lit(label),
        pl.col("rows"),
        pl.col("last").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"),
    )
    return stats.select("symbol", "day", part.alias("part")).cast(SIGNATURE_SCHEMA)


def score_parts(lake: LakeRoot, table: str, base: pl.DataFrame) -> pl.DataFrame:
    """Return signature parts of the quality scores of the (symbol, day)s in `base`."""
    days = base.select("symbol", "day").unique()
    frame = partitions.scan(
        lake,
        GOLD,
        "quality",
        filter_expr=pc.field("table") == table,
        columns=["symbol", "day", "score"],
    )
    if frame is None or frame.is_empty() or days.is_empty():
        return SIGNATURE_SCHEMA.to_frame()
    part = pl.format("score={}", pl.col("score"))
    return frame.join(days, on=["symbol", "day"]).select("symbol", "day", part.alias("part"))


def signatures(base: pl.DataFrame, *extra: pl.DataFrame) -> pl.DataFrame:
    """Combine signature parts into one `signature` per (symbol, day) of `base`.

    Days with parts only in `extra` (e.g. funding without klines) are not built.
    """
    keys = base.select("symbol", "day").unique()
    parts = pl.concat([base, *extra]).join(keys, on=["symbol", "day"])
    return parts.group_by("symbol", "day").agg(signature=pl.col("part").sort().str.join("|"))


def read_state(lake: LakeRoot, table: str) -> pl.DataFrame:
    """Return the build state rows of one source table."""
    frame = partitions.scan(lake, GOLD, STATE, filter_expr=pc.field("table") == table)
    if frame is None:
        return STATE_SCHEMA.to_frame()
    return frame.select(STATE_SCHEMA.names()).cast(STATE_SCHEMA)


def changed_days(current: pl.DataFrame, state: pl.DataFrame, product: str) -> pl.DataFrame:
    """Return (symbol, day, signature) whose signature differs from the last build's.

    Rows that were built but whose input vanished come back with a null signature.
    """
    built = state.filter(pl.col("product") == product).select(
        "symbol", "day", pl.col("signature").alias("_built")
    )
    joined = current.join(built, on=["symbol", "day"], how="full", coalesce=True)
    return joined.filter(
        pl.col("signature").is_null()
        | pl.col("_built").is_null()
        | (pl.col("signature") != pl.col("_built"))
    ).select("symbol", "day", "signature")


def to_runs(days: pl.DataFrame) -> Runs:
    """Return (symbol, day) rows as runs of days per symbol."""
    grouped: dict[str, set[date]] = {}
    for symbol, day in days.select("symbol", "day").iter_rows():
        grouped.setdefault(symbol, set()).add(day)
    return partitions.symbol_runs(grouped)


def write_state(
    lake: LakeRoot, table: str, changed: dict[str, pl.DataFrame], built_at: datetime
) -> int | None:
    """Record the signatures just built, replacing the changed rows of each product."""
    clauses, frames = [], []
    for product, days in changed.items():
        runs = to_runs(days)
        if not runs:
            continue
        clauses.append(
            f'("product" = {partitions.literal(product)} AND {partitions.runs_predicate(runs)})'
        )
        frames.append(
            days.filter(pl.col("signature").is_not_null()).with_columns(
                table=pl.lit(table), product=pl.lit(product), built_at=pl.lit(built_at)
            )
        )
    if not clauses:
        return None
    rows = conform(pl.concat(frames, how="diagonal_relaxed"), STATE_SCHEMA)
    predicate = f'"table" = {partitions.literal(table)} AND (' + " OR ".join(clauses) + ")"
    return partitions.replace_slices(lake, GOLD, STATE, rows, predicate, partition_by=["table"])
