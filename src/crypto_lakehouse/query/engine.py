"""SQL over the lake: DuckDB reading Delta snapshots as Arrow datasets.

Tables are addressable as `silver.<table>` and `gold.<table>`. Each table is registered once
per connection and re-registered only when its Delta version changes, so repeated queries
pay neither the log replay nor the registration again. DuckDB pushes filters and projections
down into the Arrow dataset scan, which prunes Parquet files by partition and statistics.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

import duckdb
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from crypto_lakehouse.exceptions import ConfigurationError

if TYPE_CHECKING:
    from crypto_lakehouse.storage.lake import Lake

LAYERS = ("silver", "gold")
_REFERENCE = re.compile(r"\b(silver|gold)\s*\.\s*\"?([A-Za-z_][A-Za-z0-9_]*)\"?", re.IGNORECASE)


class QueryEngine:
    """One DuckDB connection over one lake; safe to share between threads."""

    def __init__(self, lake: Lake) -> None:
        self._lake = lake
        self._con = duckdb.connect()
        for layer in LAYERS:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        self._tables: dict[tuple[str, str], DeltaTable] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the DuckDB connection."""
        self._con.close()

    def tables(self) -> list[tuple[str, str]]:
        """Return every (layer, table) that exists in the lake."""
        found = []
        for layer in LAYERS:
            for name in self._lake.list_dirs(layer):
                if not name.startswith("_"):
                    found.append((layer, name))
        return found

    def _refresh(self, layer: str, table: str) -> None:
        """Register a table, or re-register it when its Delta version moved."""
        ident = (layer, table)
        delta = self._tables.get(ident)
        if delta is None:
            try:
                delta = DeltaTable(
                    self._lake.table_uri(layer, table),
                    storage_options=self._lake.storage_options,
                )
            except TableNotFoundError:
                known = ", ".join(f"{la}.{t}" for la, t in self.tables()) or "none yet"
                raise ConfigurationError(
                    f"table {layer}.{table} does not exist in {self._lake.uri}; known: {known}"
                ) from None
            self._tables[ident] = delta
        else:
            delta.update_incremental()
        version = delta.version()
        if self._versions.get(ident) == version:
            return
        view = f"__{layer}__{table}"
        self._con.register(view, delta.to_pyarrow_dataset())
        self._con.execute(f'CREATE OR REPLACE VIEW {layer}."{table}" AS SELECT * FROM "{view}"')
        self._versions[ident] = version

    def sql(self, query: str) -> pl.DataFrame:
        """Run a query and return the result as a polars frame.

        Raises:
            ConfigurationError: a referenced table does not exist, or the SQL is invalid.
        """
        with self._lock:
            for layer, table in {(m[0].lower(), m[1]) for m in _REFERENCE.findall(query)}:
                self._refresh(layer, table)
            try:
                return pl.from_arrow(self._con.sql(query).to_arrow_table())  # type: ignore[return-value]
            except duckdb.Error as exc:
                raise ConfigurationError(f"query failed: {exc}") from exc
