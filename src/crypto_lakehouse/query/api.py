"""The Python API for notebooks: `Lake(...).klines(...)`, `.sql(...)`, `.table(...)`, `.tables()`.

One `QueryEngine` (one DuckDB connection) serves every call of a `Lake`; it caches each
table's Delta snapshot and re-reads it only when the table's version moves, so repeated
queries pay neither the log replay nor the view registration again.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads

from crypto_lakehouse.config import load_settings
from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.query.engine import LAYERS, QueryEngine
from crypto_lakehouse.storage.format_version import check_format
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from crypto_lakehouse.config import Settings

OutputKind = Literal["polars", "pandas", "arrow"]
TimeBound = date | datetime | str | None
_ARROW_TS = pa.timestamp("us", tz="UTC")


def to_utc(value: date | datetime | str) -> datetime:
    """Return a bound as an aware UTC instant; dates and naive values are taken as UTC.

    Example: `"2024-01-02"` → `2024-01-02 00:00:00+00:00`.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def split_name(name: str) -> tuple[str, str]:
    """Split `silver.spot_klines` (or bare `spot_klines`, meaning silver) into layer and table."""
    layer, _, table = name.rpartition(".")
    layer = layer.lower() or "silver"
    if layer not in LAYERS or not table:
        raise ConfigurationError(f"table name {name!r} must be <table> or one of "
                                 f"{', '.join(f'{la}.<table>' for la in LAYERS)}")  # fmt: skip
    return layer, table


class Lake:
    """A lakehouse opened for reading from Python (a notebook, a script).

    Example:
        >>> lake = Lake("./lake")
        >>> bars = lake.klines("um", "BTCUSDT", "1m", "2024-01-01", "2024-01-02")
        >>> lake.sql("SELECT symbol, count(*) FROM silver.um_klines GROUP BY 1")

    The constructor reads no settings: the root is given, and an S3 root takes its
    credentials from `storage_options` over the standard `AWS_*` variables. `Lake.from_env()`
    is the one place the Python API reads `LAKEHOUSE_*`.

    The `Lake` owns one DuckDB connection; `close()` it (or use `with Lake(...) as lake:`)
    when done. It is safe to share between threads: queries run one at a time. The lake's
    format is checked on the first query: a lake written by a newer version is refused.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        """Open the lake at a path or `s3://bucket/prefix` (nothing is read until a query).

        Args:
            root: A local path (relative to the working directory) or `s3://bucket/prefix`.
            storage_options: delta-rs/S3 options (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
                ...) over those taken from the `AWS_*` environment variables.

        Raises:
            ConfigurationError: the root is neither a path nor an S3 URI with a bucket.
        """
        found = LakeRoot.at(os.fspath(root))
        options = {**found.storage_options, **(storage_options or {})}
        self._root = LakeRoot(found.uri, options)
        self._engine: QueryEngine | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        """Open the lake at `settings.root` (settings the caller has already read)."""
        return cls(settings.root)

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> Lake:
        """Open the lake at `root`, else at `LAKEHOUSE_ROOT`, else at `./lake`.

        This is the one place the Python API reads the `LAKEHOUSE_*` environment; the
        constructor never does.
        """
        return cls.from_settings(load_settings(root=None if root is None else os.fspath(root)))

    def __repr__(self) -> str:
        return f"Lake({self._root.uri!r})"

    def __enter__(self) -> Lake:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def uri(self) -> str:
        """Return the lake root: an absolute path or `s3://bucket/prefix`."""
        return self._root.uri

    @property
    def storage_options(self) -> dict[str, str]:
        """Return a copy of the S3 options the lake reads with (empty on local disk)."""
        return dict(self._root.storage_options)

    @property
    def engine(self) -> QueryEngine:
        """Return the shared query engine, starting it on first use."""
        if self._engine is None:
            check_format(self._root, write=False)
            self._engine = QueryEngine(self._root)
        return self._engine

    def close(self) -> None:
        """Close the DuckDB connection; the next call opens a new one."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def sql(self, query: str) -> pl.DataFrame:
        """Run SQL over the lake; tables are `silver.<table>` and `gold.<table>`.

        Raises:
            ConfigurationError: a referenced table does not exist, or the SQL is invalid.
        """
        return self.engine.sql(query)

    def tables(self) -> list[str]:
        """Return every table of the lake as `layer.table`, sorted."""
        return sorted(f"{layer}.{table}" for layer, table in self.engine.tables())

    def table(self, name: str) -> pl.LazyFrame:
        """Return a table's current snapshot as a lazy polars frame (filters are pushed down).

        Args:
            name: `silver.spot_klines`, `gold.<table>`, or a bare silver table name.

        Raises:
            ConfigurationError: the table does not exist.
        """
        layer, table = split_name(name)
        return pl.scan_pyarrow_dataset(self.engine.dataset(layer, table))

    @overload
    def klines(
        self,
        market: str,
        symbol: str,
        interval: str = ...,
        start: TimeBound = ...,
        end: TimeBound = ...,
        *,
        as_: Literal["polars"] = ...,
    ) -> pl.DataFrame: ...
    @overload
    def klines(
        self,
        market: str,
        symbol: str,
        interval: str = ...,
        start: TimeBound = ...,
        end: TimeBound = ...,
        *,
        as_: Literal["pandas"],
    ) -> Any: ...
    @overload
    def klines(
        self,
        market: str,
        symbol: str,
        interval: str = ...,
        start: TimeBound = ...,
        end: TimeBound = ...,
        *,
        as_: Literal["arrow"],
    ) -> pa.Table: ...

    def klines(
        self,
        market: str,
        symbol: str,
        interval: str = "1m",
        start: TimeBound = None,
        end: TimeBound = None,
        *,
        as_: OutputKind = "polars",
    ) -> Any:
        """Return one symbol's bars of one interval in [start, end), ordered by open time.

        Args:
            market: `spot`, `um` or `cm` (reads `silver.<market>_klines`).
            symbol: e.g. `BTCUSDT` (case-insensitive).
            interval: e.g. `1m`, `1h`.
            start: first open time included; a date or `YYYY-MM-DD` means midnight UTC.
            end: first open time excluded (half-open range); None means up to the latest bar.
            as_: `polars` (default), `pandas` or `arrow`.

        Returns:
            The bars with every silver column; an empty frame when nothing matches.

        Raises:
            KeyError: the market has no klines.
            ConfigurationError: the table does not exist yet, or pandas is asked for but missing.
        """
        dataset = get_dataset(market, "klines")
        snapshot = self.engine.dataset("silver", dataset.table)
        predicate = (pads.field("symbol") == symbol.upper()) & (pads.field("interval") == interval)
        column = pads.field(dataset.time_column)
        if start is not None:
            predicate &= column >= pa.scalar(to_utc(start), type=_ARROW_TS)
        if end is not None:
            predicate &= column < pa.scalar(to_utc(end), type=_ARROW_TS)
        table = snapshot.to_table(filter=predicate).sort_by(dataset.time_column)
        return _convert(table, as_)


def _convert(table: pa.Table, as_: OutputKind) -> Any:
    """Return an Arrow table as the kind of frame asked for."""
    if as_ == "arrow":
        return table
    if as_ == "polars":
        return pl.from_arrow(table)
    if as_ == "pandas":
        try:
            return table.to_pandas()
        except ImportError as exc:
            raise ConfigurationError(
                "as_='pandas' needs pandas: pip install pandas (or use as_='polars')"
            ) from exc
    raise ConfigurationError(f"as_ must be polars, pandas or arrow, not {as_!r}")
