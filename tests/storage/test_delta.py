"""Delta writes: appends (new columns added when the schemas differ), and commits of files
that workers wrote into a table, with statistics read off each file's footer."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.delta import DataFile, file_statistics
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


def test_file_statistics_leave_out_what_the_footer_does_not_know(tmp_path: Path) -> None:
    """A column written without statistics gets neither bounds nor a null count (not 0)."""
    table = pa.table({"price": [2.0, None, 1.0], "trades": [5, 7, 6]})
    footer: list[pq.FileMetaData] = []
    with pq.ParquetWriter(tmp_path / "f.parquet", table.schema, write_statistics=["price"],
                          metadata_collector=footer) as writer:  # fmt: skip
        writer.write_table(table, row_group_size=2)
    stats = file_statistics(footer[0], table.schema)
    assert stats == {"numRecords": 3, "minValues": {"price": 1.0}, "maxValues": {"price": 2.0},
                     "nullCount": {"price": 1}}  # fmt: skip


def _worker_file(table_dir: Path, day: str, prices: list[float]) -> DataFile:
    """Write one day's Parquet file into a table folder, as a worker does, uncommitted."""
    rows = pa.table({"price": prices})
    relative = f"date={day}/part-{len(prices)}-{day}.parquet"
    (table_dir / f"date={day}").mkdir(parents=True, exist_ok=True)
    footer: list[pq.FileMetaData] = []
    pq.write_table(rows, table_dir / relative, metadata_collector=footer)
    stats = file_statistics(footer[0], rows.schema)
    size = (table_dir / relative).stat().st_size
    return DataFile(relative, size, {"date": day}, json.dumps(stats), 0)


def test_added_files_append_or_replace_exactly_their_partitions(tmp_path: Path) -> None:
    """Appending adds rows; replacing a day leaves the other days' rows alone."""
    lake = LakeRoot.at(str(tmp_path))
    schema = pa.schema([("price", pa.float64()), ("date", pa.string())])
    delta = tables.open_or_create(lake, "silver", "ticks", schema, ["date"])
    table_dir = tmp_path / "silver" / "ticks"
    first = [_worker_file(table_dir, "2024-01-01", [1.0, 2.0]),
             _worker_file(table_dir, "2024-01-02", [3.0])]  # fmt: skip
    tables.add_files(delta, first, partition_by=["date"])
    again = _worker_file(table_dir, "2024-01-02", [4.0, 5.0, 6.0])
    tables.add_files(delta, [again], partition_by=["date"],
                     replacing=[("date", "in", ["2024-01-02"])])  # fmt: skip
    delta.update_incremental()
    rows = delta.to_pyarrow_table().sort_by("price").to_pydict()
    assert rows["price"] == [1.0, 2.0, 4.0, 5.0, 6.0]
    assert delta.version() == 2
    actions = delta.get_add_actions(flatten=True)
    assert sorted(actions.column("num_records").to_pylist()) == [2, 3]
    assert sorted(actions.column("max.price").to_pylist()) == [2.0, 6.0]
