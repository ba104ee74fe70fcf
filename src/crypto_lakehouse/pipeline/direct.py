"""Tick tables: workers write Parquet data files straight into the table; one commit adds them.

Tick tables are partitioned by (symbol, date) and an archive file covers whole days, so a
file's rows replace whole partitions. That lets the heavy work — inflate, parse, encode
Parquet — run entirely in workers (threads, spawned processes or Dask workers, writing to
local disk or S3) while the committer only writes a small Delta transaction: the
partitions of the file's period are overwritten by the new data files atomically. Files
written by a worker that dies or fails are never committed, so readers never see them.

Inside a worker, two encoder threads (days alternate between them) encode chunks N-1 and N
while chunk N+1 is parsed (pyarrow and polars both release the GIL), so one large file keeps
both cores busy.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.transaction import AddAction, RemoveAction

from crypto_lakehouse.ops.heap import release_free_memory
from crypto_lakehouse.pipeline.parse import FileParser, ParsedFile, ParseTask, period_bounds
from crypto_lakehouse.pipeline.silver import SILVER, silver_arrow_schema
from crypto_lakehouse.storage import tables
from crypto_lakehouse.storage.lake import Lake

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow.fs as pafs

    from crypto_lakehouse.datasets import Dataset

#: Column types given min/max statistics. Readers (delta-rs, the pyarrow dataset of a Delta
#: table) prune files on them: a column without them must not look like "all null".
_STAT_KINDS = (pl.Int64, pl.Float64, pl.Datetime, pl.Date, pl.Boolean, pl.String, pl.Categorical)


@functools.lru_cache(maxsize=64)
def _summary_exprs(schema: tuple[tuple[str, pl.DataType], ...]) -> tuple[list[str], list[pl.Expr]]:
    """Return the statistics columns of a schema and the expressions that summarise a chunk.

    Cached per schema: building some fifty expressions in Python for every file written cost
    more interpreter time (under the GIL) than evaluating them. A categorical's bounds are
    taken over its distinct values: casting every row to text first cost 3 of a 50-file
    batch's ~4.7 ms here.
    """
    stat_columns = [name for name, kind in schema if isinstance(kind, _STAT_KINDS)]
    texts = [
        pl.col(name).unique().cast(pl.String) if isinstance(kind, pl.Categorical) else pl.col(name)
        for name, kind in schema
        if isinstance(kind, _STAT_KINDS)
    ]
    exprs = [
        *(e.min().alias(f"min:{c}") for c, e in zip(stat_columns, texts, strict=True)),
        *(e.max().alias(f"max:{c}") for c, e in zip(stat_columns, texts, strict=True)),
        *(pl.col(name).null_count().alias(f"nul:{name}") for name, _ in schema),
    ]
    return stat_columns, exprs


@dataclass(frozen=True, slots=True)
class DataFile:
    """A Parquet file a worker wrote into the table folder, not yet committed."""

    path: str
    size: int
    partition_values: dict[str, str]
    stats: str
    modification_time: int


@dataclass(frozen=True, slots=True)
class DirectWrite:
    """What a worker produced for one archive file."""

    parsed: ParsedFile
    files: tuple[DataFile, ...]


class _PartitionFile:
    """One open Parquet file of one day partition, with its running column statistics."""

    def __init__(self, fs: pafs.FileSystem, base: str, relative: str, schema: pa.Schema) -> None:
        self.relative = relative
        self.path = f"{base}/{relative}"
        fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        self.sink = fs.open_output_stream(self.path)
        # Dictionary pages only where values repeat (text, flags): trying them on ids and
        # prices and falling back costs more than the encoding itself. Snappy is the Delta
        # default and twice as fast to write as zstd here.
        repeated = [
            f.name
            for f in schema
            if pa.types.is_dictionary(f.type)
            or pa.types.is_boolean(f.type)
            or pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)
        ]
        # Integers and instants (ids, times) delta-encoded: they mostly rise by small steps, so
        # this writes a third of the bytes in three quarters of the time of plain + snappy.
        deltas = {
            f.name: "DELTA_BINARY_PACKED"
            for f in schema
            if f.name not in repeated
            and (pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type))
        }
        self.writer = pq.ParquetWriter(
            self.sink,
            schema,
            compression="snappy",
            use_dictionary=repeated,
            column_encoding=deltas,
            store_schema=False,
        )
        self.rows = 0
        self.low: dict[str, object] = {}
        self.high: dict[str, object] = {}
        self.nulls: dict[str, int] = {}

    def observe(self, frame: pl.DataFrame) -> None:
        """Fold a chunk's min, max and null counts into the file statistics."""
        self.rows += frame.height
        stat_columns, summary_exprs = _summary_exprs(tuple(frame.schema.items()))
        summary = frame.select(summary_exprs).row(0, named=True)
        for name in stat_columns:
            low, high = summary[f"min:{name}"], summary[f"max:{name}"]
            if low is not None:
                old = self.low.get(name)
                self.low[name] = low if old is None or low < old else old  # type: ignore[operator]
                old = self.high.get(name)
                self.high[name] = high if old is None or high > old else old  # type: ignore[operator]
        for name in frame.columns:
            self.nulls[name] = self.nulls.get(name, 0) + int(summary[f"nul:{name}"])

    def close(self, fs: pafs.FileSystem, partition: dict[str, str]) -> DataFile:
        """Finish the file and describe it for the commit."""
        self.writer.close()
        self.sink.close()
        info = fs.get_file_info(self.path)
        stats = {
            "numRecords": self.rows,
            "minValues": {k: _stat(v, up=False) for k, v in self.low.items()},
            "maxValues": {k: _stat(v, up=True) for k, v in self.high.items()},
            "nullCount": self.nulls,
        }
        return DataFile(
            self.relative, int(info.size), partition, json.dumps(stats), int(time.time() * 1000)
        )


def _stat(value: object, *, up: bool) -> object:
    """Render a statistic as Delta does; instants at ms precision, maxima rounded up."""
    if isinstance(value, datetime):
        if up and value.microsecond % 1000:
            value += timedelta(microseconds=1000 - value.microsecond % 1000)
        return (
            value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{value.microsecond // 1000:03d}Z"
        )
    if isinstance(value, date):
        return value.isoformat()
    return value


#: Encoder threads per file: days alternate between them, so one file's Parquet encoding
#: (the slowest stage) runs on two cores; each day is encoded by one thread, in order.
ENCODERS = 2
#: Chunks parsed but not yet encoded: two, so both encoders have work when a chunk holds
#: one day only (a monthly tick file's chunk mostly does).
CHUNKS_IN_FLIGHT = 2


def write_tick_files(
    task: ParseTask, table_uri: str, storage_options: dict[str, str]
) -> DirectWrite:
    """Parse one archive file and write its rows as Parquet files, one per day partition.

    Runs in a worker. Nothing is visible to readers until `commit_tick_files`. Parsing chunk
    N+1 overlaps encoding chunks N-1 and N, on `ENCODERS` threads (polars and pyarrow both
    release the GIL): with one encoder a single large file kept 1.6 of 2 cores busy.

    Raises:
        FormatError, TruncatedBodyError: the file is bad; files written so far are deleted.
    """
    fs, base = Lake(table_uri, storage_options).filesystem()
    parser = FileParser(task, strict_period=True)
    partition_cols = list(parser.dataset.partition_by)
    open_files: list[dict[date, _PartitionFile]] = [{} for _ in range(ENCODERS)]
    done: list[list[DataFile]] = [[] for _ in range(ENCODERS)]
    in_flight: deque[list[Future[None]]] = deque()
    encoders = [
        ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"encode-{index}")
        for index in range(ENCODERS)
    ]
    try:
        for frame in parser.frames():
            if len(in_flight) >= CHUNKS_IN_FLIGHT:
                _wait_all(in_flight.popleft())
            by_encoder: list[dict[date, pl.DataFrame]] = [{} for _ in range(ENCODERS)]
            for day, part in split_days(frame).items():
                by_encoder[day.toordinal() % ENCODERS][day] = part
            in_flight.append([
                encoder.submit(_encode, fs, base, task, parts, open_files[index], done[index],
                               partition_cols)
                for index, (encoder, parts) in enumerate(zip(encoders, by_encoder, strict=True))
                if parts
            ])  # fmt: skip
        while in_flight:
            _wait_all(in_flight.popleft())
        for files, finished in zip(open_files, done, strict=True):
            for day, handle in files.items():
                finished.append(handle.close(fs, {"symbol": task.symbol, "date": day.isoformat()}))
    except BaseException:
        for futures in in_flight:
            for future in futures:
                future.exception()  # let every encoder stop before its files are removed
        for files in open_files:
            for handle in files.values():
                _discard(fs, handle)
        for finished in done:
            for data_file in finished:
                fs.delete_file(f"{base}/{data_file.path}")
        raise
    finally:
        for encoder in encoders:
            encoder.shutdown(wait=True)
        release_free_memory()  # the next file may run on other threads, with other arenas
    written = sorted((f for finished in done for f in finished),
                     key=lambda f: (f.partition_values["date"], f.path))  # fmt: skip
    return DirectWrite(parser.result(), tuple(written))


def _wait_all(futures: list[Future[None]]) -> None:
    """Wait for every future, then raise the first failure among them."""
    errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error


def split_days(frame: pl.DataFrame) -> dict[date, pl.DataFrame]:
    """Split a chunk by day; time-ordered chunks are sliced without copying."""
    days = frame["date"]
    if days.is_sorted():
        runs = days.rle()
        out: dict[date, pl.DataFrame] = {}
        offset = 0
        for length, day in runs.struct.unnest().iter_rows():
            out[day] = frame.slice(offset, length)
            offset += length
        return out
    parts = frame.partition_by("date", as_dict=True, maintain_order=True)
    return {key[0]: part for key, part in parts.items()}  # type: ignore[misc]


def _encode(
    fs: pafs.FileSystem,
    base: str,
    task: ParseTask,
    parts: dict[date, pl.DataFrame],
    open_files: dict[date, _PartitionFile],
    done: list[DataFile],
    partition_cols: list[str],
) -> None:
    """Append each day's slice of a chunk to that day's Parquet file (opened on first use).

    Days before the chunk's first day are finished in a time-ordered file: their files are
    closed here, beside the next chunk's parse, not all at the end. (Should an unordered file
    bring a closed day back, that day gets a second file; the commit adds both.)
    """
    first = min(parts, default=None)
    for day in [d for d in open_files if first is not None and d < first]:
        done.append(open_files.pop(day).close(fs, {"symbol": task.symbol, "date": day.isoformat()}))
    for day, part in parts.items():
        data = part.drop(partition_cols)
        table = data.to_arrow()
        handle = open_files.get(day)
        if handle is None:
            relative = (
                f"symbol={task.symbol}/date={day.isoformat()}/part-{uuid.uuid4().hex}.zstd.parquet"
            )
            handle = _PartitionFile(fs, base, relative, table.schema)
            open_files[day] = handle
        handle.writer.write_table(table)
        handle.observe(data)


def split_partitions(
    frame: pl.DataFrame, partition_by: Sequence[str]
) -> list[tuple[dict[str, str], pl.DataFrame]]:
    """Split a frame into (partition values, rows) by its partition columns."""
    columns = list(partition_by)
    parts = frame.partition_by(columns, as_dict=True, maintain_order=True)
    return [
        ({name: str(value) for name, value in zip(columns, key, strict=True)}, part)
        for key, part in parts.items()
    ]


def write_partitions(
    parts: Sequence[tuple[dict[str, str], pl.DataFrame]],
    partition_by: Sequence[str],
    table_uri: str,
    storage_options: dict[str, str],
    *,
    row_group_rows: int | None = None,
) -> tuple[DataFile, ...]:
    """Write each partition's rows as one Parquet file, uncommitted (runs in workers).

    For batches of small bar files: the encoding then happens in the worker, beside the
    downloads, and the committer only adds the files. On any error the files written so far
    are deleted.
    """
    fs, base = Lake(table_uri, storage_options).filesystem()
    columns = list(partition_by)
    done: list[DataFile] = []
    try:
        for values, part in parts:
            folder = "/".join(f"{name}={values[name]}" for name in columns)
            data = part.drop(columns)
            table = data.to_arrow()
            handle = _PartitionFile(fs, base, f"{folder}/part-{uuid.uuid4().hex}.parquet",
                                    table.schema)  # fmt: skip
            try:
                handle.writer.write_table(table, row_group_size=row_group_rows)
                handle.observe(data)
            except BaseException:
                _discard(fs, handle)
                raise
            done.append(handle.close(fs, values))
    except BaseException:
        for data_file in done:
            fs.delete_file(f"{base}/{data_file.path}")
        raise
    return tuple(done)


def _discard(fs: pafs.FileSystem, handle: _PartitionFile) -> None:
    """Close and delete a partially written file."""
    try:
        handle.writer.close()
        handle.sink.close()
    finally:
        fs.delete_file(handle.path)


def period_days(task: ParseTask) -> list[str]:
    """Return every day partition an archive file covers (its whole day or month)."""
    start, end = period_bounds(task.period, task.stamp)
    days = []
    day = start.date()
    while day < end.date():
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


@tables.commit_retry
def _commit_symbol(
    delta: DeltaTable, dataset: Dataset, symbol: str, days: list[str], files: list[DataFile]
) -> None:
    """Overwrite one symbol's day partitions with the new files in one transaction."""
    delta.update_incremental()
    actions: list[AddAction | RemoveAction] = [
        AddAction(f.path, f.size, f.partition_values, f.modification_time, True, f.stats)
        for f in files
    ]
    delta.create_write_transaction(
        actions,
        mode="overwrite",
        schema=delta.schema(),
        partition_by=list(dataset.partition_by),
        partition_filters=[("symbol", "=", symbol), ("date", "in", days)],
    )


def commit_tick_files(lake: Lake, dataset: Dataset, writes: Sequence[DirectWrite]) -> int:
    """Commit the files of a batch of archive files: one transaction per symbol.

    Returns:
        The table version after the last commit.
    """
    tables.ensure_table(
        lake, SILVER, dataset.table, silver_arrow_schema(dataset), list(dataset.partition_by)
    )
    uri = lake.table_uri(SILVER, dataset.table)
    delta = DeltaTable(uri, storage_options=lake.storage_options)
    by_symbol: dict[str, tuple[set[str], list[DataFile]]] = {}
    for write in writes:
        days, files = by_symbol.setdefault(write.parsed.task.symbol, (set(), []))
        days.update(period_days(write.parsed.task))
        files.extend(write.files)
    for symbol, (days, files) in sorted(by_symbol.items()):
        _commit_symbol(delta, dataset, symbol, sorted(days), files)
    delta.update_incremental()
    return delta.version()
