"""Parse one verified archive zip into a staged Arrow IPC file of silver rows (runs in workers).

Streaming: the CSV is inflated and parsed in chunks of `chunk_bytes`, and each chunk is written
to the staged file at once, so memory follows the chunk size, not the file size. Nothing here
touches Delta: workers may be separate processes or Dask workers; the committer is one place.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import polars as pl
import pyarrow as pa

from crypto_lakehouse.datasets import TIMESTAMP, Dataset, get_dataset
from crypto_lakehouse.ingest.parse.rows import archive_lineage, check_period, period_bounds
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.sources.binance.archive.formats import TimeUnit, parse_chunk, split_header
from crypto_lakehouse.sources.binance.archive.zipstream import (
    iter_csv_chunks,
    iter_growing_csv_chunks,
    prefetch,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from crypto_lakehouse.sources.binance.archive.growing import GrowingSource
    from crypto_lakehouse.storage.root import LakeRoot


__all__ = ["FileParser", "ParseTask", "ParsedFile", "parse_to_stage", "period_bounds"]


@dataclass(frozen=True, slots=True)
class ParseTask:
    """Everything a worker needs to turn one zip into silver rows; picklable."""

    market: str
    data_type: str
    key: str
    symbol: str
    interval: str | None
    period: str
    stamp: str
    revision: int
    zip_path: str
    staged_path: str
    chunk_bytes: int
    ingested_at: datetime
    #: Set when the zip is still being downloaded: read it as it grows (`growing`).
    growing: GrowingSource | None = None
    #: Set for workers on other hosts (`--dask-address` with an S3 lake): read the zip from
    #: its bronze object in the lake, as (lake, path in it), instead of `zip_path`, a path on
    #: the driver's disk.
    bronze: tuple[LakeRoot, str] | None = None
    #: Set for the same workers: `staged_path` is then a path in this lake (`staging`), which
    #: the driver reads back, instead of a path on the driver's disk.
    stage_lake: LakeRoot | None = None
    #: Hand freed memory back to the system after the file (`heap.release_free_memory`): a
    #: process-wide call, made only when the caller opted into process tuning (the CLI).
    release_memory: bool = False


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """What a worker produced: the staged rows and what it learned about the file."""

    task: ParseTask
    rows: int
    duplicates: int
    min_time: datetime | None
    max_time: datetime | None
    header: str | None
    time_unit: str | None
    csv_bytes: int


def _finish(
    frame: pl.DataFrame, dataset: Dataset, task: ParseTask, *, enum_lineage: bool = False
) -> pl.DataFrame:
    """Add symbol, interval, day partition and lineage (`rows.archive_lineage`) in silver order.

    Partition columns stay plain strings: delta-rs cannot partition on dictionaries.
    """
    extra: list[pl.Expr] = [pl.lit(task.symbol).alias("symbol")]
    if dataset.has_interval:
        extra.append(pl.lit(task.interval).alias("interval"))
    frame = frame.with_columns(extra)
    lineage = archive_lineage(task, enum=enum_lineage)
    if dataset.tick:
        lineage.append(pl.col(dataset.time_column).dt.date().alias("date"))
    frame = frame.with_columns(lineage)
    return frame.select(list(dataset.silver_schema()))


class FileParser:
    """Turn one zip into silver frames chunk by chunk, collecting what the file revealed.

    Iterate `frames()` once; `result()` then describes the file. Memory follows
    `task.chunk_bytes`, not the file size.
    """

    def __init__(
        self, task: ParseTask, *, strict_period: bool = False, enum_lineage: bool = False
    ) -> None:
        self.task = task
        self.dataset = get_dataset(task.market, task.data_type)
        self._strict = strict_period
        #: Lineage text as enums (`_finish`): for frames that go straight to Parquet.
        self._enum_lineage = enum_lineage
        self._header: str | None = None
        self._unit: TimeUnit | None = None
        self._rows = self._duplicates = self._csv_bytes = 0
        self._chunks = 0
        self._ordered = True
        self._low: datetime | None = None
        self._high: datetime | None = None

    def frames(self) -> Iterator[pl.DataFrame]:
        """Yield validated, de-duplicated silver frames in file order.

        Raises:
            FormatError: a bad cell, a short line, an epoch unit switch or an out-of-period row.
            TruncatedBodyError: the zip's member is corrupt.
        """
        with contextlib.ExitStack() as stack:
            if self.task.growing is not None:
                source = iter_growing_csv_chunks(self.task.growing, self.task.chunk_bytes)
            elif self.task.bronze is not None:
                lake, path = self.task.bronze
                raw = stack.enter_context(lake.open_input(path))
                source = iter_csv_chunks(cast("BinaryIO", raw), self.task.chunk_bytes)
            else:
                source = iter_csv_chunks(Path(self.task.zip_path), self.task.chunk_bytes)
            chunks = prefetch(source)
            try:
                yield from self._parse(chunks)
            finally:
                chunks.close()  # stops the inflate thread now, not whenever it is collected

    def _parse(self, chunks: Iterator[bytes]) -> Iterator[pl.DataFrame]:
        """Parse chunks into silver frames, tracking lines, units, keys and time span."""
        line = 1
        last_key: object = None
        for index, raw in enumerate(chunks):
            self._csv_bytes += len(raw)
            chunk = raw
            if index == 0:
                self._header, chunk = split_header(raw)
                line += 1 if self._header is not None else 0
            if not chunk or chunk.isspace():
                continue
            frame, self._unit = parse_chunk(
                chunk, self.dataset, time_unit=self._unit, first_line=line
            )
            if self.dataset.derived_time_from_date_hour:
                frame = frame.with_columns(
                    (pl.col("date").cast(TIMESTAMP) + pl.duration(hours=pl.col("hour"))).alias(
                        "time"
                    )
                )
            check_period(frame, self.dataset, self.task, line, strict=self._strict)
            line += frame.height
            unique, next_key = _deduplicate(frame, self.dataset, last_key)
            self._ordered = self._ordered and next_key is not None and unique is frame
            last_key = next_key
            self._chunks += 1
            self._duplicates += frame.height - unique.height
            silver = _finish(unique, self.dataset, self.task, enum_lineage=self._enum_lineage)
            times = silver[self.dataset.time_column]
            self._low = _min(self._low, times.min())  # type: ignore[arg-type]
            self._high = _max(self._high, times.max())  # type: ignore[arg-type]
            self._rows += silver.height
            yield silver

    @property
    def needs_file_dedupe(self) -> bool:
        """Tell whether keys may repeat across chunks (several chunks, keys not rising)."""
        return self._chunks > 1 and not self._ordered

    def result(self) -> ParsedFile:
        """Return what the file revealed once `frames()` is exhausted."""
        return ParsedFile(
            self.task,
            self._rows,
            self._duplicates,
            self._low,
            self._high,
            self._header,
            self._unit,
            self._csv_bytes,
        )


def parse_to_stage(task: ParseTask) -> ParsedFile:
    """Parse one zip into its staged file (Arrow IPC, see `staging`); return what was learned.

    Raises:
        FormatError: a bad cell, a short line, an epoch unit switch or an out-of-period row;
            the staged file is removed so nothing half-written survives.
        TruncatedBodyError: the zip's member is corrupt.
        StorageError: the staged file could not be written (a lake stage).
    """
    parser = FileParser(task)
    sink: pa.NativeFile | None = None
    writer: pa.ipc.RecordBatchFileWriter | None = None
    try:
        for silver in parser.frames():
            table = silver.to_arrow()
            if writer is None:
                sink = staging.open_sink(task)
                writer = pa.ipc.new_file(sink, table.schema)
            writer.write_table(table)
        if writer is not None and sink is not None:
            writer.close()
            sink.close()
    except BaseException:
        _discard(task, writer, sink)
        raise
    result = parser.result()
    if writer is not None and parser.needs_file_dedupe:
        result = _dedupe_staged(result, parser.dataset)
    return result


def _discard(
    task: ParseTask, writer: pa.ipc.RecordBatchFileWriter | None, sink: pa.NativeFile | None
) -> None:
    """Close and delete a half-written staged file (nothing half-written may survive)."""
    if sink is None:
        return
    with contextlib.suppress(Exception):
        if writer is not None:
            writer.close()
        sink.close()
    with contextlib.suppress(OSError):
        staging.remove(task)


def _dedupe_staged(result: ParsedFile, dataset: Dataset) -> ParsedFile:
    """De-duplicate a staged file over all its chunks (small tables only reach this)."""
    frame = pl.from_arrow(staging.read_table(result.task))
    assert isinstance(frame, pl.DataFrame)
    unique = frame.unique(subset=list(dataset.primary_key), keep="first", maintain_order=True)
    if unique.height == frame.height:
        return result
    staging.replace(result.task, unique.to_arrow())
    dropped = frame.height - unique.height
    return replace(result, rows=unique.height, duplicates=result.duplicates + dropped)


def _deduplicate(
    frame: pl.DataFrame, dataset: Dataset, last_key: object
) -> tuple[pl.DataFrame, object]:
    """Drop repeated primary keys; skip the hashing when a single-column key strictly rises.

    Archive files are almost always ordered by their key (trade ids, open times), so the O(n)
    order check saves a hash pass over millions of rows. Returns the frame and its last key.
    """
    key = _data_key(dataset)
    if frame.is_empty():
        return frame, last_key
    if len(key) == 1:
        column = frame[key[0]]
        rising = bool((column.to_physical().diff().drop_nulls() > 0).all())
        if rising and (last_key is None or column[0] > last_key):
            return frame, column[-1]
    unique = frame.unique(subset=key, keep="first", maintain_order=True)
    return unique, unique[key[0]][-1] if len(key) == 1 else None


def _data_key(dataset: Dataset) -> list[str]:
    """Return the primary-key columns present before symbol/interval are added."""
    return [c for c in dataset.primary_key if c not in ("symbol", "interval")]


def _min(current: datetime | None, value: datetime | None) -> datetime | None:
    """Return the smaller of two optional instants."""
    if value is None:
        return current
    return value if current is None or value < current else current


def _max(current: datetime | None, value: datetime | None) -> datetime | None:
    """Return the larger of two optional instants."""
    if value is None:
        return current
    return value if current is None or value > current else current
