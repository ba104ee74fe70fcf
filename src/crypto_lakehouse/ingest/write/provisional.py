"""Provisional silver rows (REST and WebSocket): build, guard against archive rows, replace.

Provisional rows never touch archive rows. Every write is one Delta commit whose predicate
matches only rows with `_provisional = true` of the written symbols (and interval) and time
spans, and rows whose primary key an archive (non-provisional) row already holds are dropped
before writing. Spans are half-open `[start, end)` on the table's time column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from crypto_lakehouse.ingest.parse.rows import provisional_lineage
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.partitions import literal, scan

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)

SILVER = "silver"
LINEAGE = ("_source", "_bronze_key", "_revision", "_ingested_at", "_provisional")
_ARROW_TS = pa.timestamp("us", tz="UTC")
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What a provisional writer needs of a silver table: name, schema, key, time, partitions."""

    table: str
    schema: dict[str, pl.DataType]
    primary_key: tuple[str, ...]
    time_column: str
    partition_by: tuple[str, ...]

    @classmethod
    def of(cls, dataset: Dataset) -> TableSpec:
        """Return the spec of a registry dataset (partitions taken from the dataset)."""
        return cls(
            dataset.table,
            dataset.silver_schema(),
            dataset.primary_key,
            dataset.time_column,
            dataset.partition_by,
        )

    @property
    def has_interval(self) -> bool:
        """Tell whether rows carry a kline interval (part of the span's identity)."""
        return "interval" in self.schema

    @property
    def data_columns(self) -> tuple[str, ...]:
        """Return the value columns: neither key, lineage nor derived partition columns."""
        skip = {*self.primary_key, *LINEAGE, *self.partition_by}
        return tuple(name for name in self.schema if name not in skip)


@dataclass(frozen=True, slots=True)
class Span:
    """The half-open time span `[start, end)` of one symbol (and interval) in one table."""

    symbol: str
    interval: str | None
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class ProvisionalWrite:
    """The outcome of one provisional write."""

    table: str
    rows: int
    dropped_archived: int
    version: int


def _derived(name: str, dtype: pl.DataType, time_column: str) -> pl.Expr:
    """Return a partition column derived from the row time (`date`, `month`), else null."""
    if name == "date":
        if dtype == pl.Date():
            return pl.col(time_column).dt.date().alias(name)
        return pl.col(time_column).dt.strftime("%Y-%m-%d").alias(name)
    if name == "month":
        return pl.col(time_column).dt.strftime("%Y-%m").alias(name)
    return pl.lit(None, dtype=dtype).alias(name)


def to_silver(
    spec: TableSpec,
    frame: pl.DataFrame,
    *,
    source: str,
    bronze_key: str,
    ingested_at: datetime,
) -> pl.DataFrame:
    """Return source rows in the table's column order with provisional lineage added.

    Args:
        spec: The target table.
        frame: Rows in the silver layout without lineage (a source's `.frame`).
        source: `rest` or `ws`.
        bronze_key: The bronze object the rows came from.
        ingested_at: When the rows were fetched or received.

    Returns:
        A frame whose schema equals `spec.schema`; columns the source lacks are null, and
        partition columns such as `date` are derived from the time column.
    """
    lineage = {
        column.meta.output_name(): column
        for column in provisional_lineage(source, bronze_key, ingested_at)
    }
    columns: list[pl.Expr] = []
    for name, dtype in spec.schema.items():
        if name in lineage:
            columns.append(lineage[name].alias(name))
        elif name in frame.columns:
            columns.append(pl.col(name).cast(dtype))
        else:
            columns.append(_derived(name, dtype, spec.time_column).cast(dtype))
    return frame.select(columns)


def spans_of(spec: TableSpec, frame: pl.DataFrame) -> list[Span]:
    """Return each symbol's (and interval's) `[min time, max time]` span as a half-open span."""
    keys = ["symbol", "interval"] if spec.has_interval else ["symbol"]
    bounds = frame.group_by(keys).agg(
        pl.col(spec.time_column).min().alias("lo"), pl.col(spec.time_column).max().alias("hi")
    )
    return [
        Span(row["symbol"], row.get("interval"), row["lo"], row["hi"] + _ONE_US)
        for row in bounds.sort(keys).iter_rows(named=True)
    ]


def span_predicate(spec: TableSpec, spans: Sequence[Span]) -> str:
    """Return the Delta predicate of the provisional rows in the spans.

    Example: `"_provisional" = true AND (("symbol" = 'BTCUSDT' AND "interval" = '1m' AND
    "open_time" >= '2020-01-03T00:00:00.000000Z' AND "open_time" < '2020-01-04T...'))`.
    """
    column = f'"{spec.time_column}"'
    parts = []
    for span in spans:
        clause = [f'"symbol" = {literal(span.symbol)}']
        if spec.has_interval:
            clause.append(f'"interval" = {literal(span.interval or "")}')
        clause.append(f"{column} >= {literal(span.start)} AND {column} < {literal(span.end)}")
        parts.append("(" + " AND ".join(clause) + ")")
    return '"_provisional" = true AND (' + (" OR ".join(parts) or "false") + ")"


def span_filter(spec: TableSpec, spans: Sequence[Span], *, provisional: bool) -> pc.Expression:
    """Return the pyarrow scan filter twin of `span_predicate` (for either kind of row)."""
    time = pc.field(spec.time_column)
    combined: pc.Expression | None = None
    for span in spans:
        part = pc.field("symbol") == span.symbol
        if spec.has_interval:
            part = part & (pc.field("interval") == (span.interval or ""))
        lo = pa.scalar(span.start.astimezone(UTC), type=_ARROW_TS)
        hi = pa.scalar(span.end.astimezone(UTC), type=_ARROW_TS)
        part = part & (time >= lo) & (time < hi)
        combined = part if combined is None else combined | part
    if combined is None:
        return pc.scalar(False)
    return (pc.field("_provisional") == pa.scalar(provisional)) & combined


def read_span(
    lake: LakeRoot,
    spec: TableSpec,
    spans: Sequence[Span],
    *,
    provisional: bool,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Read the provisional (or archive) rows of the spans; empty when the table is absent."""
    if not spans:
        return pl.DataFrame(schema={c: spec.schema[c] for c in columns or spec.schema})
    found = scan(
        lake,
        SILVER,
        spec.table,
        filter_expr=span_filter(spec, spans, provisional=provisional),
        columns=columns,
    )
    if found is None:
        return pl.DataFrame(schema={c: spec.schema[c] for c in columns or spec.schema})
    return found


def drop_archived(lake: LakeRoot, spec: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """Return `frame` without the rows whose primary key an archive row already holds."""
    if frame.is_empty():
        return frame
    archived = read_span(
        lake, spec, spans_of(spec, frame), provisional=False, columns=spec.primary_key
    )
    if archived.is_empty():
        return frame
    keys = list(spec.primary_key)
    return frame.join(archived.select(keys).unique(), on=keys, how="anti", nulls_equal=True)


def write_provisional(
    lake: LakeRoot,
    spec: TableSpec,
    frame: pl.DataFrame,
    *,
    spans: Sequence[Span] | None = None,
    merge: bool = False,
) -> ProvisionalWrite | None:
    """Replace the provisional rows of the spans with `frame` in one Delta commit.

    Args:
        lake: The lake.
        spec: The target table.
        frame: Provisional rows built by `to_silver`; each must lie inside one of the spans.
        spans: What the rows replace; default: each symbol's `[min, max]` time of `frame`.
        merge: Keep existing provisional rows of the spans whose key `frame` lacks (for
            WebSocket micro-batches, which may hold only part of a span).

    Returns:
        What was written, or None when no row was left to write (nothing is committed then,
        so a source that answered nothing never deletes earlier provisional rows).
    """
    keys = list(spec.primary_key)
    fresh = frame.unique(subset=keys, keep="last", maintain_order=True)
    kept = drop_archived(lake, spec, fresh)
    dropped = fresh.height - kept.height
    if kept.is_empty():
        if dropped:
            log.info("provisional_all_archived", table=spec.table, rows=dropped)
        return None
    chosen = list(spans) if spans is not None else spans_of(spec, kept)
    data = kept
    if merge:
        existing = read_span(lake, spec, chosen, provisional=True)
        if not existing.is_empty():
            others = existing.select(list(spec.schema)).join(
                kept.select(keys), on=keys, how="anti", nulls_equal=True
            )
            data = pl.concat([others, kept], how="vertical_relaxed")
    data = data.select(list(spec.schema))
    arrow = data.to_arrow()
    version = tables.replace_where(
        lake,
        SILVER,
        spec.table,
        lambda: arrow,
        span_predicate(spec, chosen),
        partition_by=list(spec.partition_by),
    )
    log.info("provisional_written", table=spec.table, rows=kept.height,
             dropped_archived=dropped, version=version)  # fmt: skip
    return ProvisionalWrite(spec.table, kept.height, dropped, version)
