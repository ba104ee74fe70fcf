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

import json
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lakehouse.datasets import LINEAGE_SCHEMA
from crypto_lakehouse.ingest.parse.file import FileParser, ParsedFile, ParseTask, period_bounds
from crypto_lakehouse.ingest.runtime.heap import release_free_memory
from crypto_lakehouse.ingest.write.staged import SILVER, silver_arrow_schema
from crypto_lakehouse.sources.binance.archive.formats import required_columns
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.delta import DataFile
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from collections.abc import Sequence

    import polars as pl
    import pyarrow.fs as pafs

    from crypto_lakehouse.datasets import Dataset


@dataclass(frozen=True, slots=True)
class DirectWrite:
    """What a worker produced for one archive file."""

    parsed: ParsedFile
    files: tuple[DataFile, ...]


class _PartitionFile:
    """One open Parquet file of one partition; its statistics come from its footer."""

    def __init__(
        self,
        fs: pafs.FileSystem,
        base: str,
        relative: str,
        schema: pa.Schema,
        *,
        compress_deltas: bool = True,
    ) -> None:
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
        # Snappy on those deltas pays in tick files (a real aggTrades day: 843 KB with it,
        # 923 KB without) but finds nothing in bars, whose times step by their interval (a
        # 50-day kline batch: 3.41 MB either way): `compress_deltas=False` skips it there, a
        # tenth of the file's encoding time.
        deltas = {
            f.name: "DELTA_BINARY_PACKED"
            for f in schema
            if f.name not in repeated
            and (pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type))
        }
        self.schema = schema
        self._footer: list[pq.FileMetaData] = []
        self.writer = pq.ParquetWriter(
            self.sink,
            schema,
            compression={
                f.name: "none" if f.name in deltas and not compress_deltas else "snappy"
                for f in schema
            },
            use_dictionary=repeated,
            column_encoding=deltas,
            store_schema=False,
            metadata_collector=self._footer,
        )

    def close(self, fs: pafs.FileSystem, partition: dict[str, str]) -> DataFile:
        """Finish the file and describe it for the commit."""
        self.writer.close()
        self.sink.close()
        info = fs.get_file_info(self.path)
        stats = tables.file_statistics(self._footer[0], self.schema)
        return DataFile(
            self.relative, int(info.size), partition, json.dumps(stats), int(time.time() * 1000)
        )


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
    fs, base = LakeRoot(table_uri, storage_options).filesystem()
    parser = FileParser(task, strict_period=True, enum_lineage=True)
    partition_cols = list(parser.dataset.partition_by)
    never_null = frozenset((*required_columns(parser.dataset), *LINEAGE_SCHEMA))
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
                               partition_cols, never_null)
                for index, (encoder, parts) in enumerate(zip(encoders, by_encoder, strict=True))
                if parts
            ])  # fmt: skip
        while in_flight:
            _wait_all(in_flight.popleft())
        for files, finished in zip(open_files, done, strict=True):
            finished.extend(_close_days(fs, task, files))
    except BaseException:
        _remove_unfinished(fs, base, in_flight, open_files, done)
        raise
    finally:
        for encoder in encoders:
            encoder.shutdown(wait=True)
        if task.release_memory:
            release_free_memory()  # the next file may run on other threads, other arenas
    written = sorted((f for finished in done for f in finished),
                     key=lambda f: (f.partition_values["date"], f.path))  # fmt: skip
    return DirectWrite(parser.result(), tuple(written))


def _close_days(
    fs: pafs.FileSystem, task: ParseTask, files: dict[date, _PartitionFile]
) -> list[DataFile]:
    """Finish each day's open file and describe it for the commit."""
    return [
        handle.close(fs, {"symbol": task.symbol, "date": day.isoformat()})
        for day, handle in files.items()
    ]


def _remove_unfinished(
    fs: pafs.FileSystem,
    base: str,
    in_flight: deque[list[Future[None]]],
    open_files: list[dict[date, _PartitionFile]],
    done: list[list[DataFile]],
) -> None:
    """Delete what a failed file wrote, once every encoder has stopped writing."""
    for futures in in_flight:
        for future in futures:
            future.exception()  # let every encoder stop before its files are removed
    for files in open_files:
        for handle in files.values():
            _discard(fs, handle)
    for finished in done:
        for data_file in finished:
            fs.delete_file(f"{base}/{data_file.path}")


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
    never_null: frozenset[str],
) -> None:
    """Append each day's slice of a chunk to that day's Parquet file (opened on first use).

    The columns the parser never lets be empty (`never_null`: the key, the time, lineage)
    are written required, as `_required_where_full` does for whole files.

    Days before the chunk's first day are finished in a time-ordered file: their files are
    closed here, beside the next chunk's parse, not all at the end. (Should an unordered file
    bring a closed day back, that day gets a second file; the commit adds both.)
    """
    first = min(parts, default=None)
    for day in [d for d in open_files if first is not None and d < first]:
        done.append(open_files.pop(day).close(fs, {"symbol": task.symbol, "date": day.isoformat()}))
    for day, part in parts.items():
        table = part.drop(partition_cols).to_arrow()
        handle = open_files.get(day)
        if handle is None:
            relative = (
                f"symbol={task.symbol}/date={day.isoformat()}/part-{uuid.uuid4().hex}.parquet"
            )
            handle = _PartitionFile(fs, base, relative, _required(table.schema, never_null))
            open_files[day] = handle
        handle.writer.write_table(table.cast(handle.schema))


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
    downloads, and the committer only adds the files. The partition columns, where a part
    holds them, are left out of its file (its folder holds them). On any error the files
    written so far are deleted.
    """
    fs, base = LakeRoot(table_uri, storage_options).filesystem()
    columns = list(partition_by)
    done: list[DataFile] = []
    try:
        for values, part in parts:
            folder = "/".join(f"{name}={values[name]}" for name in columns)
            table = _required_where_full(part.drop(columns, strict=False).to_arrow())
            handle = _PartitionFile(fs, base, f"{folder}/part-{uuid.uuid4().hex}.parquet",
                                    table.schema, compress_deltas=False)  # fmt: skip
            try:
                handle.writer.write_table(table, row_group_size=row_group_rows)
            except BaseException:
                _discard(fs, handle)
                raise
            done.append(handle.close(fs, values))
    except BaseException:
        for data_file in done:
            fs.delete_file(f"{base}/{data_file.path}")
        raise
    return tuple(done)


def _required(schema: pa.Schema, names: frozenset[str]) -> pa.Schema:
    """Return `schema` with the named columns required (no definition levels in Parquet)."""
    return pa.schema(
        [field.with_nullable(field.name not in names) for field in schema],
        metadata=schema.metadata,
    )


def _required_where_full(table: pa.Table) -> pa.Table:
    """Mark the columns without nulls required, so Parquet writes no definition levels.

    The Delta schema keeps them nullable; a required column in a file satisfies it (every
    reader widens it). Encoding the levels, and the validity they describe, was a sixth of
    a 50-file batch's Parquet write. A file written whole knows its nulls; a streamed tick
    file, opened before its later chunks are seen, makes required only the columns its
    parser never lets be empty (`_encode`).
    """
    full = frozenset(
        name
        for name, column in zip(table.column_names, table.columns, strict=True)
        if column.null_count == 0
    )
    return table.cast(_required(table.schema, full))


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


def commit_tick_files(lake: LakeRoot, dataset: Dataset, writes: Sequence[DirectWrite]) -> int:
    """Commit the files of a batch of archive files: one transaction per symbol.

    Returns:
        The table version after the last commit.
    """
    delta = tables.open_or_create(
        lake, SILVER, dataset.table, silver_arrow_schema(dataset), list(dataset.partition_by)
    )
    by_symbol: dict[str, tuple[set[str], list[DataFile]]] = {}
    for write in writes:
        days, files = by_symbol.setdefault(write.parsed.task.symbol, (set(), []))
        days.update(period_days(write.parsed.task))
        files.extend(write.files)
    for symbol, (days, files) in sorted(by_symbol.items()):
        # Overwrite the symbol's day partitions with the new files, in one transaction.
        replacing: list[tables.PartitionFilter] = [
            ("symbol", "=", symbol), ("date", "in", sorted(days))
        ]  # fmt: skip
        tables.add_files(delta, files, partition_by=list(dataset.partition_by), replacing=replacing)
    delta.update_incremental()
    return delta.version()
