"""Delta appends: as is when the schemas agree, with the new columns added when they do not."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from pathlib import Path


def _rows(keys: list[str], header: list[str] | None = None) -> pa.Table:
    """Manifest-like rows: a key and a count, and a header column when given."""
    columns = {"key": pa.array(keys, pa.large_string()), "rows": pa.array([1] * len(keys))}
    if header is not None:
        columns["header"] = pa.array(header, pa.large_string())
    return pa.table(columns)


def test_append_to_a_table_made_by_an_older_schema_adds_the_new_column(tmp_path: Path) -> None:
    """A table without `header` takes rows that have one: old rows read it as null."""
    lake = LakeRoot.at(str(tmp_path))
    tables.append(lake, "bronze", "events", _rows(["a"]))
    tables.append(lake, "bronze", "events", _rows(["b"], header=["open_time,open"]))
    table = tables.open_table(lake, "bronze", "events")
    assert table is not None
    assert table.version() == 1  # one commit per append, the merge included
    got = table.to_pyarrow_table().sort_by("key").to_pydict()
    assert got == {"key": ["a", "b"], "rows": [1, 1], "header": [None, "open_time,open"]}


def test_appends_of_the_same_schema_keep_every_row(tmp_path: Path) -> None:
    """Three appends of one schema: three versions, every row once."""
    lake = LakeRoot.at(str(tmp_path))
    for key in ("a", "b", "c"):
        tables.append(lake, "bronze", "events", _rows([key], header=[""]))
    table = tables.open_table(lake, "bronze", "events")
    assert table is not None
    assert table.version() == 2
    assert sorted(table.to_pyarrow_table().column("key").to_pylist()) == ["a", "b", "c"]
