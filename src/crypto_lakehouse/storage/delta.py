"""Delta table reads and writes with commit retry; the only module that speaks Delta.

Every silver, gold and manifest commit goes through here: predicate writes of Arrow data
(`replace_where`, `append`) and commits of Parquet files that workers wrote into a table's
folder (`add_files`), with the add actions and their statistics made here
(`file_statistics`) from each file's footer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeAlias

import polars as pl
import pyarrow as pa
import structlog
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, SchemaMismatchError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from crypto_lakehouse.exceptions import CommitConflictError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)
ArrowData: TypeAlias = pa.Table | pa.RecordBatchReader


def open_table(lake: LakeRoot, layer: str, table: str) -> DeltaTable | None:
    """Return the Delta table, or None when it has not been written yet."""
    try:
        return DeltaTable(lake.table_uri(layer, table), storage_options=lake.storage_options)
    except TableNotFoundError:
        return None


def table_exists(lake: LakeRoot, layer: str, table: str) -> bool:
    """Tell whether `layer.table` has at least one commit."""
    return open_table(lake, layer, table) is not None


#: Retry a Delta commit that lost a race to another writer, with jittered backoff.
commit_retry = retry(
    retry=retry_if_exception_type(CommitFailedError),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.05, max=2.0),
    reraise=True,
)


@commit_retry
def _write(
    uri: str,
    make_data: Callable[[], ArrowData],
    *,
    predicate: str | None,
    partition_by: list[str] | None,
    storage_options: dict[str, str],
    target_file_size: int | None,
    row_group_rows: int | None = None,
    merge_schema: bool = False,
) -> None:
    """Write once; tenacity retries when another writer committed the same version first.

    With a predicate the matching rows are replaced (an overwrite); without, rows are added.
    """
    properties = None
    if row_group_rows:
        # Name the codec: WriterProperties without one writes uncompressed Parquet.
        properties = WriterProperties(max_row_group_size=row_group_rows, compression="SNAPPY")
    write_deltalake(  # type: ignore[call-overload, misc]
        uri,
        make_data(),
        mode="append" if predicate is None else "overwrite",
        predicate=predicate,
        partition_by=partition_by,
        storage_options=storage_options,
        schema_mode="merge" if merge_schema else None,
        target_file_size=target_file_size,
        writer_properties=properties,
    )


def replace_where(
    lake: LakeRoot,
    layer: str,
    table: str,
    make_data: Callable[[], ArrowData],
    predicate: str,
    *,
    partition_by: list[str] | None = None,
    target_file_size: int | None = None,
    row_group_rows: int | None = None,
) -> int:
    """Delete the rows matching `predicate` and add `data`, in one atomic Delta commit.

    Every new row must match the predicate; that is what makes re-loading a file idempotent.
    `make_data` is called again on each commit retry, so it must return fresh data.

    Returns:
        The table version the commit created.
    """
    uri = lake.table_uri(layer, table)
    exists = table_exists(lake, layer, table)
    try:
        _write(
            uri,
            make_data,
            predicate=predicate if exists else None,
            partition_by=partition_by,
            storage_options=lake.storage_options,
            target_file_size=target_file_size,
            row_group_rows=row_group_rows,
        )
    except CommitFailedError as exc:
        raise CommitConflictError(f"commit to {layer}.{table} kept conflicting: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"could not write {layer}.{table}: {exc}") from exc
    version = open_table(lake, layer, table)
    return version.version() if version is not None else -1


def append(
    lake: LakeRoot,
    layer: str,
    table: str,
    data: pa.Table,
    *,
    partition_by: list[str] | None = None,
    row_group_rows: int | None = None,
) -> None:
    """Append rows in one commit (retried on conflicts), adding columns the table lacks.

    No version is returned: reading it back cost a load of the table (~1.3 ms) that the only
    caller, the manifest's last write of every ingest, did not use. The append is tried as is
    first: merging schemas on every append cost ~2-3 ms of the 7-10 ms, and the schema only
    grows when a newer version writes to a table an older one made.
    """
    uri = lake.table_uri(layer, table)

    def write(merge_schema: bool) -> None:
        _write(
            uri,
            lambda: data,
            predicate=None,
            partition_by=partition_by,
            storage_options=lake.storage_options,
            target_file_size=None,
            row_group_rows=row_group_rows,
            merge_schema=merge_schema,
        )

    try:
        try:
            write(merge_schema=False)
        except SchemaMismatchError:
            log.info("table_schema_merged", layer=layer, table=table)
            write(merge_schema=True)
    except CommitFailedError as exc:
        raise CommitConflictError(f"commit to {layer}.{table} kept conflicting: {exc}") from exc


def read_frame(
    lake: LakeRoot, layer: str, table: str, *, filter_expr: pl.Expr | None = None
) -> pl.DataFrame:
    """Read a table (optionally filtered, pushed down to the scan) as a polars frame.

    Returns an empty frame when the table does not exist yet.
    """
    dataset = arrow_dataset(lake, layer, table)
    if dataset is None:
        return pl.DataFrame()
    lazy = pl.scan_pyarrow_dataset(dataset)
    if filter_expr is not None:
        lazy = lazy.filter(filter_expr)
    return lazy.collect()


def arrow_dataset(lake: LakeRoot, layer: str, table: str) -> pads.Dataset | None:
    """Return the table's current snapshot as a pyarrow dataset (None when absent)."""
    delta = open_table(lake, layer, table)
    if delta is None:
        return None
    return delta.to_pyarrow_dataset()


def sql_literal(value: object) -> str:
    """Quote a value for a delta-rs SQL predicate."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def open_or_create(
    lake: LakeRoot, layer: str, table: str, schema: pa.Schema, partition_by: list[str]
) -> DeltaTable:
    """Return the table, created empty first when missing (one load when it exists)."""
    found = open_table(lake, layer, table)
    if found is not None:
        return found
    ensure_table(lake, layer, table, schema, partition_by)
    return DeltaTable(lake.table_uri(layer, table), storage_options=lake.storage_options)


def ensure_table(
    lake: LakeRoot, layer: str, table: str, schema: pa.Schema, partition_by: list[str]
) -> None:
    """Create an empty table with a schema when none exists (so replace writes always apply).

    Raises:
        StorageError: the table could not be read or created.
    """
    try:
        if table_exists(lake, layer, table):
            return
        DeltaTable.create(
            lake.table_uri(layer, table),
            schema=schema,
            partition_by=partition_by,
            mode="ignore",
            storage_options=lake.storage_options,
        )
    except CommitFailedError:
        if not table_exists(lake, layer, table):
            raise
    except OSError as exc:
        raise StorageError(f"could not create {layer}.{table}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class DataFile:
    """A Parquet file a worker wrote into the table folder, not yet committed."""

    path: str
    size: int
    partition_values: dict[str, str]
    stats: str
    modification_time: int


#: A filter on partition values, as delta-rs takes it: ("symbol", "=", "BTCUSDT").
PartitionFilter: TypeAlias = tuple[str, str, str | list[str]]


def add_files(
    delta: DeltaTable,
    files: Sequence[DataFile],
    *,
    partition_by: list[str],
    replacing: list[PartitionFilter] | None = None,
) -> None:
    """Commit Parquet files already in the table's folder, in one transaction (retried).

    Args:
        delta: The table, as loaded by the caller; brought up to date before each try.
        files: The files to add (`DataFile`, statistics from `file_statistics`).
        partition_by: The table's partition columns.
        replacing: Partitions whose current files the new ones replace (an overwrite of
            exactly those partitions); None appends.

    Raises:
        CommitConflictError: other writers kept winning the race for the next version.
        StorageError: the log could not be read or written.
    """
    mode: Literal["append", "overwrite"] = "append" if replacing is None else "overwrite"
    try:
        _add_files(delta, files, mode, partition_by, replacing)
    except CommitFailedError as exc:
        raise CommitConflictError(f"commit to {delta.table_uri} kept conflicting: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"could not commit to {delta.table_uri}: {exc}") from exc


@commit_retry
def _add_files(
    delta: DeltaTable,
    files: Sequence[DataFile],
    mode: Literal["append", "overwrite"],
    partition_by: list[str],
    replacing: list[PartitionFilter] | None,
) -> None:
    """Try the commit of `add_files` once against the latest version."""
    delta.update_incremental()
    actions: list[AddAction | RemoveAction] = [
        AddAction(f.path, f.size, f.partition_values, f.modification_time, True, f.stats)
        for f in files
    ]
    delta.create_write_transaction(
        actions, mode=mode, schema=delta.schema(), partition_by=partition_by,
        partition_filters=replacing,
    )  # fmt: skip


def _has_bounds(kind: pa.DataType) -> bool:
    """Tell whether a column gets min/max statistics: numbers, instants, dates, flags, text.

    Readers (delta-rs, the pyarrow dataset of a Delta table) prune files on them; a column
    without them must not look like "all null", so it only gets its null count.
    """
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    )


def file_statistics(metadata: pq.FileMetaData, schema: pa.Schema) -> dict[str, object]:
    """Return a written Parquet file's Delta statistics, read off its footer.

    The writer has computed each row group's min, max and null count while encoding (text
    bounds over the values a dictionary column uses, NaN left out); folding those costs
    microseconds, where a polars pass over the rows for the same figures cost 2.6 ms of a
    50-file batch's ~80.
    """
    bounded = {field.name for field in schema if _has_bounds(field.type)}
    low: dict[str, object] = {}
    high: dict[str, object] = {}
    nulls = dict.fromkeys(schema.names, 0)
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            name, stats = column.path_in_schema, column.statistics
            if stats is None or not stats.has_null_count:
                nulls.pop(name, None)  # unknown, which a reader must not take for 0
                bounded.discard(name)
                continue
            if name in nulls:
                nulls[name] += stats.null_count
            if name not in bounded:
                continue
            if not stats.has_min_max:
                if stats.null_count < group.num_rows:  # values without bounds (too long)
                    bounded.discard(name)
                continue
            if name not in low or stats.min < low[name]:  # type: ignore[operator]
                low[name] = stats.min
            if name not in high or stats.max > high[name]:  # type: ignore[operator]
                high[name] = stats.max
    return {
        "numRecords": metadata.num_rows,
        "minValues": {name: _stat(value, up=False) for name, value in low.items()
                      if name in bounded},
        "maxValues": {name: _stat(value, up=True) for name, value in high.items()
                      if name in bounded},
        "nullCount": nulls,
    }  # fmt: skip


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
