"""Batches of small bar files: worker-written Parquet, added by one commit when nothing overlaps.

Re-encoding a batch of daily kline files inside the committer (`write_deltalake`) put a
whole Parquet encode on the run's critical path after the last download. Workers now write
the batch's Parquet files (`parse.batch.store_and_parse_batch`) while downloads go on, and
the committer adds them in a small append transaction — but only when that is exactly what
the replace semantics of `staged.commit_files` would do:

- every file of the batch is a first load (no earlier revision of its key to remove), and
- no committed file of the same partition overlaps any new file's time span (min/max
  statistics), so no archive or provisional row is there to replace.

Anything else — a re-published file, a re-run after a crash between commit and manifest, a
span holding provisional rows, a mixed batch — takes the predicate commit of `staged`, with
the worker files as its data; they are deleted once the commit has rewritten their rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import structlog

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.ingest.write.staged import (
    SILVER,
    TARGET_FILE_SIZE,
    file_predicate,
    silver_arrow_schema,
)
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.maintenance import BAR_ROW_GROUP_ROWS

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from deltalake import DeltaTable

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.parse.file import ParsedFile
    from crypto_lakehouse.ingest.write.ticks import DirectWrite
    from crypto_lakehouse.storage.delta import DataFile
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)


def commit_bar_files(
    lake: LakeRoot,
    dataset: Dataset,
    parsed: Sequence[ParsedFile],
    writes: Sequence[DirectWrite | None],
    *,
    first_loads: bool,
    delta: DeltaTable | None = None,
) -> int:
    """Commit a batch whose files were parsed by workers (and maybe some staged ones).

    Args:
        lake: The lake.
        dataset: The batch's dataset (not a tick table).
        parsed: Every file of the batch.
        writes: Per file, the worker-written Parquet files, or None when it was staged.
        first_loads: No file of the batch replaces an earlier revision of its key.
        delta: The silver table as the caller loaded it (`open_silver`); loaded here if None.

    Returns:
        The table version after the commit.
    """
    if delta is None:
        delta = open_silver(lake, dataset)
    files = list({f.path: f for w in writes if w is not None for f in w.files}.values())
    if first_loads and all(w is not None for w in writes) and not _overlaps(delta, parsed):
        return _append(delta, dataset, files)
    log.info("bar_batch_replaced", table=dataset.table, files=len(parsed))
    version = _replace(lake, dataset, parsed, writes, files)
    fs, base = lake.filesystem()
    for data_file in files:
        fs.delete_file(f"{base}/{SILVER}/{dataset.table}/{data_file.path}")
    return version


def open_silver(lake: LakeRoot, dataset: Dataset) -> DeltaTable:
    """Load the dataset's silver table, created empty first when missing."""
    schema = silver_arrow_schema(dataset)
    return tables.open_or_create(lake, SILVER, dataset.table, schema, list(dataset.partition_by))


def _overlaps(delta: DeltaTable, parsed: Sequence[ParsedFile]) -> bool:
    """Tell whether a committed file of a new file's partition overlaps its time span."""
    spans = [p for p in parsed if p.min_time is not None and p.max_time is not None]
    if not spans:
        return False
    actions = pl.from_arrow(pa.table(delta.get_add_actions(flatten=True)))
    assert isinstance(actions, pl.DataFrame)
    if actions.is_empty():
        return False
    first = spans[0].task
    column = get_dataset(first.market, first.data_type).time_column
    low, high = f"min.{column}", f"max.{column}"
    needed = {low, high, "partition.symbol"}
    if not needed <= set(actions.columns):
        return True  # no statistics or no symbol partitions: cannot rule an overlap out
    for one in spans:
        task = one.task
        where = pl.col("partition.symbol") == task.symbol
        if "partition.interval" in actions.columns:
            where = where & (pl.col("partition.interval") == (task.interval or ""))
        near = actions.filter(where)
        touching = near.filter(
            pl.col(low).is_null()
            | pl.col(high).is_null()
            | ((pl.col(low) <= one.max_time) & (pl.col(high) >= one.min_time))
        )
        if touching.height:
            return True
    return False


def _append(delta: DeltaTable, dataset: Dataset, files: Sequence[DataFile]) -> int:
    """Add worker-written files to the table in one append transaction; return the version."""
    tables.add_files(delta, files, partition_by=list(dataset.partition_by))
    delta.update_incremental()
    return delta.version()


def _replace(
    lake: LakeRoot,
    dataset: Dataset,
    parsed: Sequence[ParsedFile],
    writes: Sequence[DirectWrite | None],
    files: Sequence[DataFile],
) -> int:
    """Replace the batch's spans with its rows (worker files and staged files) in one commit."""
    schema = silver_arrow_schema(dataset)
    fs, base = lake.filesystem()
    table_base = f"{base}/{SILVER}/{dataset.table}"
    staged = [p.task for p, w in zip(parsed, writes, strict=True) if w is None and p.rows]
    predicate = " OR ".join(file_predicate(p) for p in parsed)

    def batches() -> Iterator[pa.RecordBatch]:
        for data_file in files:  # one file in memory at a time
            table = pads.dataset(f"{table_base}/{data_file.path}", filesystem=fs).to_table()
            for name, value in data_file.partition_values.items():
                table = table.append_column(name, pa.array([value] * table.num_rows))
            yield from table.select(schema.names).cast(schema).to_batches()
        for batch in staging.batches(staged):
            yield batch.cast(schema)

    return tables.replace_where(
        lake,
        SILVER,
        dataset.table,
        lambda: pa.RecordBatchReader.from_batches(schema, batches()),
        predicate,
        partition_by=list(dataset.partition_by),
        target_file_size=TARGET_FILE_SIZE,
        row_group_rows=BAR_ROW_GROUP_ROWS if dataset.has_interval else None,
    )
