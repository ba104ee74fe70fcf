"""Parse many small archive files in one polars pass (daily 1m klines: ~215 KB each).

Per-file work (a dozen polars calls) dominated small-file ingest, so a batch inflates every
zip, parses the joined CSV bodies in one polars scan, and validates every rule of
`FileParser` with vectorised expressions over a per-row file index. Any doubt — a bad cell,
a mixed epoch unit, a row outside its period — raises `BatchRejected`, and the caller parses
those files one by one, so each bad file still gets its own precise error.

Files fetched into memory reach the worker as bytes with their bronze path: the worker hands
the bronze objects of the whole batch to the process's bronze writer while it parses, and
writes silver once they are stored (one hand-off per batch instead of one per file, and no
threads racing for the same folder).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# polars and pyarrow look at `np.ma` on every numpy conversion, and numpy imports that module
# lazily, on first use: ~18 ms of a run's first batch, the other workers' first batches
# waiting on the import lock. Imported with the pipeline instead (a start-up cost).
import numpy.ma
import polars as pl

from crypto_lakehouse.datasets import TIMESTAMP, get_dataset
from crypto_lakehouse.ingest.parse.file import ParsedFile, ParseTask
from crypto_lakehouse.ingest.parse.rows import (
    batch_constant_lineage,
    batch_lineage,
    batch_problems,
    span_within_period,
)
from crypto_lakehouse.ingest.write.ticks import DirectWrite, split_partitions, write_partitions
from crypto_lakehouse.sources.binance.archive.formats import (
    MICROS_THRESHOLD,
    read_schema,
    split_header,
)
from crypto_lakehouse.sources.binance.archive.zipstream import read_csv_member
from crypto_lakehouse.storage.bronze_writes import store_in_background
from crypto_lakehouse.storage.maintenance import BAR_ROW_GROUP_ROWS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.storage.root import LakeRoot


_NEWLINE = ord("\n")
#: Per-thread scratch memory of the batch parse (`_mask`).
_scratch = threading.local()


#: Per file: rows, duplicates dropped, earliest and latest time, epoch unit.
_FileStats = tuple[int, int, datetime | None, datetime | None, str | None]


class BatchRejected(Exception):
    """The batch cannot be parsed in one pass; parse its files one by one."""


@dataclass(frozen=True, slots=True)
class BatchFile:
    """One file of a batch: its parse task, and its verified zip bytes when not in bronze yet."""

    task: ParseTask
    #: The zip as downloaded (checksum verified), to be stored at `bronze_path` first.
    body: bytes | None = field(default=None, repr=False)  # a repr must not print the zip
    bronze_path: str = ""


def _bodies(
    tasks: Sequence[ParseTask], zips: Sequence[bytes | None]
) -> tuple[list[bytes], list[str | None], list[int]]:
    """Inflate each file; return its CSV body (header cut off), header and CSV size, in order."""
    bodies: list[bytes] = []
    headers: list[str | None] = []
    sizes: list[int] = []
    for task, data in zip(tasks, zips, strict=True):
        raw = read_csv_member(data if data is not None else _zip_source(task))
        header, body = split_header(raw)
        if body and body[-1:] != b"\n":
            body += b"\n"  # joined, a last line without its newline would merge with the next
        bodies.append(body)
        headers.append(header)
        sizes.append(len(raw))
    return bodies, headers, sizes


def _zip_source(task: ParseTask) -> bytes | Path:
    """Return where a small zip not handed over in memory is read: its bronze object, or a path."""
    if task.bronze is None:
        return Path(task.zip_path)
    lake, path = task.bronze
    with lake.open_input(path) as raw:
        return bytes(raw.read())


def _line_counts(joined: bytes, bodies: Sequence[bytes]) -> list[int]:
    """Count each body's lines with numpy (the GIL released), in a mask kept per thread.

    A fresh mask per batch (14 MB for 64 files) cost a page fault per 4 KB, more than the
    comparison itself; one body-sized mask is reused and stays in cache.
    """
    data = np.frombuffer(joined, dtype=np.uint8)
    mask = _mask(max((len(body) for body in bodies), default=0))
    counts: list[int] = []
    offset = 0
    for body in bodies:
        size = len(body)
        np.equal(data[offset : offset + size], _NEWLINE, out=mask[:size])
        counts.append(int(np.count_nonzero(mask[:size])))
        offset += size
    return counts


def _mask(size: int) -> np.ndarray:
    """Return this thread's boolean scratch array of at least `size` elements."""
    mask: np.ndarray | None = getattr(_scratch, "mask", None)
    if mask is None or len(mask) < size:
        mask = np.empty(size, dtype=np.bool_)
        _scratch.mask = mask
    return mask


def _read_joined(joined: bytes, dataset: Dataset) -> pl.DataFrame:
    """Parse the joined bodies in one polars scan, skipping the columns silver drops."""
    schema = read_schema(dataset)
    kept = [c.name for c in dataset.csv_columns if c.kind != "ignore"]
    if not joined:
        return pl.DataFrame(schema=schema).select(kept)
    scan = pl.scan_csv(joined, has_header=False, schema=schema, quote_char='"')
    return scan.select(kept).collect()


def _partition_columns(
    tasks: Sequence[ParseTask], dataset: Dataset, index: pl.Series
) -> list[pl.Series]:
    """Return each row's partition values (symbol, and interval for bars) by file index."""
    columns = [pl.Series("symbol", [t.symbol for t in tasks], dtype=pl.String)]
    if dataset.has_interval:
        columns.append(pl.Series("interval", [t.interval for t in tasks], dtype=pl.String))
    return [column.gather(index) for column in columns]


def store_and_parse_batch(
    files: Sequence[BatchFile], lake: LakeRoot, table_uri: str
) -> list[DirectWrite]:
    """Store the batch's in-memory zips in bronze while parsing them, then write silver.

    The bronze writes run beside the inflate and the CSV parse (`bronze_writes`); the silver
    files are written only once every bronze object is there: no silver row may name a
    bronze object that is not.

    Raises:
        StorageError: a bronze write failed (objects already written stay; they are
            the verified bytes, rewritten unchanged on a retry). Nothing is written to silver.
        BatchRejected: as `parse_batch_to_files`.
    """
    stored = store_in_background(
        lake, [(f.body, f.bronze_path) for f in files if f.body is not None]
    )
    tasks = [f.task for f in files]
    try:
        parsed = _parse_batch(tasks, [f.body for f in files])
    finally:
        stored.wait()
    return _write_silver(parsed, tasks, table_uri, lake.storage_options)


def parse_batch_to_files(
    tasks: Sequence[ParseTask],
    table_uri: str,
    storage_options: dict[str, str],
    zips: Sequence[bytes | None] | None = None,
) -> list[DirectWrite]:
    """Parse small files of one non-tick dataset and write their silver Parquet files.

    The files sit in the table folder uncommitted (`silver.commit_bar_files` adds them), one
    per partition; every returned write names all of them. A file's zip is read from
    `zips[i]` when given there, else from its task's `zip_path`.

    Raises:
        BatchRejected: anything a per-file parse would report; nothing is written.
    """
    parsed = _parse_batch(tasks, zips or [None] * len(tasks))
    return _write_silver(parsed, tasks, table_uri, storage_options)


def _write_silver(
    batch: tuple[Dataset, pl.DataFrame, list[ParsedFile]],
    tasks: Sequence[ParseTask],
    table_uri: str,
    storage_options: dict[str, str],
) -> list[DirectWrite]:
    """Write a parsed batch's rows as one uncommitted Parquet file per partition."""
    dataset, unique, parsed = batch
    files = write_partitions(
        [
            (values, _silver(part, dataset, tasks[0]))
            for values, part in _partition_slices(unique, tasks, parsed, dataset)
        ],
        dataset.partition_by,
        table_uri,
        storage_options,
        row_group_rows=BAR_ROW_GROUP_ROWS if dataset.has_interval else None,
    )
    return [DirectWrite(p, files) for p in parsed]


def _partition_slices(
    frame: pl.DataFrame, tasks: Sequence[ParseTask], parsed: Sequence[ParsedFile], dataset: Dataset
) -> list[tuple[dict[str, str], pl.DataFrame]]:
    """Cut the batch into partitions by runs of files, without copying.

    A file's unique rows are contiguous and in file order, `parsed[i].rows` of them. Batches
    arrive sorted by key, so each (symbol, interval) is one run of files; a partition seen
    again later (an unsorted batch) falls back to `split_partitions`, on partition columns
    gathered by each row's file.
    """
    runs: list[tuple[dict[str, str], int, int]] = []
    offset = 0
    for task, result in zip(tasks, parsed, strict=True):
        values = {"symbol": task.symbol}
        if dataset.has_interval:
            values["interval"] = str(task.interval)
        values = {name: values[name] for name in dataset.partition_by}
        if runs and runs[-1][0] == values:
            runs[-1] = (values, runs[-1][1], runs[-1][2] + result.rows)
        else:
            runs.append((values, offset, result.rows))
        offset += result.rows
    keys = [tuple(values.items()) for values, _, _ in runs]
    if len(set(keys)) != len(keys) or set(dataset.partition_by) - {"symbol", "interval"}:
        located = frame.with_columns(_partition_columns(tasks, dataset, frame["_file"]))
        return split_partitions(located, dataset.partition_by)
    return [(values, frame.slice(start, length)) for values, start, length in runs if length]


def _parse_batch(
    tasks: Sequence[ParseTask], zips: Sequence[bytes | None]
) -> tuple[Dataset, pl.DataFrame, list[ParsedFile]]:
    """Parse and validate a batch; return the dataset, its unique rows and one result per file."""
    dataset = get_dataset(tasks[0].market, tasks[0].data_type)
    if dataset.tick or dataset.derived_time_from_date_hour:
        raise BatchRejected("only bar-like datasets are batched")
    bodies, headers, sizes = _bodies(tasks, zips)
    # One scan of the joined bodies costs two thirds of a scan with a source per body.
    joined = b"".join(bodies)
    counts = _line_counts(joined, bodies)
    del bodies
    try:
        raw = _read_joined(joined, dataset)
    except pl.exceptions.PolarsError as exc:
        raise BatchRejected(str(exc)) from exc
    if raw.height != sum(counts):
        raise BatchRejected("rows and lines differ (a line break inside quotes)")
    file_index = pl.Series("_file", np.repeat(np.arange(len(counts), dtype=np.uint32), counts))
    frame = _typed(raw.with_columns(file_index), dataset)
    frame = frame.with_columns(batch_lineage(tasks, file_index))
    _validate(frame, dataset)
    key = ["_file", *(c for c in dataset.primary_key if c not in ("symbol", "interval"))]
    if key == ["_file", dataset.time_column] and _rising_in_each_file(frame, dataset):
        # No key can repeat, and each file's first and last rows hold its bounds.
        unique, stats = frame, _bounds_by_position(frame, counts, dataset)
    else:
        unique = frame
        if frame.select(pl.struct(key).is_duplicated().any()).item():
            unique = frame.unique(subset=key, keep="first", maintain_order=True)
        stats = _per_file_stats(frame, unique, dataset, len(tasks))
    _check_periods(tasks, stats)
    return (
        dataset,
        unique,
        [
            ParsedFile(
                task,
                rows=rows,
                duplicates=dups,
                min_time=low,
                max_time=high,
                header=header,
                time_unit=unit,
                csv_bytes=csv_bytes,
            )
            for task, header, csv_bytes, (rows, dups, low, high, unit) in zip(
                tasks, headers, sizes, stats, strict=True
            )
        ],
    )


def _typed(raw: pl.DataFrame, dataset: Dataset) -> pl.DataFrame:
    """Convert epochs row by row (µs when ≥ 1e15, else ms) and keep the unit per row.

    A batch of ms files only (every spot file before 2025) is told by one maximum: its
    epochs are then multiplied, not chosen row by row between two converted columns.
    """
    epochs = [c.name for c in dataset.csv_columns if c.kind == "ts"]
    keep = [c.name for c in dataset.csv_columns if c.kind != "ignore"]
    if dataset.time_column not in epochs:
        raise BatchRejected("only epoch-timed datasets are batched")
    peak = raw.select(pl.col(dataset.time_column).max()).item()
    if peak is None or peak < MICROS_THRESHOLD:
        converted = [(pl.col(c) * 1000).cast(TIMESTAMP).alias(c) for c in epochs]
        unit = pl.lit(False).alias("_us")
    else:
        micros = pl.col(dataset.time_column) >= MICROS_THRESHOLD
        converted = [
            pl.when(micros).then(pl.col(c)).otherwise(pl.col(c) * 1000).cast(TIMESTAMP).alias(c)
            for c in epochs
        ]
        unit = micros.alias("_us")
    return raw.select(*(c for c in keep if c not in epochs), *converted, unit, "_file")


def _same_file_as_previous_row() -> pl.Expr:
    """True where a row follows another row of the same file."""
    return pl.col("_file") == pl.col("_file").shift(1)


def _validate(frame: pl.DataFrame, dataset: Dataset) -> None:
    """Reject the batch when a row breaks a rule of `rows` (each file then parses alone).

    Rows outside their file's period are found from each file's bounds (`_check_periods`).
    """
    bad = batch_problems(frame, dataset)
    if bad:
        raise BatchRejected(", ".join(bad))


def _check_periods(tasks: Sequence[ParseTask], stats: Sequence[_FileStats]) -> None:
    """Reject the batch when a file's earliest or latest row lies outside its period.

    Per file rather than per row: the bounds come with the file's stats (its first and last
    rows when its times rise), so no per-row copy of the period bounds is gathered.
    """
    for task, (_, _, low, high, _) in zip(tasks, stats, strict=True):
        if not span_within_period(task, low, high):
            raise BatchRejected(f"outside: {task.key} has rows outside {task.stamp}")


def _rising_in_each_file(frame: pl.DataFrame, dataset: Dataset) -> bool:
    """Tell whether every file's times strictly increase row after row (as Binance writes)."""
    time = pl.col(dataset.time_column)
    falls = (time <= time.shift(1)) & _same_file_as_previous_row()
    return not frame.select(falls.any()).item()


def _bounds_by_position(
    frame: pl.DataFrame, counts: Sequence[int], dataset: Dataset
) -> list[_FileStats]:
    """Return per-file stats read off each file's first and last rows (times rise in files)."""
    firsts: list[int] = []
    offset = 0
    for count in counts:
        firsts.append(offset)
        offset += count
    present = [i for i, count in enumerate(counts) if count]
    first_rows = [firsts[i] for i in present]
    last_rows = [firsts[i] + counts[i] - 1 for i in present]
    time = pl.col(dataset.time_column)
    edges = frame.select(
        time.gather(first_rows).alias("lo"),
        time.gather(last_rows).alias("hi"),
        pl.col("_us").gather(first_rows).alias("us"),
    )
    found = dict(zip(present, edges.iter_rows(), strict=True))
    out: list[_FileStats] = []
    for index, count in enumerate(counts):
        if index not in found:
            out.append((0, 0, None, None, None))
            continue
        lo, hi, us = found[index]
        out.append((count, 0, _utc(lo), _utc(hi), "us" if us else "ms"))
    return out


def _per_file_stats(
    frame: pl.DataFrame, unique: pl.DataFrame, dataset: Dataset, count: int
) -> list[_FileStats]:
    """Return (rows, duplicates, min time, max time, unit) per file index."""
    time = pl.col(dataset.time_column)
    before = frame.group_by("_file").agg(pl.len().alias("n"), pl.col("_us").first())
    after = unique.group_by("_file").agg(pl.len().alias("n"), time.min().alias("lo"),
                                         time.max().alias("hi"))  # fmt: skip
    joined = {row["_file"]: row for row in before.join(after, on="_file").iter_rows(named=True)}
    out: list[_FileStats] = []
    for index in range(count):
        row = joined.get(index)
        if row is None:
            out.append((0, 0, None, None, None))
            continue
        unit = "us" if row["_us"] else "ms"
        lo, hi = row["lo"], row["hi"]
        out.append((row["n_right"], row["n"] - row["n_right"], _utc(lo), _utc(hi), unit))
    return out


def _utc(value: datetime | None) -> datetime | None:
    """Return an instant with its UTC zone attached."""
    return value.astimezone(UTC) if value is not None else None


def _silver(frame: pl.DataFrame, dataset: Dataset, task: ParseTask) -> pl.DataFrame:
    """Return one partition's rows with the constant lineage columns, in silver column order,
    without the partition columns (the folder holds them)."""
    partitions = set(dataset.partition_by)
    return frame.with_columns(batch_constant_lineage(task)).select(
        [name for name in dataset.silver_schema() if name not in partitions]
    )
