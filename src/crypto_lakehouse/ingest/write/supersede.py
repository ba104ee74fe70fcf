"""Provisional → final: compare provisional rows with the archive rows that replace them.

Call `report_batch_supersessions` (or `report_supersessions` with the parsed rows) right before
an archive commit. It reads the provisional rows of the span the archive file replaces and,
only when there are some, compares them on the primary key with the archive rows: rows
missing on either side and every differing value go to `silver._supersessions`, with one
`superseded_rows` line per symbol counting what was replaced. Re-running for the same archive
key replaces that key's report, so the report is idempotent.

Kinds: `value_changed` (both sides have a value), `value_added` (provisional null, e.g. REST
metrics without ratios), `value_removed`, `missing_in_archive`, `missing_in_provisional`
(archive rows inside the provisional rows' time range that the provisional side lacked).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from crypto_lakehouse.datasets import TIMESTAMP, get_dataset
from crypto_lakehouse.ingest.parse.file import period_bounds
from crypto_lakehouse.ingest.results import SUPERSESSION_KINDS, SupersessionSummary
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.ingest.write.provisional import SILVER, Span, TableSpec, read_span, spans_of
from crypto_lakehouse.ingest.write.supersede_diff import (
    SCHEMA,
    SUMMARY_KIND,
    differences,
    empty_report,
    joined_on_key,
    summary_rows,
)
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.partitions import scan

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from deltalake import DeltaTable

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.parse.file import ParsedFile
    from crypto_lakehouse.ingest.write.ticks import DirectWrite
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)

TABLE = "_supersessions"


def compare_supersessions(
    lake: LakeRoot,
    dataset: Dataset,
    archive_frame: pl.DataFrame,
    archive_key: str,
    *,
    period: tuple[datetime, datetime] | None = None,
    recorded_at: datetime | None = None,
) -> pl.DataFrame:
    """Return the supersession report of one archive file without writing it.

    Args:
        lake: The lake holding the provisional rows.
        dataset: The archive file's dataset.
        archive_frame: The file's parsed silver rows (any symbols and intervals).
        archive_key: The archive key, e.g. `data/spot/daily/klines/BTCUSDT/1m/...zip`.
        period: The half-open span the commit replaces; default: each symbol's
            `[min, max]` time in `archive_frame`, as `ingest/write/staged.py` replaces it.
        recorded_at: The report time (default: now).

    Returns:
        Report rows in `SCHEMA`; empty when the span holds no provisional rows.
    """
    spec = TableSpec.of(dataset)
    archive = archive_frame.with_columns(pl.col(pl.Categorical).cast(pl.String))
    if archive.is_empty():
        return empty_report()
    spans = spans_of(spec, archive)
    if period is not None:
        spans = [Span(s.symbol, s.interval, period[0], period[1]) for s in spans]
    provisional = read_span(lake, spec, spans, provisional=True)
    if provisional.is_empty():
        return empty_report()
    joined = joined_on_key(spec, provisional, archive)
    report = pl.concat(
        [differences(spec, joined), summary_rows(spec, joined)], how="diagonal_relaxed"
    )
    return report.with_columns(
        pl.lit(spec.table).alias("table"),
        pl.lit(archive_key).alias("archive_key"),
        pl.lit(recorded_at or datetime.now(UTC), dtype=TIMESTAMP).alias("recorded_at"),
    ).select([pl.col(name).cast(dtype) for name, dtype in SCHEMA.items()])


def record_supersessions(lake: LakeRoot, report: pl.DataFrame) -> int | None:
    """Replace the stored report of each archive key in `report` in one commit.

    Returns:
        The new version of `silver._supersessions`, or None for an empty report (nothing is
        written, so a re-run after the archive commit keeps the first report).
    """
    if report.is_empty():
        return None
    pairs = report.select("table", "archive_key").unique().sort("table", "archive_key")
    predicate = " OR ".join(
        f'("table" = {tables.sql_literal(t)} AND "archive_key" = {tables.sql_literal(k)})'
        for t, k in pairs.iter_rows()
    )
    arrow = report.select(list(SCHEMA)).to_arrow()
    return tables.replace_where(lake, SILVER, TABLE, lambda: arrow, predicate)


def summarise(table: str, report: pl.DataFrame) -> SupersessionSummary:
    """Return the counts of a report (one run's rows or a stored selection)."""
    mine = report.filter(pl.col("table") == table)
    lines = mine.filter(pl.col("kind") == SUMMARY_KIND)
    superseded = int(lines["provisional_value"].cast(pl.Int64).sum()) if lines.height else 0
    values = mine.filter(pl.col("kind").str.starts_with("value_"))
    differing = values.select("archive_key", "symbol", "key").n_unique() if values.height else 0
    counts = tuple(
        (kind, mine.filter(pl.col("kind") == kind).height) for kind in SUPERSESSION_KINDS
    )
    return SupersessionSummary(table, superseded, differing, tuple(c for c in counts if c[1]))


def report_supersessions(
    lake: LakeRoot,
    dataset: Dataset,
    archive_frame: pl.DataFrame,
    archive_key: str,
    *,
    period: tuple[datetime, datetime] | None = None,
) -> SupersessionSummary:
    """Compare the provisional rows an archive file is about to replace and store the report.

    Call it with the file's parsed rows right before the archive commit; see
    `compare_supersessions` for the arguments.

    Returns:
        The counts of this file's report (all zero when no provisional row was in the span).
    """
    report = compare_supersessions(lake, dataset, archive_frame, archive_key, period=period)
    record_supersessions(lake, report)
    summary = summarise(dataset.table, report)
    if report.height:
        log.info("supersession_recorded", table=dataset.table, archive_key=archive_key,
                 superseded=summary.superseded_rows, differences=summary.differences)  # fmt: skip
    return summary


def file_span(parsed: ParsedFile) -> tuple[datetime, datetime] | None:
    """Return the span an archive file's commit replaces: whole days for tick tables."""
    task = parsed.task
    if get_dataset(task.market, task.data_type).tick:
        return period_bounds(task.period, task.stamp)
    if parsed.min_time is None or parsed.max_time is None:
        return None
    return parsed.min_time, parsed.max_time + timedelta(microseconds=1)


def report_file_supersessions(
    lake: LakeRoot, parsed: ParsedFile, write: DirectWrite | None = None
) -> SupersessionSummary | None:
    """Report supersessions of one parsed archive file; cheap when nothing is provisional.

    Args:
        lake: The lake.
        parsed: The parsed file (its staged Arrow IPC rows are read when needed).
        write: For tick tables, the worker-written Parquet files not yet committed.

    Returns:
        The file's counts, or None when the span holds no provisional rows (the archive rows
        are then never read).
    """
    task = parsed.task
    dataset = get_dataset(task.market, task.data_type)
    span = file_span(parsed)
    if not parsed.rows or span is None:
        return None
    spec = TableSpec.of(dataset)
    interval = task.interval if dataset.has_interval else None
    probe = read_span(lake, spec, [Span(task.symbol, interval, *span)], provisional=True,
                      columns=[spec.time_column])  # fmt: skip
    if probe.is_empty():
        return None
    frame = _archive_rows(lake, dataset, parsed, write)
    return report_supersessions(lake, dataset, frame, task.key, period=span)


def report_batch_supersessions(
    lake: LakeRoot,
    batch: Sequence[tuple[ParsedFile, DirectWrite | None]],
    *,
    table: DeltaTable | None = None,
) -> list[SupersessionSummary]:
    """Report the supersessions of a commit batch with one probe of the table.

    Probing file by file opened the table once per file: with hundreds of small daily files
    per commit that cost more than parsing them. One scan over each (symbol, interval)'s
    union span finds the provisional rows of the whole batch; only files whose own span
    holds some are compared (`report_file_supersessions`). `table` is the silver table as the
    committer just loaded it, to spare a second load (~1 ms) on the run's last step.
    """
    spans: list[tuple[ParsedFile, DirectWrite | None, Span]] = []
    for parsed, write in batch:
        span = file_span(parsed)
        if parsed.rows and span is not None:
            task = parsed.task
            dataset = get_dataset(task.market, task.data_type)
            interval = task.interval if dataset.has_interval else None
            spans.append((parsed, write, Span(task.symbol, interval, span[0], span[1])))
    if not spans:
        return []
    first = spans[0][0].task
    spec = TableSpec.of(get_dataset(first.market, first.data_type))
    if table is None:
        table = tables.open_table(lake, SILVER, spec.table)
    if table is None or not _may_hold_provisional(table, {span.symbol for _, _, span in spans}):
        return []
    columns = ["symbol", *(["interval"] if spec.has_interval else []), spec.time_column]
    probe = read_span(lake, spec, _union_spans(s for _, _, s in spans), provisional=True,
                      columns=columns)  # fmt: skip
    if probe.is_empty():
        return []
    summaries = []
    for parsed, write, covered in spans:
        where = (pl.col("symbol") == covered.symbol) & pl.col(spec.time_column).is_between(
            covered.start, covered.end, closed="left"
        )
        if spec.has_interval:
            where = where & (pl.col("interval") == (covered.interval or ""))
        if probe.filter(where).height:
            summary = report_file_supersessions(lake, parsed, write)
            if summary is not None:
                summaries.append(summary)
    return summaries


def _may_hold_provisional(table: DeltaTable, symbols: set[str]) -> bool:
    """Tell from the table's file statistics whether a file of these symbols may hold
    provisional rows.

    Most archive batches land where no provisional row ever was (a backfill, a fresh lake):
    the files' `_provisional` maxima say so for ~1.5 ms, where reading the spans to find
    nothing cost ~6 ms of every commit. A file without that statistic may hold some.
    """
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return False
    flag, symbol = "max._provisional", "partition.symbol"
    if flag not in actions.column_names or symbol not in actions.column_names:
        return True
    ours = pc.is_in(actions[symbol], value_set=pa.array(sorted(symbols), pa.string()))
    maybe = pc.or_kleene(pc.is_null(actions[flag]), actions[flag])
    return bool(pc.any(pc.and_kleene(ours, maybe)).as_py())


def _union_spans(spans: Iterable[Span]) -> list[Span]:
    """Return one span per (symbol, interval) covering all of its spans."""
    union: dict[tuple[str, str | None], Span] = {}
    for span in spans:
        key = (span.symbol, span.interval)
        seen = union.get(key)
        union[key] = (
            span
            if seen is None
            else Span(
                span.symbol, span.interval, min(seen.start, span.start), max(seen.end, span.end)
            )
        )
    return list(union.values())


def _archive_rows(
    lake: LakeRoot, dataset: Dataset, parsed: ParsedFile, write: DirectWrite | None
) -> pl.DataFrame:
    """Read a parsed file's rows from its staged IPC file or the uncommitted Parquet files."""
    if write is None:
        frame = pl.from_arrow(staging.read_table(parsed.task))
        assert isinstance(frame, pl.DataFrame)
        return frame
    fs, base = lake.filesystem()
    schema = dataset.silver_schema()
    frames = []
    for data_file in write.files:
        table = pq.read_table(f"{base}/{SILVER}/{dataset.table}/{data_file.path}", filesystem=fs)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        extra = [
            _partition_value(value, schema[name]).alias(name)
            for name, value in data_file.partition_values.items()
        ]
        frames.append(frame.with_columns(extra).select(list(schema)))
    if not frames:
        return pl.DataFrame(schema=schema)
    # A batch of small files shares its Parquet files: keep this archive file's rows only.
    rows = pl.concat(frames, how="vertical_relaxed")
    return rows.filter(pl.col("_bronze_key").cast(pl.String) == parsed.task.key)


def _partition_value(text: str, dtype: pl.DataType) -> pl.Expr:
    """Return a Delta partition value (always text, e.g. `2026-05-08`) in its column type."""
    if dtype == pl.Date():
        return pl.lit(text).str.to_date("%Y-%m-%d")
    return pl.lit(text).cast(dtype)


def supersession_summary(
    lake: LakeRoot, table: str, *, since: datetime | None = None
) -> SupersessionSummary | None:
    """Return the counts of the supersessions of a table recorded since a time (for CLIs).

    Returns:
        None when nothing was recorded (or the report table does not exist yet).
    """
    expr = pc.field("table") == table
    if since is not None:
        moment = pa.scalar(since.astimezone(UTC), type=pa.timestamp("us", tz="UTC"))
        expr = expr & (pc.field("recorded_at") >= moment)
    frame = scan(lake, SILVER, TABLE, filter_expr=expr)
    if frame is None or frame.is_empty():
        return None
    return summarise(table, frame)
