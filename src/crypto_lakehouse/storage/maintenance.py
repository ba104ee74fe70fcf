"""Delta table maintenance: compact small files, order them by time, vacuum old files.

Compaction (`OPTIMIZE`) and z-ordering rewrite a partition's files into few large ones and
commit that as one new version; the rows and every query result stay the same. `VACUUM` then
deletes the files no version within the retention window needs. Readers that still hold an
older snapshot (a notebook's cached `QueryEngine`, a long query) need those files, which is
why the retention never drops below `MIN_RETENTION_HOURS` unless forced (tests only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl
from deltalake import WriterProperties
from deltalake.exceptions import CommitFailedError, DeltaError

from crypto_lakehouse.datasets import dataset_for_table
from crypto_lakehouse.exceptions import CommitConflictError, ConfigurationError, StorageError
from crypto_lakehouse.storage.delta import commit_retry, open_table

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from crypto_lakehouse.storage.root import LakeRoot

DEFAULT_TARGET_SIZE = 128 << 20
DEFAULT_RETENTION_HOURS = 168
MIN_RETENTION_HOURS = 1
DEFAULT_MAX_SMALL_FILES = 16
# Rows per Parquet row group when rewriting bar tables. Row-group min/max statistics are what
# let a one-day query skip the rest of a year-long file; delta-rs's default (~1 M rows) puts a
# whole symbol-year of 1m bars (525,600 rows) in one group, so a day query decodes the year
# (bench/query.py: 155 ms instead of 8-17 ms). Tick tables keep the default: their queries
# span more rows, and bigger groups scan faster.
BAR_ROW_GROUP_ROWS = 16_384
PartitionFilter = list[tuple[str, str, str]]


@dataclass(frozen=True, slots=True)
class Layout:
    """A table's physical layout at one version: files and bytes."""

    version: int
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class OptimizeResult:
    """What one maintenance run did to one table."""

    layer: str
    table: str
    before: Layout
    after: Layout
    files_added: int
    files_removed: int
    partitions_optimized: int
    zorder_by: tuple[str, ...] = ()
    vacuumed: tuple[str, ...] = ()
    seconds: float = 0.0
    partition: str = ""

    @property
    def name(self) -> str:
        """Return `layer.table`."""
        return f"{self.layer}.{self.table}"

    @property
    def changed(self) -> bool:
        """Tell whether a new version was committed (compaction, z-order or vacuum)."""
        return self.after.version != self.before.version


def layout(delta: DeltaTable) -> Layout:
    """Return the file count and size of a table's current snapshot."""
    actions = pl.DataFrame(delta.get_add_actions(flatten=True))
    size = int(actions["size_bytes"].sum()) if actions.height else 0
    return Layout(version=delta.version(), files=actions.height, bytes=size)


def row_group_rows_for(table: str) -> int | None:
    """Return the row-group size to rewrite a table with (None: delta-rs's default)."""
    try:
        return BAR_ROW_GROUP_ROWS if dataset_for_table(table).has_interval else None
    except KeyError:
        return None


def time_columns(table: str) -> list[str]:
    """Return the column to order a silver table by (its time column), or none when unknown."""
    try:
        return [dataset_for_table(table).time_column]
    except KeyError:
        return []


def check_retention(hours: int, *, force: bool) -> None:
    """Refuse a vacuum retention that would delete files a live reader may still need."""
    if hours < MIN_RETENTION_HOURS and not force:
        raise ConfigurationError(
            f"vacuum retention of {hours} h is below the safe minimum of {MIN_RETENTION_HOURS} h: "
            "readers holding an older snapshot would lose their files"
        )
    if hours < 0:
        raise ConfigurationError("vacuum retention cannot be negative")


@commit_retry
def _compact(
    delta: DeltaTable,
    zorder_by: list[str],
    target_size: int,
    partition_filters: PartitionFilter | None,
    row_group_rows: int | None,
) -> dict[str, object]:
    """Run one OPTIMIZE (compact or z-order); tenacity retries on a concurrent commit."""
    delta.update_incremental()
    properties = None
    if row_group_rows:
        # Name the codec: WriterProperties without one writes UNCOMPRESSED Parquet, whereas
        # delta-rs's own optimize default is zstd.
        properties = WriterProperties(
            max_row_group_size=row_group_rows, compression="ZSTD", compression_level=3
        )
    if zorder_by:
        return delta.optimize.z_order(
            zorder_by,
            partition_filters=partition_filters,
            target_size=target_size,
            writer_properties=properties,
        )
    return delta.optimize.compact(
        partition_filters=partition_filters, target_size=target_size, writer_properties=properties
    )


def _open(lake: LakeRoot, layer: str, table: str) -> DeltaTable:
    """Open a table or say which one is missing."""
    delta = open_table(lake, layer, table)
    if delta is None:
        raise ConfigurationError(f"table {layer}.{table} does not exist in {lake.uri}")
    return delta


def optimize_table(  # noqa: PLR0913 - keyword options, one per `lakehouse optimize` flag
    lake: LakeRoot,
    layer: str,
    table: str,
    *,
    zorder_by: list[str] | None = None,
    target_size: int = DEFAULT_TARGET_SIZE,
    vacuum: bool = True,
    vacuum_retention_hours: int = DEFAULT_RETENTION_HOURS,
    force_retention: bool = False,
    partition_filters: PartitionFilter | None = None,
    row_group_rows: int | None = None,
) -> OptimizeResult:
    """Compact (or z-order) a table's files, then vacuum files older than the retention.

    Args:
        lake: the lake holding the table.
        layer: `silver` or `gold`.
        table: the table name, e.g. `spot_klines`.
        zorder_by: columns to order files by (z-order); None or empty only compacts.
            Partition columns are not allowed here (they are constant within a file).
        target_size: bytes per output file.
        vacuum: also delete unreferenced files older than the retention.
        vacuum_retention_hours: files removed less than this long ago are kept.
        force_retention: allow a retention below `MIN_RETENTION_HOURS` (tests only).
        partition_filters: limit the rewrite to some partitions, e.g. `[("symbol", "=", "X")]`.
        row_group_rows: rows per Parquet row group in rewritten files (None: delta-rs default);
            `row_group_rows_for(table)` gives the layout this project chooses per table.

    Returns:
        Files and bytes before and after, versions, and the files vacuumed.

    Raises:
        ConfigurationError: the table does not exist, or the retention is unsafe.
        CommitConflictError: concurrent writers kept winning the commit.
        StorageError: delta-rs failed to read or write the table.
    """
    check_retention(vacuum_retention_hours, force=force_retention)
    started = time.perf_counter()
    delta = _open(lake, layer, table)
    before = layout(delta)
    columns = list(zorder_by or [])
    try:
        metrics = _compact(delta, columns, target_size, partition_filters, row_group_rows)
        vacuumed: list[str] = []
        if vacuum:
            vacuumed = delta.vacuum(
                retention_hours=vacuum_retention_hours,
                dry_run=False,
                enforce_retention_duration=False,  # our own floor is checked above
            )
        delta.update_incremental()
    except CommitFailedError as exc:
        raise CommitConflictError(f"optimize of {layer}.{table} kept conflicting: {exc}") from exc
    except (DeltaError, OSError) as exc:
        raise StorageError(f"could not optimize {layer}.{table}: {exc}") from exc
    return OptimizeResult(
        layer=layer,
        table=table,
        before=before,
        after=layout(delta),
        files_added=_metric(metrics, "numFilesAdded"),
        files_removed=_metric(metrics, "numFilesRemoved"),
        partitions_optimized=_metric(metrics, "partitionsOptimized"),
        zorder_by=tuple(columns),
        vacuumed=tuple(vacuumed),
        seconds=time.perf_counter() - started,
        partition="/".join(f"{c}={v}" for c, _, v in partition_filters or ()),
    )


def _metric(metrics: dict[str, object], name: str) -> int:
    """Return an integer metric of delta-rs's optimize report (0 when absent)."""
    value = metrics.get(name, 0)
    return int(value) if isinstance(value, int | float | str) else 0


def small_file_partitions(
    delta: DeltaTable, *, max_small_files: int, small_file_bytes: int
) -> list[PartitionFilter]:
    """Return the partitions holding more than `max_small_files` files under the size limit."""
    actions = pl.DataFrame(delta.get_add_actions(flatten=True))
    if not actions.height:
        return []
    partition_columns = [c for c in actions.columns if c.startswith("partition.")]
    small = actions.filter(pl.col("size_bytes") < small_file_bytes)
    if not partition_columns:
        return [[]] if small.height > max_small_files else []
    counts = small.group_by(partition_columns).len().filter(pl.col("len") > max_small_files)
    found: list[PartitionFilter] = []
    for row in counts.sort(partition_columns).iter_rows(named=True):
        found.append([(c.removeprefix("partition."), "=", str(row[c])) for c in partition_columns])
    return found


def auto_compact(
    lake: LakeRoot,
    layer: str,
    table: str,
    *,
    max_small_files: int = DEFAULT_MAX_SMALL_FILES,
    small_file_bytes: int = DEFAULT_TARGET_SIZE // 4,
    target_size: int = DEFAULT_TARGET_SIZE,
) -> list[OptimizeResult]:
    """Compact only the partitions that hold too many small files; no z-order, no vacuum.

    Cheap to call after every ingest: it reads the snapshot's file list and rewrites nothing
    unless some partition has more than `max_small_files` files below `small_file_bytes`.
    Each such partition is compacted in its own commit (retried on conflicts).

    Returns:
        One result per compacted partition; empty when nothing needed work (or no table).
    """
    delta = open_table(lake, layer, table)
    if delta is None:
        return []
    partitions = small_file_partitions(
        delta, max_small_files=max_small_files, small_file_bytes=small_file_bytes
    )
    return [
        optimize_table(
            lake,
            layer,
            table,
            target_size=target_size,
            vacuum=False,
            partition_filters=partition or None,
            row_group_rows=row_group_rows_for(table),
        )
        for partition in partitions
    ]
