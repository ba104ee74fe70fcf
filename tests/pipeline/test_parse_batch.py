"""Batch parsing of small files gives exactly what per-file parsing gives, or steps aside."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pytest

from crypto_lakehouse.pipeline.parse import ParsedFile, ParseTask, parse_to_stage
from crypto_lakehouse.pipeline.parse_batch import BatchRejected, parse_batch_to_files
from tests.servers.archive_files import make_zip
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def _task(tmp_path: Path, day: str, body: str) -> ParseTask:
    """Write one daily kline zip and describe its parse."""
    name = f"ETHUSDT-1m-{day}"
    path = tmp_path / f"{name}.zip"
    path.write_bytes(make_zip(f"{name}.csv", body.encode()))
    key = f"data/spot/daily/klines/ETHUSDT/1m/{name}.zip"
    return ParseTask("spot", "klines", key, "ETHUSDT", "1m", "daily", day, 1, str(path),
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


def test_batch_equals_per_file_parse(tmp_path: Path) -> None:
    """ms and µs files, with a duplicated row, give the same rows and stats either way."""
    days = ["2024-12-30", "2024-12-31", "2025-01-01"]
    bodies = [kline_csv(days[0]), kline_csv(days[1]), kline_csv(days[2], unit="us")]
    lines = bodies[1].splitlines()
    bodies[1] = "\n".join([*lines[:10], lines[9], *lines[10:]]) + "\n"
    tasks = [_task(tmp_path, d, b) for d, b in zip(days, bodies, strict=True)]
    batch, rows = _written(tmp_path, tasks)
    singles = [parse_to_stage(t) for t in tasks]
    for got, want in zip(batch, singles, strict=True):
        assert (got.rows, got.duplicates, got.min_time, got.max_time, got.time_unit) == (
            want.rows, want.duplicates, want.min_time, want.max_time, want.time_unit
        )  # fmt: skip
    assert [b.duplicates for b in batch] == [0, 1, 0]
    together = pl.concat([_read(s.task.staged_path) for s in singles])
    assert rows.select(together.columns).equals(together)


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
