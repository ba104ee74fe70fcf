"""Delta table reads and writes with commit retry; the only module that speaks Delta."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import polars as pl
import pyarrow as pa
import structlog
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, SchemaMismatchError, TableNotFoundError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from crypto_lakehouse.exceptions import CommitConflictError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable

    import pyarrow.dataset as pads

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
    mode: str,
    predicate: str | None,
    partition_by: list[str] | None,
    storage_options: dict[str, str],
    target_file_size: int | None,
    row_group_rows: int | None = None,
    merge_schema: bool = False,
) -> None:
    """Write once; tenacity retries when another writer committed the same version first."""
    properties = None
    if row_group_rows:
        # Name the codec: WriterProperties without one writes uncompressed Parquet.
        properties = WriterProperties(max_row_group_size=row_group_rows, compression="SNAPPY")
    write_deltalake(  # type: ignore[call-overload, misc]
        uri,
        make_data(),
        mode=mode,
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
            mode="overwrite" if exists else "append",
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
            mode="append",
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
    """Create an empty table with a schema when none exists (so replace writes always apply)."""
    if table_exists(lake, layer, table):
        return
    try:
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
