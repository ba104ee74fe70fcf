"""Tick tables: worker-written Parquet files replace whole day partitions atomically."""

from __future__ import annotations

import asyncio
import json
import zipfile
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest

from crypto_lakehouse.exceptions import StorageError
from crypto_lakehouse.ingest.parse.file import ParseTask
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.write import ticks as direct
from crypto_lakehouse.ingest.write.ticks import split_days, write_tick_files
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import make_zip, publish

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings

KEY = "data/futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip"
REQUEST = IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), start=date(2026, 5, 8),
                        end=date(2026, 5, 8))  # fmt: skip


def _csv(archive_root: Path) -> list[str]:
    """Return the real fixture's CSV lines (header first)."""
    with zipfile.ZipFile(archive_root / KEY) as archive:
        return archive.read(archive.namelist()[0]).decode().splitlines()


def _counts(root: str) -> tuple[int, int, int]:
    """Return rows, distinct ids and active data files of the tick table."""
    engine = QueryEngine(LakeRoot.at(root))
    row = engine.sql(
        "SELECT count(*), count(DISTINCT agg_trade_id), count(DISTINCT _revision) "
        "FROM silver.cm_agg_trades"
    ).row(0)
    return int(row[0]), int(row[1]), int(row[2])


def test_republished_tick_file_replaces_its_day(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A re-published aggTrades day (rows dropped) replaces the day: no duplicates, no leftovers."""
    root = str(tmp_path / "lake")
    settings = settings_for(root)
    assert asyncio.run(ingest(REQUEST, settings)).rows_loaded == 105_280
    lines = _csv(archive_root)
    publish(archive_root, KEY, "\n".join(lines[:-1000]) + "\n")
    again = asyncio.run(ingest(REQUEST, settings))
    assert [f.revision for f in again.loaded] == [2]
    assert _counts(root) == (104_280, 104_280, 1)


def test_bad_tick_file_leaves_table_and_folder_clean(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A malformed row deep in the file is quarantined and no data file of it is committed."""
    root = str(tmp_path / "lake")
    lines = _csv(archive_root)
    lines[90_000] = lines[90_000].replace("false", "nope", 1).replace("true", "nope", 1)
    publish(archive_root, KEY, "\n".join(lines) + "\n")
    result = asyncio.run(ingest(REQUEST, settings_for(root, parse_batch_mb=1)))
    assert [f.outcome for f in result.files] == ["quarantined"]
    assert "line 90001" in result.files[0].reason
    table = tmp_path / "lake" / "silver" / "cm_agg_trades"
    assert not list(table.rglob("*.parquet"))


def test_split_days_slices_ordered_chunks() -> None:
    """A time-ordered chunk spanning midnight splits into one slice per day."""
    frame = pl.DataFrame({"date": [date(2024, 1, 1)] * 2 + [date(2024, 1, 2)] * 3, "v": range(5)})
    parts = split_days(frame)
    assert {d: p["v"].to_list() for d, p in parts.items()} == {
        date(2024, 1, 1): [0, 1],
        date(2024, 1, 2): [2, 3, 4],
    }
    shuffled = frame.reverse()
    assert {d: sorted(p["v"].to_list()) for d, p in split_days(shuffled).items()} == {
        date(2024, 1, 1): [0, 1],
        date(2024, 1, 2): [2, 3, 4],
    }


def _fails_then_loads(
    root: str,
    settings_for: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    reason_part: str,
) -> None:
    """Ingest with the worker's tick write raising `error`: the file fails, naming it; a
    re-run with the real worker loads it."""
    from crypto_lakehouse.ingest import file_steps

    def failing(*args: object) -> object:
        raise error

    real = file_steps.write_tick_files
    monkeypatch.setattr(file_steps, "write_tick_files", failing)
    result = asyncio.run(ingest(REQUEST, settings_for(root)))
    assert [(f.outcome, reason_part in (f.reason or "")) for f in result.files] == [
        ("failed", True)
    ]
    monkeypatch.setattr(file_steps, "write_tick_files", real)
    again = asyncio.run(ingest(REQUEST, settings_for(root)))
    assert [f.outcome for f in again.files] == ["loaded"]


def test_lake_refusing_a_worker_write_fails_the_file_not_the_run(
    tmp_path: Path, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError from the worker's Parquet write is the file's outcome; a re-run loads it."""
    root = str(tmp_path / "lake")
    refused = OSError("When uploading part for key 'silver/...': AWS Error SLOW_DOWN")
    _fails_then_loads(root, settings_for, monkeypatch, refused, "SLOW_DOWN")
    assert _counts(root) == (105_280, 105_280, 1)


def test_a_bronze_object_the_worker_cannot_read_fails_the_file_not_the_run(
    tmp_path: Path, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote worker's task names a bronze object; unreadable, it is the file's outcome."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    task = replace(
        _monthly_agg_trades(tmp_path, days=1, rows_per_day=10),
        zip_path="", bronze=(lake, "bronze/binance/absent.zip"),
    )  # fmt: skip
    with pytest.raises(StorageError, match=r"bronze/binance/absent\.zip") as caught:
        write_tick_files(task, lake.table_uri("silver", "um_agg_trades"), {})
    assert not (tmp_path / "lake" / "silver").exists()  # nothing half-written
    _fails_then_loads(str(tmp_path / "run"), settings_for, monkeypatch, caught.value, "absent.zip")


def _monthly_agg_trades(tmp_path: Path, days: int, rows_per_day: int) -> ParseTask:
    """Write a UM monthly aggTrades zip of `days` days and return its parse task (small chunks)."""
    lines = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
             "is_buyer_maker"]  # fmt: skip
    start = datetime(2024, 1, 1, tzinfo=UTC)
    trade = 0
    for day in range(days):
        midnight = int((start + timedelta(days=day)).timestamp() * 1000)
        for row in range(rows_per_day):
            trade += 1
            lines.append(f"{trade},{42000 + row % 97}.5,0.0{row % 9 + 1},{trade},{trade},"
                         f"{midnight + row * 1000},{'true' if row % 2 else 'false'}")  # fmt: skip
    name = "BTCUSDT-aggTrades-2024-01"
    zip_path = tmp_path / f"{name}.zip"
    zip_path.write_bytes(make_zip(f"{name}.csv", ("\n".join(lines) + "\n").encode()))
    return ParseTask(
        market="um", data_type="aggTrades",
        key=f"data/futures/um/monthly/aggTrades/BTCUSDT/{name}.zip", symbol="BTCUSDT",
        interval=None, period="monthly", stamp="2024-01", revision=1, zip_path=str(zip_path),
        staged_path="", chunk_bytes=64 << 10, ingested_at=datetime.now(UTC),
    )  # fmt: skip


def test_a_multi_day_file_is_encoded_on_two_threads_one_file_per_day(tmp_path: Path) -> None:
    """Days alternate between the encoders; each day still gets one complete, ordered file."""
    task = _monthly_agg_trades(tmp_path, days=5, rows_per_day=3000)
    table = tmp_path / "table"
    write = write_tick_files(task, str(table), {})
    assert [f.partition_values["date"] for f in write.files] == [
        f"2024-01-0{day}" for day in range(1, 6)
    ]
    assert write.parsed.rows == 15_000
    for data_file in write.files:
        frame = pl.read_parquet(table / data_file.path)
        assert frame.height == 3000 == json.loads(data_file.stats)["numRecords"]
        assert frame["agg_trade_id"].is_sorted()
        assert frame["transact_time"].dt.date().unique().to_list() == [
            date.fromisoformat(data_file.partition_values["date"])
        ]


def test_a_failing_encoder_stops_the_file_and_leaves_no_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An encode error on one thread fails the file; both threads' files are removed."""
    task = _monthly_agg_trades(tmp_path, days=5, rows_per_day=3000)
    real = direct._encode

    def encode(*args: Any) -> None:
        parts = args[3]
        if date(2024, 1, 4) in parts:
            raise OSError("disk full")
        real(*args)

    monkeypatch.setattr(direct, "_encode", encode)
    table = tmp_path / "table"
    with pytest.raises(OSError, match="disk full"):
        write_tick_files(task, str(table), {})
    assert not list(table.rglob("*.parquet"))


def test_partition_file_statistics_cover_categorical_and_numeric_columns(tmp_path: Path) -> None:
    """A written file's Delta stats hold each column's bounds, categoricals as their text."""
    frame = pl.DataFrame(
        {
            "symbol": ["BTCUSDT"] * 4,
            "price": [2.5, 1.0, None, 4.0],
            "_bronze_key": pl.Series(["k/b.zip", "k/a.zip", "k/c.zip", "k/a.zip"],
                                     dtype=pl.Categorical),
            "_source": pl.Series(["archive"] * 4, dtype=pl.Categorical),
        }
    )  # fmt: skip
    uri = str(tmp_path / "table")
    (written,) = direct.write_partitions([({"symbol": "BTCUSDT"}, frame)], ["symbol"], uri, {})
    stats = json.loads(written.stats)
    assert stats["numRecords"] == 4
    assert stats["minValues"] == {"price": 1.0, "_bronze_key": "k/a.zip", "_source": "archive"}
    assert stats["maxValues"] == {"price": 4.0, "_bronze_key": "k/c.zip", "_source": "archive"}
    assert stats["nullCount"] == {"price": 1, "_bronze_key": 0, "_source": 0}
    assert (tmp_path / "table" / written.path).exists()


def test_partition_file_statistics_fold_every_row_group(tmp_path: Path) -> None:
    """Bounds span all row groups; NaN is no bound; an all-null column has only its count."""
    first = datetime(2024, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "symbol": ["BTCUSDT"] * 5,
            "open_time": [first + timedelta(minutes=m, microseconds=500) for m in range(5)],
            "price": [3.0, float("nan"), None, -1.5, 7.25],
            "trades": pl.Series([None] * 5, dtype=pl.Int64),
            "_provisional": [False, False, True, False, False],
        }
    )
    uri = str(tmp_path / "table")
    (written,) = direct.write_partitions(
        [({"symbol": "BTCUSDT"}, frame)], ["symbol"], uri, {}, row_group_rows=2
    )
    stats = json.loads(written.stats)
    assert stats["numRecords"] == 5
    # Instants at ms precision, the maximum rounded up past its 500 µs.
    assert stats["minValues"] == {"open_time": "2024-01-01T00:00:00.000Z", "price": -1.5,
                                  "_provisional": False}  # fmt: skip
    assert stats["maxValues"] == {"open_time": "2024-01-01T00:04:00.001Z", "price": 7.25,
                                  "_provisional": True}  # fmt: skip
    assert stats["nullCount"] == {"open_time": 0, "price": 1, "trades": 5, "_provisional": 0}


def test_whole_partition_files_declare_full_columns_required(tmp_path: Path) -> None:
    """A column without nulls is written required (no definition levels); one with nulls not."""
    import pyarrow.parquet as pq

    frame = pl.DataFrame(
        {"symbol": ["BTCUSDT"] * 3, "price": [1.0, None, 2.0], "trades": [1, 2, 3]}
    )
    uri = tmp_path / "table"
    (written,) = direct.write_partitions([({"symbol": "BTCUSDT"}, frame)], ["symbol"], str(uri), {})
    schema = pq.read_schema(uri / written.path)
    assert schema.field("price").nullable
    assert not schema.field("trades").nullable
    assert pq.read_table(uri / written.path).column("price").to_pylist() == [1.0, None, 2.0]


def _codecs(path: Path) -> dict[str, str]:
    """Return each column's compression codec in a Parquet file's first row group."""
    import pyarrow.parquet as pq

    group = pq.ParquetFile(path).metadata.row_group(0)
    return {group.column(i).path_in_schema: group.column(i).compression
            for i in range(group.num_columns)}  # fmt: skip


def test_delta_encoded_columns_are_compressed_in_tick_files_only(tmp_path: Path) -> None:
    """Bar files leave their delta-encoded times and counts uncompressed (snappy finds nothing
    there); tick files compress their ids and times; floats are compressed in both."""
    bars = pl.DataFrame({"symbol": ["BTCUSDT"] * 3, "open_time": [0, 60_000, 120_000],
                         "close": [1.0, 2.0, 1.5]})  # fmt: skip
    uri = tmp_path / "bars"
    (written,) = direct.write_partitions([({"symbol": "BTCUSDT"}, bars)], ["symbol"], str(uri), {})
    assert _codecs(uri / written.path) == {"open_time": "UNCOMPRESSED", "close": "SNAPPY"}
    task = _monthly_agg_trades(tmp_path, days=1, rows_per_day=100)
    table = tmp_path / "ticks"
    tick_codecs = _codecs(table / write_tick_files(task, str(table), {}).files[0].path)
    assert tick_codecs["agg_trade_id"] == tick_codecs["transact_time"] == "SNAPPY"
    assert tick_codecs["price"] == "SNAPPY"


def test_streamed_tick_files_make_only_never_empty_columns_required(tmp_path: Path) -> None:
    """Key, time and lineage are required in a tick file; bounds span all its chunks."""
    import pyarrow.parquet as pq

    task = _monthly_agg_trades(tmp_path, days=2, rows_per_day=3000)  # several 64 KB chunks
    table = tmp_path / "table"
    write = write_tick_files(task, str(table), {})
    first = write.files[0]
    schema = pq.read_schema(table / first.path)
    required = {field.name for field in schema if not field.nullable}
    assert required == {"agg_trade_id", "transact_time", "_source", "_bronze_key",
                        "_revision", "_ingested_at", "_provisional"}  # fmt: skip
    assert pq.ParquetFile(table / first.path).metadata.num_row_groups > 1
    stats = json.loads(first.stats)
    assert (stats["minValues"]["agg_trade_id"], stats["maxValues"]["agg_trade_id"]) == (1, 3000)
    assert stats["minValues"]["_bronze_key"] == stats["maxValues"]["_bronze_key"] == task.key
    assert stats["maxValues"]["transact_time"] == "2024-01-01T00:49:59.000Z"
    assert stats["nullCount"]["price"] == 0
