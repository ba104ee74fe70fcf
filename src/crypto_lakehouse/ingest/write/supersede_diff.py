"""Provisional against archive rows, on the primary key: the rows of a supersession report.

Pure frame work for `supersede`: join both sides on the key, then one row per difference
(`value_changed`, `value_added`, `value_removed`, `missing_in_archive`,
`missing_in_provisional`) and one `superseded_rows` line per symbol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from crypto_lakehouse.datasets import TIMESTAMP

if TYPE_CHECKING:
    from crypto_lakehouse.ingest.write.provisional import TableSpec

SUMMARY_KIND = "superseded_rows"
SCHEMA: dict[str, pl.DataType] = {
    "table": pl.String(),
    "symbol": pl.String(),
    "key": pl.String(),
    "time": TIMESTAMP,
    "column": pl.String(),
    "provisional_value": pl.String(),
    "archive_value": pl.String(),
    "kind": pl.String(),
    "archive_key": pl.String(),
    "provisional_source": pl.String(),
    "recorded_at": TIMESTAMP,
}
_ARCHIVE = "__archive"


def _text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Render a column as text: instants as ISO 8601 UTC, everything else as polars prints."""
    if isinstance(dtype, pl.Datetime):
        return pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
    return pl.col(name).cast(pl.String)


def _key_text(spec: TableSpec) -> pl.Expr:
    """Return the primary key without the symbol as `interval=1m open_time=...` text."""
    parts: list[pl.Expr] = []
    for name in spec.primary_key:
        if name == "symbol":
            continue
        parts += [pl.lit(f"{name}="), _text(name, spec.schema[name]).fill_null("null")]
        parts.append(pl.lit(" "))
    return pl.concat_str(parts[:-1]) if parts else pl.lit("")


def _row_text(spec: TableSpec, suffix: str) -> pl.Expr:
    """Return a row's value columns as `open=1.0, close=2.0` text (for rows on one side)."""
    parts: list[pl.Expr] = []
    for name in spec.data_columns:
        rendered = _text(name + suffix, spec.schema[name]).fill_null("null")
        parts += [pl.lit(f"{name}="), rendered, pl.lit(", ")]
    return pl.concat_str(parts[:-1]) if parts else pl.lit("")


def empty_report() -> pl.DataFrame:
    """Return an empty report."""
    return pl.DataFrame(schema=SCHEMA)


def joined_on_key(
    spec: TableSpec, provisional: pl.DataFrame, archive: pl.DataFrame
) -> pl.DataFrame:
    """Full-join both sides on the key, archive rows limited to the provisional time range."""
    groups = ["symbol", "interval"] if spec.has_interval else ["symbol"]
    time = spec.time_column
    bounds = provisional.group_by(groups).agg(
        pl.col(time).min().alias("__lo"), pl.col(time).max().alias("__hi")
    )
    archive = (
        archive.join(bounds, on=groups)
        .filter(pl.col(time).is_between(pl.col("__lo"), pl.col("__hi")))
        .drop("__lo", "__hi")
    )
    keys = list(spec.primary_key)
    extra = [time] if time not in keys and time not in spec.data_columns else []
    values = [*extra, *spec.data_columns]
    left = provisional.select(*keys, *values, "_source", pl.lit(True).alias("__p"))
    right = archive.select(*keys, *values, pl.lit(True).alias("__a"))
    right = right.rename({c: c + _ARCHIVE for c in values})
    joined = left.join(right, on=keys, how="full", coalesce=True, nulls_equal=True)
    if time not in keys:
        joined = joined.with_columns(pl.coalesce(time, time + _ARCHIVE).alias(time))
    return joined


def differences(spec: TableSpec, joined: pl.DataFrame) -> pl.DataFrame:
    """Return one report row per differing value and per row missing on one side."""
    base = [
        pl.col("symbol"),
        _key_text(spec).alias("key"),
        pl.col(spec.time_column).alias("time"),
        pl.col("_source").alias("provisional_source"),
    ]
    both = joined.filter(pl.col("__p") & pl.col("__a"))
    parts = []
    for name in spec.data_columns:
        other = name + _ARCHIVE
        kind = (
            pl.when(pl.col(name).is_null())
            .then(pl.lit("value_added"))
            .when(pl.col(other).is_null())
            .then(pl.lit("value_removed"))
            .otherwise(pl.lit("value_changed"))
        )
        parts.append(
            both.filter(~pl.col(name).eq_missing(pl.col(other))).select(
                *base,
                pl.lit(name).alias("column"),
                _text(name, spec.schema[name]).alias("provisional_value"),
                _text(other, spec.schema[name]).alias("archive_value"),
                kind.alias("kind"),
            )
        )
    only_provisional = joined.filter(pl.col("__a").is_null()).select(
        *base, pl.lit(None, dtype=pl.String).alias("column"),
        _row_text(spec, "").alias("provisional_value"),
        pl.lit(None, dtype=pl.String).alias("archive_value"),
        pl.lit("missing_in_archive").alias("kind"),
    )  # fmt: skip
    only_archive = joined.filter(pl.col("__p").is_null()).select(
        *base, pl.lit(None, dtype=pl.String).alias("column"),
        pl.lit(None, dtype=pl.String).alias("provisional_value"),
        _row_text(spec, _ARCHIVE).alias("archive_value"),
        pl.lit("missing_in_provisional").alias("kind"),
    )  # fmt: skip
    return pl.concat([*parts, only_provisional, only_archive], how="vertical_relaxed")


def summary_rows(spec: TableSpec, joined: pl.DataFrame) -> pl.DataFrame:
    """Return one `superseded_rows` line per symbol: provisional rows vs archive rows."""
    return joined.group_by("symbol").agg(
        pl.col("__p").count().cast(pl.String).alias("provisional_value"),
        pl.col("__a").count().cast(pl.String).alias("archive_value"),
    ).with_columns(
        pl.lit(None, dtype=pl.String).alias("key"),
        pl.lit(None, dtype=TIMESTAMP).alias("time"),
        pl.lit(None, dtype=pl.String).alias("column"),
        pl.lit(SUMMARY_KIND).alias("kind"),
        pl.lit(None, dtype=pl.String).alias("provisional_source"),
    )  # fmt: skip
