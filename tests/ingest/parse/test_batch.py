"""Batch parsing of small files gives exactly what per-file parsing gives, or steps aside."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from crypto_lakehouse.exceptions import StorageError
from crypto_lakehouse.ingest.parse import batch as parse_batch
from crypto_lakehouse.ingest.parse.batch import (
    BatchFile,
    BatchRejected,
    _line_counts,
    parse_batch_to_files,
    store_and_parse_batch,
)
from crypto_lakehouse.ingest.parse.file import ParsedFile, ParseTask, parse_to_stage
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import make_zip
from tests.servers.synthetic import kline_csv

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def _task(tmp_path: Path, day: str, body: str, symbol: str = "ETHUSDT") -> ParseTask:
    """Write one daily kline zip and describe its parse."""
    name = f"{symbol}-1m-{day}"
    path = tmp_path / f"{name}.zip"
    path.write_bytes(make_zip(f"{name}.csv", body.encode()))
    key = f"data/spot/daily/klines/{symbol}/1m/{name}.zip"
    return ParseTask("spot", "klines", key, symbol, "1m", "daily", day, 1, str(path),
                     str(tmp_path / f"{name}.arrow"), 1 << 20, NOW)  # fmt: skip


def _read(path: str) -> pl.DataFrame:
    """Read a staged Arrow IPC file."""
    with pa.memory_map(path) as source:
        frame = pl.from_arrow(pa.ipc.open_file(source).read_all())
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String))


def _written(tmp_path: Path, tasks: list[ParseTask]) -> tuple[list[ParsedFile], pl.DataFrame]:
    """Parse a batch into a table folder; return its results and its rows, partitions added."""
    table = tmp_path / "table"
    writes = parse_batch_to_files(tasks, str(table), {})
    frames = [
        pl.read_parquet(table / f.path).with_columns(
            *(pl.lit(v).alias(k) for k, v in f.partition_values.items())
        )
        for f in writes[0].files
    ]
    frame = pl.concat(frames).with_columns(pl.col(pl.Categorical).cast(pl.String))
    return [w.parsed for w in writes], frame


def _same_as_per_file(
    tmp_path: Path, tasks: list[ParseTask]
) -> tuple[list[ParsedFile], pl.DataFrame]:
    """Assert a batch gives each file's per-file stats and rows; return the batch's results."""
    batch, rows = _written(tmp_path, tasks)
    singles = [parse_to_stage(t) for t in tasks]
    for got, want in zip(batch, singles, strict=True):
        assert (got.rows, got.duplicates, got.min_time, got.max_time, got.time_unit) == (
            want.rows, want.duplicates, want.min_time, want.max_time, want.time_unit
        )  # fmt: skip
    together = pl.concat([_read(s.task.staged_path) for s in singles])
    key = ["symbol", "open_time"]
    assert rows.select(together.columns).sort(key).equals(together.sort(key))
    return batch, rows


@pytest.mark.req("R2.1")
def test_batch_equals_per_file_parse(tmp_path: Path) -> None:
    """ms and µs files, with a duplicated row, give the same rows and stats either way."""
    days = ["2024-12-30", "2024-12-31", "2025-01-01"]
    bodies = [kline_csv(days[0]), kline_csv(days[1]), kline_csv(days[2], unit="us")]
    lines = bodies[1].splitlines()
    bodies[1] = "\n".join([*lines[:10], lines[9], *lines[10:]]) + "\n"
    tasks = [_task(tmp_path, d, b) for d, b in zip(days, bodies, strict=True)]
    batch, _ = _same_as_per_file(tmp_path, tasks)
    assert [b.duplicates for b in batch] == [0, 1, 0]


@pytest.mark.req("R5.3")
def test_batch_steps_aside_for_a_bad_file(tmp_path: Path) -> None:
    """A malformed cell or a row outside its day rejects the batch instead of guessing."""
    good = _task(tmp_path, "2020-01-01", kline_csv("2020-01-01", minutes=10))
    bad_cell = _task(tmp_path, "2020-01-02", kline_csv("2020-01-02", minutes=10)
                     .replace(",42,", ",4x2,", 1))  # fmt: skip
    with pytest.raises(BatchRejected):
        parse_batch_to_files([good, bad_cell], str(tmp_path / "b1"), {})
    wrong_day = _task(tmp_path, "2020-01-05", kline_csv("2020-01-03", minutes=10))
    with pytest.raises(BatchRejected, match="outside"):
        parse_batch_to_files([good, wrong_day], str(tmp_path / "b2"), {})


def test_a_row_outside_its_day_rejects_the_batch_whatever_the_row_order(
    tmp_path: Path,
) -> None:
    """A row of the next day's second minute, last in a rising file or first in a falling one,
    rejects the batch: the period check reads each file's bounds, not only its first row."""
    good = _task(tmp_path, "2020-01-01", kline_csv("2020-01-01", minutes=10))
    day = kline_csv("2020-01-02", minutes=10).splitlines()
    late = kline_csv("2020-01-03", minutes=2).splitlines()[1]
    rising = _task(tmp_path, "2020-01-02", "\n".join([*day, late]) + "\n")
    with pytest.raises(BatchRejected, match="outside"):
        parse_batch_to_files([good, rising], str(tmp_path / "b1"), {})
    falling = _task(tmp_path, "2020-01-02", "\n".join(reversed([*day, late])) + "\n")
    with pytest.raises(BatchRejected, match="outside"):
        parse_batch_to_files([good, falling], str(tmp_path / "b2"), {})
    at_midnight = kline_csv("2020-01-03", minutes=1).splitlines()[0]  # the period's end: kept
    ends = _task(tmp_path, "2020-01-02", "\n".join([*day, at_midnight]) + "\n")
    assert [w.parsed.rows for w in parse_batch_to_files([good, ends], str(tmp_path / "b3"), {})
            ] == [10, 11]  # fmt: skip


def test_rows_out_of_order_in_a_file_give_per_file_results(tmp_path: Path) -> None:
    """A file written newest first takes the exact path: same stats, same rows."""
    backwards = "\n".join(reversed(kline_csv("2021-03-02", minutes=30).splitlines())) + "\n"
    tasks = [_task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=30)),
             _task(tmp_path, "2021-03-02", backwards)]  # fmt: skip
    _, rows = _same_as_per_file(tmp_path, tasks)
    assert rows.height == 60


def test_interleaved_symbols_and_an_empty_file_land_in_their_partitions(
    tmp_path: Path,
) -> None:
    """Files of two symbols out of key order, one of them empty, give one file per symbol."""
    tasks = [_task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=5)),
             _task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=7), "BTCUSDT"),
             _task(tmp_path, "2021-03-02", ""),
             _task(tmp_path, "2021-03-03", kline_csv("2021-03-03", minutes=5))]  # fmt: skip
    writes = parse_batch_to_files(tasks, str(tmp_path / "table"), {})
    by_symbol = {f.partition_values["symbol"]: f for f in writes[0].files}
    assert sorted(by_symbol) == ["BTCUSDT", "ETHUSDT"]
    assert json.loads(by_symbol["ETHUSDT"].stats)["numRecords"] == 10
    assert json.loads(by_symbol["BTCUSDT"].stats)["numRecords"] == 7
    assert [w.parsed.rows for w in writes] == [5, 7, 0, 5]
    assert writes[2].parsed.min_time is None
    _same_as_per_file(tmp_path / "again", [t for t in tasks if t.stamp != "2021-03-02"])


def test_units_mixed_inside_one_file_reject_the_batch(tmp_path: Path) -> None:
    """ms rows followed by µs rows in the same file are sent to the per-file parser."""
    ms = kline_csv("2025-01-02", minutes=10).splitlines()
    us = kline_csv("2025-01-02", unit="us", minutes=20).splitlines()[10:]
    mixed = _task(tmp_path, "2025-01-02", "\n".join(ms + us) + "\n")
    with pytest.raises(BatchRejected, match="mixed"):
        parse_batch_to_files([mixed], str(tmp_path / "t"), {})


def test_in_memory_zips_go_to_bronze_before_the_parse(tmp_path: Path) -> None:
    """Bytes held from the download are stored at their bronze path, then parsed."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    task = _task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=5))
    data = Path(task.zip_path).read_bytes()
    Path(task.zip_path).unlink()  # the parse must use the bytes, not the path
    bronze = "bronze/binance/data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2021-03-01.zip"
    table = lake.table_uri("silver", "spot_klines")
    writes = store_and_parse_batch([BatchFile(task, data, bronze)], lake, table)
    assert (tmp_path / "lake" / bronze).read_bytes() == data
    assert writes[0].parsed.rows == 5


def test_bronze_is_written_while_the_batch_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bronze write runs beside the parse, not before it: it waits here for the parse."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    task = _task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=5))
    data = Path(task.zip_path).read_bytes()
    parsing = threading.Event()
    real_parse, real_put = parse_batch._parse_batch, LakeRoot.put_bytes

    def parse(*args: Any) -> Any:
        parsing.set()
        return real_parse(*args)

    def put_after_parse_started(self: LakeRoot, body: bytes, path: str) -> None:
        assert parsing.wait(10), "the bronze write waited for a parse that never started"
        real_put(self, body, path)

    monkeypatch.setattr(parse_batch, "_parse_batch", parse)
    monkeypatch.setattr(LakeRoot, "put_bytes", put_after_parse_started)
    bronze = "bronze/binance/data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2021-03-01.zip"
    writes = store_and_parse_batch(
        [BatchFile(task, data, bronze)], lake, lake.table_uri("silver", "spot_klines")
    )
    assert (tmp_path / "lake" / bronze).read_bytes() == data
    assert writes[0].parsed.rows == 5


def test_a_refused_bronze_write_stops_the_batch_before_any_silver_file(
    tmp_path: Path,
) -> None:
    """When bronze cannot be written, nothing is parsed or left in the table folder."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    (tmp_path / "lake" / "bronze").mkdir(parents=True)
    (tmp_path / "lake" / "bronze" / "blocked").write_text("a file where a folder must go")
    task = _task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=5))
    data = Path(task.zip_path).read_bytes()
    table = lake.table_uri("silver", "spot_klines")
    with pytest.raises(StorageError, match=r"bronze/blocked/x\.zip"):
        store_and_parse_batch([BatchFile(task, data, "bronze/blocked/x.zip")], lake, table)
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_line_counts_follow_each_body_as_the_scratch_mask_grows() -> None:
    """Counts are per body, empty bodies included, whatever body sizes came before."""
    small = [b"1\n2\n", b"", b"3\n"]
    assert _line_counts(b"".join(small), small) == [2, 0, 1]
    large = [b"x\n" * 50_000, b"y\n" * 3, b"z\n" * 70_000]
    assert _line_counts(b"".join(large), large) == [50_000, 3, 70_000]
    assert _line_counts(b"".join(small), small) == [2, 0, 1]


def test_a_last_line_without_its_newline_stays_in_its_own_file(tmp_path: Path) -> None:
    """Joined, an unterminated last line would merge with the next file's first line."""
    tasks = [
        _task(tmp_path, "2024-03-01", kline_csv("2024-03-01", minutes=3).rstrip("\n")),
        _task(tmp_path, "2024-03-02", kline_csv("2024-03-02", minutes=2)),
    ]
    batch, rows = _same_as_per_file(tmp_path, tasks)
    assert [parsed.rows for parsed in batch] == [3, 2]
    assert rows.height == 5


def test_a_blank_line_or_a_quoted_line_break_sends_the_batch_to_per_file_parsing(
    tmp_path: Path,
) -> None:
    """Rows must map to files by line: anything that breaks that rejects the batch, unwritten."""
    lines = kline_csv("2024-03-01", minutes=3).splitlines()
    second = _task(tmp_path, "2024-03-02", kline_csv("2024-03-02", minutes=2))
    blank = "\n".join([lines[0], "", *lines[1:]]) + "\n"
    with pytest.raises(BatchRejected, match="nulls"):  # a blank line is a row of empty cells
        parse_batch_to_files([_task(tmp_path, "2024-03-01", blank), second],
                             str(tmp_path / "table"), {})  # fmt: skip
    quoted = "\n".join([*lines[:2], lines[2].rsplit(",", 1)[0] + ',"0\n0"']) + "\n"
    with pytest.raises(BatchRejected, match="rows and lines differ"):
        parse_batch_to_files([_task(tmp_path, "2024-03-01", quoted), second],
                             str(tmp_path / "table"), {})  # fmt: skip
    assert not list((tmp_path / "table").rglob("*.parquet"))


def test_each_partition_file_has_the_bounds_of_its_own_rows(tmp_path: Path) -> None:
    """A batch of two symbols: each file's Delta statistics cover its own keys and times only.

    The bronze key reaches Parquet as a dictionary of every key in the batch; its bounds
    must still be those of the keys the file's rows use.
    """
    tasks = [_task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=5), "BTCUSDT"),
             _task(tmp_path, "2021-03-02", kline_csv("2021-03-02", minutes=5), "BTCUSDT"),
             _task(tmp_path, "2021-03-01", kline_csv("2021-03-01", minutes=3)),
             _task(tmp_path, "2021-03-03", kline_csv("2021-03-03", minutes=3))]  # fmt: skip
    writes = parse_batch_to_files(tasks, str(tmp_path / "table"), {})
    stats = {f.partition_values["symbol"]: json.loads(f.stats) for f in writes[0].files}
    for symbol, first, last in (("BTCUSDT", "2021-03-01", "2021-03-02"),
                                ("ETHUSDT", "2021-03-01", "2021-03-03")):  # fmt: skip
        low, high = stats[symbol]["minValues"], stats[symbol]["maxValues"]
        assert low["_bronze_key"].endswith(f"/{symbol}-1m-{first}.zip")
        assert high["_bronze_key"].endswith(f"/{symbol}-1m-{last}.zip")
        assert low["open_time"].startswith(first)
        assert high["open_time"].startswith(last)
        assert (low["_source"], high["_source"]) == ("archive", "archive")
        assert stats[symbol]["nullCount"]["_bronze_key"] == 0
