"""Name, shape and write the gold quality tables, one (table, symbol, day) slice at a time.

Every quality table is partitioned by the silver `table` it describes and carries `symbol`
and `day`, so recomputing some days of one table replaces exactly those rows in one commit:
the predicate `"table" = T AND ((symbol = S AND day BETWEEN a AND b) OR ...)`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Final

import polars as pl
import pyarrow.compute as pc

from crypto_lakehouse.quality.checks.anomalies import ANOMALIES_SCHEMA
from crypto_lakehouse.quality.checks.coverage import COMPLETENESS_SCHEMA, GAPS_SCHEMA
from crypto_lakehouse.quality.checks.invariants import VIOLATIONS_SCHEMA
from crypto_lakehouse.quality.checks.sequences import HOLES_SCHEMA
from crypto_lakehouse.quality.checks.tables import TIME_DTYPE
from crypto_lakehouse.quality.score import DEDUCTIONS_SCHEMA, SCORES_SCHEMA
from crypto_lakehouse.storage import partitions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.storage.partitions import Runs
    from crypto_lakehouse.storage.root import LakeRoot

GOLD: Final = "gold"
QUALITY: Final = "quality"
DEDUCTIONS: Final = "quality_deductions"
COMPLETENESS: Final = "completeness"
GAPS: Final = "gaps"
HOLES: Final = "sequence_holes"
VIOLATIONS: Final = "violations"
ANOMALIES: Final = "anomalies"
FINGERPRINTS: Final = "format_fingerprints"
RECONCILIATION: Final = "reconciliation"
RECONCILIATION_RUNS: Final = "reconciliation_runs"
PARTITION_BY: Final = ["table"]

QUALITY_SCHEMA: Final = pl.Schema({**SCORES_SCHEMA, "refreshed_at": TIME_DTYPE})
DAY_SCHEMAS: Final[dict[str, pl.Schema]] = {
    QUALITY: QUALITY_SCHEMA,
    DEDUCTIONS: DEDUCTIONS_SCHEMA,
    COMPLETENESS: COMPLETENESS_SCHEMA,
    GAPS: GAPS_SCHEMA,
    HOLES: HOLES_SCHEMA,
    VIOLATIONS: VIOLATIONS_SCHEMA,
    ANOMALIES: ANOMALIES_SCHEMA,
}


def write_days(lake: LakeRoot, name: str, frame: pl.DataFrame, *, table: str, runs: Runs) -> int:
    """Replace one gold quality table's rows for `table` and the runs of days.

    Args:
        lake: The lake.
        name: The gold table, one of `DAY_SCHEMAS`.
        frame: The new rows (cast to the table's schema); rows outside the runs are dropped,
            since the commit may only add rows its predicate matches.
        table: The silver table the rows describe.
        runs: Days per symbol that were recomputed.

    Returns:
        The new Delta version.
    """
    schema = DAY_SCHEMAS[name]
    rows = frame.select(schema.names()).cast(schema).filter(partitions.in_runs(runs))
    predicate = partitions.runs_predicate(runs, fixed={"table": table})
    return partitions.replace_slices(lake, GOLD, name, rows, predicate, partition_by=PARTITION_BY)


def write_table(lake: LakeRoot, name: str, frame: pl.DataFrame, *, table: str) -> int:
    """Replace every row of a gold table that belongs to one silver `table`."""
    rows = frame.filter(pl.col("table") == table)
    predicate = f'"table" = {partitions.literal(table)}'
    return partitions.replace_slices(lake, GOLD, name, rows, predicate, partition_by=PARTITION_BY)


def now() -> datetime:
    """Return the current instant (UTC, µs)."""
    return datetime.now(UTC)


def read_days(
    lake: LakeRoot,
    name: str,
    *,
    tables: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pl.DataFrame:
    """Read a gold quality table's rows for some tables, symbols and an inclusive day range.

    Returns:
        The rows (empty, with the table's schema when known, if the table does not exist).
    """
    parts: list[pc.Expression] = []
    if tables:
        parts.append(pc.field("table").isin(list(tables)))
    if symbols:
        parts.append(pc.field("symbol").isin(list(symbols)))
    if start is not None:
        parts.append(pc.field("day") >= pc.scalar(start))
    if end is not None:
        parts.append(pc.field("day") <= pc.scalar(end))
    filter_expr = None
    for part in parts:
        filter_expr = part if filter_expr is None else filter_expr & part
    frame = partitions.scan(lake, GOLD, name, filter_expr=filter_expr)
    schema = DAY_SCHEMAS.get(name)
    if frame is None:
        return schema.to_frame() if schema is not None else pl.DataFrame()
    return frame.select(schema.names()).cast(schema) if schema is not None else frame
