"""Coverage of the lake: per table rows, symbols, time span, files; manifest health."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import polars as pl
from deltalake import DeltaTable

from crypto_lakehouse.datasets import dataset_for_table
from crypto_lakehouse.storage.bronze import QUARANTINE_STATUSES, Manifest

if TYPE_CHECKING:
    from crypto_lakehouse.query.engine import QueryEngine
    from crypto_lakehouse.storage.root import LakeRoot


@dataclass(frozen=True, slots=True)
class TableStatus:
    """One table's coverage and physical layout."""

    layer: str
    table: str
    version: int
    rows: int
    symbols: int
    first: str
    last: str
    files: int
    bytes: int


def _time_column(table: str) -> str | None:
    """Return the main time column of a silver table, when the registry knows it."""
    try:
        return dataset_for_table(table).time_column
    except KeyError:
        return None


def table_status(lake: LakeRoot, engine: QueryEngine) -> list[TableStatus]:
    """Return coverage and file layout of every table in the lake."""
    out: list[TableStatus] = []
    for layer, table in engine.tables():
        delta = DeltaTable(lake.table_uri(layer, table), storage_options=lake.storage_options)
        actions = pl.DataFrame(delta.get_add_actions(flatten=True))
        column = _time_column(table)
        # Aliased: two bare NULL columns share a name, which polars refuses.
        span = "NULL AS first, NULL AS last"
        if column:
            span = f"min({column})::VARCHAR, max({column})::VARCHAR"
        names = {field.name for field in delta.schema().fields}
        symbols = "count(DISTINCT symbol)" if "symbol" in names else "0"
        stats = engine.sql(f'SELECT count(*), {symbols}, {span} FROM {layer}."{table}"').row(0)
        out.append(
            TableStatus(
                layer=layer,
                table=table,
                version=delta.version(),
                rows=int(stats[0]),
                symbols=int(stats[1]),
                first=str(stats[2] or ""),
                last=str(stats[3] or ""),
                files=actions.height,
                bytes=int(actions["size_bytes"].sum()) if actions.height else 0,
            )
        )
    return out


def manifest_summary(lake: LakeRoot) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (file counts by table and status, current quarantined files with reasons)."""
    current = Manifest(lake).current()
    if not current:
        empty = pl.DataFrame(schema={"table": pl.String, "status": pl.String, "files": pl.Int64})
        return empty, pl.DataFrame(schema={"key": pl.String, "status": pl.String,
                                           "reason": pl.String})  # fmt: skip
    frame = pl.DataFrame([asdict(e) for e in current.values()])
    counts = frame.group_by("table", "status").agg(pl.len().alias("files")).sort("table", "status")
    bad = frame.filter(pl.col("status").is_in(sorted(QUARANTINE_STATUSES | {"failed"})))
    return counts, bad.select("key", "status", "reason").sort("key")
