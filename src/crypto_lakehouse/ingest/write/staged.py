"""Commit staged silver rows to Delta: one atomic, idempotent commit per batch of files.

Each file's rows replace (a) every row an earlier revision of the same archive key wrote and
(b) every row of the same symbol in the time span the file covers, whatever wrote it (an
overlapping daily/monthly file, provisional REST rows). Re-loading is therefore idempotent and
a re-published file leaves exactly one copy of each row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.maintenance import BAR_ROW_GROUP_ROWS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.parse.file import ParsedFile
    from crypto_lakehouse.storage.root import LakeRoot

SILVER = "silver"
TARGET_FILE_SIZE = 128 << 20


def _ts(value: datetime) -> str:
    """Format an instant as a delta-rs predicate literal."""
    return "'" + value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "'"


def file_predicate(parsed: ParsedFile) -> str:
    """Return the predicate a file's rows replace: its key, or its symbol's covered span."""
    task = parsed.task
    dataset = get_dataset(task.market, task.data_type)
    clauses = [f'"_bronze_key" = {tables.sql_literal(task.key)}']
    if parsed.min_time is not None and parsed.max_time is not None:
        span = [f'"symbol" = {tables.sql_literal(task.symbol)}']
        if dataset.has_interval:
            span.append(f'"interval" = {tables.sql_literal(task.interval or "")}')
        column = f'"{dataset.time_column}"'
        span.append(f"{column} >= {_ts(parsed.min_time)} AND {column} <= {_ts(parsed.max_time)}")
        clauses.append("(" + " AND ".join(span) + ")")
    return "(" + " OR ".join(clauses) + ")"


def commit_files(lake: LakeRoot, files: Sequence[ParsedFile]) -> int:
    """Replace the rows of a batch of parsed files of one table in a single Delta commit.

    Returns:
        The new table version.
    """
    if not files:
        raise ValueError("commit_files needs at least one file")
    dataset = get_dataset(files[0].task.market, files[0].task.data_type)
    schema = silver_arrow_schema(dataset)
    staged = [p.task for p in files if p.rows]
    predicate = " OR ".join(file_predicate(p) for p in files)

    def make_data() -> pa.RecordBatchReader:
        if not staged:
            return pa.RecordBatchReader.from_batches(schema, iter(()))
        return staging.dataset(staged).scanner(batch_size=1 << 17).to_reader()

    return tables.replace_where(
        lake,
        SILVER,
        dataset.table,
        make_data,
        predicate,
        partition_by=list(dataset.partition_by),
        target_file_size=TARGET_FILE_SIZE,
        row_group_rows=BAR_ROW_GROUP_ROWS if dataset.has_interval else None,
    )


def silver_arrow_schema(dataset: Dataset) -> pa.Schema:
    """Return the Arrow schema of a dataset's silver table (as polars writes it)."""
    return pl.DataFrame(schema=dataset.silver_schema()).to_arrow().schema
