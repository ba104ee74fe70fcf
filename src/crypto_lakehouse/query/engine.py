"""SQL over the lake: DuckDB reading Delta snapshots as Arrow datasets.

Tables are addressable as `silver.<table>` and `gold.<table>`. Each table is registered once
per connection and re-registered only when its Delta version changes, so repeated queries
pay neither the log replay nor the registration again. DuckDB pushes filters and projections
down into the Arrow dataset scan, which prunes Parquet files by partition and statistics.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from crypto_lakehouse.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow.dataset as pads

    from crypto_lakehouse.storage.root import LakeRoot

LAYERS = ("silver", "gold")
_REFERENCE = re.compile(r"\b(silver|gold)\s*\.\s*\"?([A-Za-z_][A-Za-z0-9_]*)\"?", re.IGNORECASE)


class QueryEngine:
    """One DuckDB connection over one lake; safe to share between threads."""

    def __init__(self, lake: LakeRoot) -> None:
        self._lake = lake
        self._con = duckdb.connect()
        # Silver times are UTC; without this DuckDB renders TIMESTAMPTZ in the host's zone.
        self._con.execute("SET TimeZone = 'UTC'")
        for layer in LAYERS:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        self._tables: dict[tuple[str, str], DeltaTable] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._datasets: dict[tuple[str, str], pads.Dataset] = {}
        self._lock = threading.RLock()

    @property
    def lake(self) -> LakeRoot:
        """Return the lake this engine reads."""
        return self._lake

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
        dataset = delta.to_pyarrow_dataset()
        self._con.register(view, dataset)
        self._con.execute(f'CREATE OR REPLACE VIEW {layer}."{table}" AS SELECT * FROM "{view}"')
        self._datasets[ident] = dataset
        self._versions[ident] = version

    def dataset(self, layer: str, table: str) -> pads.Dataset:
        """Return the table's current snapshot as a pyarrow dataset (cached per Delta version).

        Raises:
            ConfigurationError: the table does not exist.
        """
        with self._lock:
            self._refresh(layer, table)
            return self._datasets[(layer, table)]

    def version(self, layer: str, table: str) -> int:
        """Return the Delta version the engine reads for a table (refreshed first)."""
        with self._lock:
            self._refresh(layer, table)
            return self._versions[(layer, table)]

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a query (with optional `?` parameters) and return the result as a polars frame.

        Raises:
            ConfigurationError: a referenced table does not exist, or the SQL is invalid.
        """
        with self._lock:
            for layer, table in {(m[0].lower(), m[1]) for m in _REFERENCE.findall(query)}:
                self._refresh(layer, table)
            try:
                if params:
                    arrow = self._con.execute(query, params).to_arrow_table()
                else:
                    relation = self._con.sql(query)
                    if relation is None:  # a statement without a result, e.g. SET
                        return pl.DataFrame()
                    arrow = relation.to_arrow_table()
            except duckdb.Error as exc:
                raise ConfigurationError(f"query failed: {exc}") from exc
            return pl.from_arrow(arrow)  # type: ignore[return-value]
