"""Parse many small archive files in one polars pass (daily 1m klines: ~215 KB each).

Per-file work (a dozen polars calls) dominated small-file ingest, so a batch inflates every
zip, concatenates the CSV bodies, parses them once, and validates every rule of
`FileParser` with vectorised expressions over a per-row file index. Any doubt — a bad cell,
a mixed epoch unit, a row outside its period — raises `BatchRejected`, and the caller parses
those files one by one, so each bad file still gets its own precise error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from crypto_lakehouse.datasets import TIMESTAMP, get_dataset
from crypto_lakehouse.pipeline.direct import DirectWrite, write_partition_files
from crypto_lakehouse.pipeline.parse import ParsedFile, ParseTask, period_bounds
from crypto_lakehouse.sources.binance.formats import (
    MICROS_THRESHOLD,
    read_schema,
    required_columns,
    split_header,
)
from crypto_lakehouse.sources.binance.zipstream import read_csv_member
from crypto_lakehouse.storage.maintenance import BAR_ROW_GROUP_ROWS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.datasets import Dataset


class BatchRejected(Exception):
    """The batch cannot be parsed in one pass; parse its files one by one."""


def _bodies(tasks: Sequence[ParseTask]) -> tuple[bytes, list[tuple[str | None, int, int]]]:
    """Inflate each file; return the joined CSV bodies and (header, rows, csv bytes) per file."""
    bodies: list[bytes] = []
    meta: list[tuple[str | None, int, int]] = []
    for task in tasks:
        raw = read_csv_member(Path(task.zip_path))
        header, body = split_header(raw)
        bodies.append(body)
        meta.append((header, body.count(b"\n"), len(raw)))
    return b"".join(bodies), meta


def _files_frame(tasks: Sequence[ParseTask], dataset: Dataset) -> pl.DataFrame:
    """Return one row per file: index, symbol, interval, lineage constants, period bounds."""
    bounds = [period_bounds(t.period, t.stamp) for t in tasks]
    columns: dict[str, object] = {
        "_file": pl.Series(range(len(tasks)), dtype=pl.UInt32),
        "symbol": [t.symbol for t in tasks],
        "_bronze_key": pl.Series([t.key for t in tasks], dtype=pl.Categorical),
        "_revision": pl.Series([t.revision for t in tasks], dtype=pl.Int64),
        "_start": pl.Series([b[0] for b in bounds], dtype=TIMESTAMP),
        "_end": pl.Series([b[1] for b in bounds], dtype=TIMESTAMP),
    }
    if dataset.has_interval:
        columns["interval"] = [t.interval for t in tasks]
    return pl.DataFrame(columns)


def parse_batch_to_files(
    tasks: Sequence[ParseTask], table_uri: str, storage_options: dict[str, str]
) -> list[DirectWrite]:
    """Parse small files of one non-tick dataset and write their silver Parquet files.

    The files sit in the table folder uncommitted (`silver.commit_bar_files` adds them), one
    per partition; every returned write names all of them.

    Raises:
        BatchRejected: anything a per-file parse would report; nothing is written.
    """
    dataset, unique, parsed = _parse_batch(tasks)
    files = write_partition_files(
        _silver(unique, dataset, tasks[0]),
        dataset.partition_by,
        table_uri,
        storage_options,
        row_group_rows=BAR_ROW_GROUP_ROWS if dataset.has_interval else None,
    )
    return [DirectWrite(p, files) for p in parsed]


def _parse_batch(tasks: Sequence[ParseTask]) -> tuple[Dataset, pl.DataFrame, list[ParsedFile]]:
    """Parse and validate a batch; return the dataset, its unique rows and one result per file."""
    dataset = get_dataset(tasks[0].market, tasks[0].data_type)
    if dataset.tick or dataset.derived_time_from_date_hour:
        raise BatchRejected("only bar-like datasets are batched")
    body, meta = _bodies(tasks)
    try:
        raw = pl.read_csv(body, has_header=False, schema=read_schema(dataset), quote_char='"')
    except pl.exceptions.PolarsError as exc:
        raise BatchRejected(str(exc)) from exc
    if raw.height != sum(rows for _, rows, _ in meta):
        raise BatchRejected("blank or unterminated lines")
    file_index = pl.concat(
        [pl.repeat(i, rows, dtype=pl.UInt32, eager=True) for i, (_, rows, _) in enumerate(meta)]
    ).alias("_file")
    frame = _typed(raw.with_columns(file_index), dataset)
    frame = frame.join(_files_frame(tasks, dataset), on="_file", how="left", maintain_order="left")
    _validate(frame, dataset)
    key = ["_file", *(c for c in dataset.primary_key if c not in ("symbol", "interval"))]
    duplicated = frame.select(pl.struct(key).is_duplicated().any()).item()
    unique = frame.unique(subset=key, keep="first", maintain_order=True) if duplicated else frame
    stats = _per_file_stats(frame, unique, dataset, len(tasks))
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
            for task, (header, _, csv_bytes), (rows, dups, low, high, unit) in zip(
                tasks, meta, stats, strict=True
            )
        ],
    )


def _typed(raw: pl.DataFrame, dataset: Dataset) -> pl.DataFrame:
    """Convert epochs row by row (µs when ≥ 1e15, else ms) and keep the unit per row."""
    epochs = [c.name for c in dataset.csv_columns if c.kind == "ts"]
    keep = [c.name for c in dataset.csv_columns if c.kind != "ignore"]
    if dataset.time_column not in epochs:
        raise BatchRejected("only epoch-timed datasets are batched")
    micros = pl.col(dataset.time_column) >= MICROS_THRESHOLD
    converted = [
        pl.when(micros).then(pl.col(c)).otherwise(pl.col(c) * 1000).cast(TIMESTAMP).alias(c)
        for c in epochs
    ]
    return raw.select(
        *(c for c in keep if c not in epochs), *converted, micros.alias("_us"), "_file"
    )


def _validate(frame: pl.DataFrame, dataset: Dataset) -> None:
    """Reject the batch on empty required cells, mixed units, or rows outside their period."""
    required = required_columns(dataset)
    time = pl.col(dataset.time_column)
    problems = frame.select(
        pl.any_horizontal(pl.col(required).is_null()).any().alias("nulls"),
        ((time < pl.col("_start")) | (time > pl.col("_end"))).any().alias("outside"),
        (pl.col("_us").n_unique().over("_file") > 1).any().alias("mixed"),
    ).row(0, named=True)
    bad = [name for name, hit in problems.items() if hit]
    if bad:
        raise BatchRejected(", ".join(bad))


def _per_file_stats(
    frame: pl.DataFrame, unique: pl.DataFrame, dataset: Dataset, count: int
) -> list[tuple[int, int, datetime | None, datetime | None, str | None]]:
    """Return (rows, duplicates, min time, max time, unit) per file index."""
    time = pl.col(dataset.time_column)
    before = frame.group_by("_file").agg(pl.len().alias("n"), pl.col("_us").first())
    after = unique.group_by("_file").agg(pl.len().alias("n"), time.min().alias("lo"),
                                         time.max().alias("hi"))  # fmt: skip
    joined = {row["_file"]: row for row in before.join(after, on="_file").iter_rows(named=True)}
    FileStats = tuple[int, int, datetime | None, datetime | None, str | None]
    out: list[FileStats] = []
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
    """Return the batch's rows with the constant lineage columns, in silver column order."""
    return frame.with_columns(
        pl.lit("archive", dtype=pl.Categorical).alias("_source"),
        pl.lit(task.ingested_at, dtype=TIMESTAMP).alias("_ingested_at"),
        pl.lit(False).alias("_provisional"),
    ).select(list(dataset.silver_schema()))
