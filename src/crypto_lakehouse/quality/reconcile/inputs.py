"""Inputs and outputs of the lake reconciliations: bronze parsing, file pairing, row shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import polars as pl

from crypto_lakehouse.quality.checks.facts import stamp_days
from crypto_lakehouse.quality.checks.tables import TIME_DTYPE
from crypto_lakehouse.quality.refresh import store as gold
from crypto_lakehouse.quality.refresh.inputs import interval_of
from crypto_lakehouse.sources.binance.archive.formats import parse_chunk, split_header
from crypto_lakehouse.sources.binance.archive.zipstream import iter_csv_chunks

if TYPE_CHECKING:
    from datetime import date
    from pathlib import Path

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.storage.root import LakeRoot

RECONCILIATION_SCHEMA: Final = pl.Schema(
    {
        "check": pl.Utf8(),
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "key": pl.Utf8(),
        "column": pl.Utf8(),
        "kind": pl.Utf8(),
        "left_value": pl.Float64(),
        "right_value": pl.Float64(),
        "left_source": pl.Utf8(),
        "right_source": pl.Utf8(),
        "checked_at": TIME_DTYPE,
    }
)
RUNS_SCHEMA: Final = pl.Schema(
    {
        "check": pl.Utf8(),
        "table": pl.Utf8(),
        "symbol": pl.Utf8(),
        "day": pl.Date(),
        "compared_rows": pl.Int64(),
        "mismatches": pl.Int64(),
        "checked_at": TIME_DTYPE,
    }
)
PARSE_CHUNK_BYTES: Final = 64 << 20
# COIN-M contract sizes in USD: 100 for BTC contracts, 10 for all others
# (https://www.binance.com/en/futures/trading-rules/quarterly).
BTC_CONTRACT_USD: Final = 100.0
OTHER_CONTRACT_USD: Final = 10.0
_FILE_STATUSES: Final = ("loaded", "verified")


def contract_size(market: str, symbol: str) -> float | None:
    """Return the COIN-M contract size in USD of a symbol, or None for other markets."""
    if market != "cm":
        return None
    return BTC_CONTRACT_USD if symbol.startswith("BTC") else OTHER_CONTRACT_USD


def month_files(current: pl.DataFrame, symbol: str, start: date, end: date) -> list[pl.DataFrame]:
    """Return, per (interval, month), the monthly file and the daily files inside [start, end].

    Args:
        current: Current manifest rows of one dataset.
        symbol: The symbol.
        start: First day (inclusive).
        end: Last day (inclusive).

    Returns:
        One frame of manifest rows per (interval, month) that has a kept monthly file and at
        least one kept daily file in range: the pairs `daily_vs_monthly` can compare.
    """
    kept = current.filter(
        (pl.col("symbol") == symbol)
        & pl.col("status").is_in(_FILE_STATUSES)
        & (pl.col("bronze_path") != "")
    ).with_columns(
        _month=pl.col("stamp").str.slice(0, 7),
        _group=pl.col("key").str.split("/").list.get(-2),
    )
    groups: list[pl.DataFrame] = []
    for (_, month), files in kept.group_by("_group", "_month", maintain_order=True):
        monthly = files.filter(pl.col("period") == "monthly")
        daily = files.filter(
            (pl.col("period") == "daily")
            & pl.col("stamp").str.to_date(strict=False).is_between(start, end)
        )
        month_days = stamp_days("monthly", str(month))
        if monthly.height and daily.height and month_days[0] <= end and month_days[-1] >= start:
            groups.append(pl.concat([monthly.head(1), daily]).drop("_month", "_group"))
    return groups


def parse_bronze(
    lake: LakeRoot, dataset: Dataset, entry: dict[str, object], workdir: Path
) -> pl.DataFrame:
    """Parse a kept bronze archive file into silver-named columns (without lineage).

    Args:
        lake: The lake holding the object.
        dataset: Its dataset.
        entry: Its manifest row (`key`, `symbol`, `bronze_path`).
        workdir: Where a copy is put when the lake is on S3.

    Returns:
        The typed rows with `symbol` (and `interval` for klines) in front.
    """
    key, path = str(entry["key"]), str(entry["bronze_path"])
    local = lake.get_file(path, workdir / key)
    frames: list[pl.DataFrame] = []
    unit = None
    line = 1
    for index, raw in enumerate(iter_csv_chunks(local, PARSE_CHUNK_BYTES)):
        chunk = raw
        if index == 0:
            header, chunk = split_header(raw)
            line += 1 if header is not None else 0
        if not chunk.strip():
            continue
        frame, unit = parse_chunk(chunk, dataset, time_unit=unit, first_line=line)
        line += frame.height
        frames.append(frame)
    extra = [pl.lit(str(entry["symbol"])).alias("symbol")]
    if dataset.has_interval:
        extra.append(pl.lit(interval_of(key)).alias("interval"))
    if not frames:
        return pl.DataFrame(
            schema={n: t for n, t in dataset.silver_schema().items() if not n.startswith("_")}
        )
    return pl.concat(frames).select(*extra, pl.all())


def _render_key(frame: pl.DataFrame, columns: list[str]) -> pl.Expr:
    """Return `name=value` pairs of key columns (times as ISO UTC) as one string."""
    parts: list[pl.Expr] = []
    for i, column in enumerate(columns):
        value = pl.col(column)
        if frame.schema[column].is_temporal():
            value = value.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        parts += [pl.lit(f"{' ' if i else ''}{column}="), value.cast(pl.Utf8)]
    return pl.concat_str(parts) if parts else pl.lit("")


def shape_mismatches(
    found: pl.DataFrame, check: str, dataset: Dataset, symbol: str
) -> pl.DataFrame:
    """Return `compare_frames` rows as `RECONCILIATION_SCHEMA` rows of one check."""
    if found.is_empty():
        return RECONCILIATION_SCHEMA.to_frame()
    key = [c for c in dataset.primary_key if c != "symbol"]
    out = found.select(
        pl.lit(check).alias("check"),
        pl.lit(dataset.table).alias("table"),
        pl.lit(symbol).alias("symbol"),
        pl.col(dataset.time_column).dt.date().alias("day"),
        _render_key(found, key).alias("key"),
        "column",
        "kind",
        "left_value",
        "right_value",
        "left_source",
        "right_source",
        pl.lit(gold.now()).alias("checked_at"),
    )
    return out.cast(RECONCILIATION_SCHEMA)


def summarise(
    rows: pl.DataFrame, found: pl.DataFrame, check: str, dataset: Dataset
) -> pl.DataFrame:
    """Return compared rows (`rows`: symbol, `_t`) and mismatches per (symbol, day)."""
    if rows.is_empty():
        return RUNS_SCHEMA.to_frame()
    per_day = rows.group_by("symbol", day=pl.col("_t").dt.date()).agg(
        compared_rows=pl.len().cast(pl.Int64)
    )
    mismatched = pl.DataFrame(schema={"symbol": pl.Utf8, "day": pl.Date, "mismatches": pl.Int64})
    if not found.is_empty():
        day = pl.col(dataset.time_column).dt.date()
        mismatched = found.group_by("symbol", day=day).agg(mismatches=pl.len().cast(pl.Int64))
    out = per_day.join(mismatched, on=["symbol", "day"], how="full", coalesce=True)
    return out.select(
        pl.lit(check).alias("check"),
        pl.lit(dataset.table).alias("table"),
        "symbol",
        "day",
        pl.col("compared_rows").fill_null(0),
        pl.col("mismatches").fill_null(0),
        pl.lit(gold.now()).alias("checked_at"),
    ).cast(RUNS_SCHEMA)
