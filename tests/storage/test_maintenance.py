"""Table maintenance: optimize/z-order/vacuum keep rows and answers, and cut the file count."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pytest
import structlog
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from crypto_lakehouse.cli import app
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.maintenance import (
    auto_compact,
    layout,
    optimize_table,
    small_file_partitions,
    time_columns,
)
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from crypto_lakehouse.config import Settings

ANSWERS = (
    "SELECT * EXCLUDE (_ingested_at) FROM silver.spot_klines ORDER BY open_time",
    "SELECT date_trunc('hour', open_time) AS h, max(high) AS hi, sum(volume) AS v, count(*) AS n "
    "FROM silver.spot_klines GROUP BY 1 ORDER BY 1",
    "SELECT count(*) AS n, count(DISTINCT _bronze_key) AS keys FROM silver.spot_klines",
)


def _ingest_one_commit_per_file(settings_for: Callable[..., Settings], root: str) -> None:
    """Ingest the three real 1m days one run each, so each lands as its own commit and file."""
    settings = settings_for(root)
    for day in (date(2020, 1, 1), date(2020, 1, 2), date(2020, 1, 3)):
        request = IngestRequest("spot", "klines", ("BTCUSDT",), "1m", day, day, period="daily")
        assert asyncio.run(ingest(request, settings)).ok


def _answers(engine: QueryEngine) -> list[pl.DataFrame]:
    """Run the reference queries."""
    return [engine.sql(query) for query in ANSWERS]


@pytest.mark.req("R6.2")
def test_optimize_keeps_rows_and_answers_and_reduces_files(
    lake_root: str, settings_for: Callable[..., Settings]
) -> None:
    """Z-ordered compaction of real ingested files: same answers, fewer files, old ones vacuumed."""
    _ingest_one_commit_per_file(settings_for, lake_root)
    lake = LakeRoot.at(lake_root)
    engine = QueryEngine(lake)
    before = _answers(engine)
    assert layout(tables.open_table(lake, "silver", "spot_klines")).files == 3  # type: ignore[arg-type]

    result = optimize_table(
        lake, "silver", "spot_klines", zorder_by=time_columns("spot_klines"),
        vacuum_retention_hours=0, force_retention=True,
    )  # fmt: skip

    assert result.before.files == 3
    assert result.after.files == 1
    assert result.files_removed == 3
    assert result.after.version > result.before.version
    assert result.zorder_by == ("open_time",)
    assert len(result.vacuumed) == 3  # the pre-optimize files, no longer referenced
    after = _answers(engine)  # the same engine: its snapshot refreshes to the new version
    assert before[0].equals(after[0])  # every row, every column but _ingested_at, in order
    for old, new in zip(before, after, strict=True):
        assert_frame_equal(old, new, check_exact=False, rel_tol=1e-12)  # float sums: any order
    assert after[2].row(0) == (4320, 3)
    assert before[0].equals(_answers(QueryEngine(lake))[0])


def test_compact_only_without_vacuum_keeps_old_files(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """Without --vacuum (or within the retention) replaced files stay for older snapshots."""
    root = str(tmp_path / "lake")
    _ingest_one_commit_per_file(settings_for, root)
    lake = LakeRoot.at(root)
    first = optimize_table(lake, "silver", "spot_klines", vacuum=False)
    assert (first.before.files, first.after.files) == (3, 1)
    assert first.vacuumed == ()
    kept = optimize_table(lake, "silver", "spot_klines", vacuum_retention_hours=1)
    assert kept.vacuumed == ()  # removed seconds ago: inside the 1 h retention
    assert kept.files_added == 0  # already one file: compaction has nothing to do
    assert len(list((tmp_path / "lake" / "silver" / "spot_klines").rglob("*.parquet"))) == 4


def test_unsafe_retention_is_refused_unless_forced(tmp_path: Path) -> None:
    """A retention under one hour raises before anything is touched."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    with pytest.raises(ConfigurationError, match="safe minimum"):
        optimize_table(lake, "silver", "spot_klines", vacuum_retention_hours=0)
    with pytest.raises(ConfigurationError, match="does not exist"):
        optimize_table(lake, "silver", "spot_klines", vacuum_retention_hours=0,
                       force_retention=True)  # fmt: skip


def _small_files_table(lake: LakeRoot) -> None:
    """Write five one-row commits for symbol A and two for B (partitioned by symbol)."""
    for index in range(5):
        symbols = ["A", "B"] if index < 2 else ["A"]
        frame = pl.DataFrame(
            {"symbol": symbols, "t": [index] * len(symbols), "v": [1.0] * len(symbols)}
        )
        tables.append(lake, "silver", "scratch", frame.to_arrow(), partition_by=["symbol"])


def test_auto_compact_touches_only_partitions_with_too_many_small_files(tmp_path: Path) -> None:
    """Partition A (5 small files) is compacted; B (2 files) and the rows are left alone."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    _small_files_table(lake)
    delta = tables.open_table(lake, "silver", "scratch")
    assert delta is not None
    assert small_file_partitions(delta, max_small_files=3, small_file_bytes=1 << 20) == [
        [("symbol", "=", "A")]
    ]
    before = tables.read_frame(lake, "silver", "scratch").sort("symbol", "t")

    results = auto_compact(lake, "silver", "scratch", max_small_files=3)

    assert [r.partition for r in results] == ["symbol=A"]
    assert (results[0].before.files, results[0].after.files) == (7, 3)
    assert tables.read_frame(lake, "silver", "scratch").sort("symbol", "t").equals(before)
    assert auto_compact(lake, "silver", "scratch", max_small_files=3) == []
    assert auto_compact(lake, "silver", "missing") == []


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """Undo the CLI's logging set-up, which binds the CliRunner's (then closed) stderr."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    structlog.reset_defaults()
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.mark.usefixtures("cli_logging")
def test_cli_optimize_renders_a_summary_and_refuses_unsafe_retention(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """`lakehouse optimize` compacts every table and exits 2 on a retention under 1 hour."""
    root = str(tmp_path / "lake")
    _ingest_one_commit_per_file(settings_for, root)
    lake, now = LakeRoot.at(root), datetime.now(UTC)
    crashed = staging.new_run_prefix(now - timedelta(hours=3))  # a Dask run's leftovers
    live = staging.new_run_prefix(now - timedelta(minutes=10))
    for prefix in (crashed, live):
        lake.put_bytes(b"rows", f"{prefix}/file.arrow")
    runner = CliRunner()
    done = runner.invoke(app, ["optimize", "--root", root, "--retention-hours", "1"])
    assert done.exit_code == 0, done.output
    assert "silver.spot_klines" in done.output
    assert "3 → 1" in done.output
    assert "deleted 1 staging folder(s)" in done.output
    assert lake.list_dirs(staging.STAGING) == [live.split("/")[1]]
    one = runner.invoke(app, ["optimize", "silver.spot_klines", "--root", root, "--no-vacuum",
                              "--no-zorder"])  # fmt: skip
    assert one.exit_code == 0, one.output
    refused = runner.invoke(app, ["optimize", "--root", root, "--retention-hours", "0"])
    assert refused.exit_code == 2
    assert "safe minimum" in refused.output
