"""Provisional → final: the supersession report compares REST rows with the archive's."""

from __future__ import annotations

import asyncio
import io
import zipfile
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import polars as pl
import pytest
import structlog
from typer.testing import CliRunner

from crypto_lakehouse.cli import app
from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.ingest.parse.file import ParsedFile, ParseTask, parse_to_stage
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.write import supersede
from crypto_lakehouse.ingest.write.provisional import TableSpec, to_silver, write_provisional
from crypto_lakehouse.ingest.write.staged import commit_files
from crypto_lakehouse.ingest.write.supersede import (
    report_batch_supersessions,
    report_supersessions,
    supersession_summary,
)
from crypto_lakehouse.recent.update import UpdateRequest, update
from crypto_lakehouse.sources.binance.rest.frames import agg_trades_frame, klines_frame
from crypto_lakehouse.storage.root import LakeRoot
from tests.recent._live_support import (
    KLINE_KEY,
    NOW,
    change_close,
    drop_archive_day,
    fixture_kline_lines,
    query,
    rest_rows,
    rest_server,
)
from tests.servers.archive_files import FIXTURE_TREE, make_zip, publish

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from tests.servers.archive_server import ArchiveServer
    from tests.servers.rest_server import RestServer

DAY3 = "2020-01-03"
KEY3 = KLINE_KEY.format(DAY3)
REPORT = (
    'SELECT kind, "column", key, provisional_value, archive_value FROM silver._supersessions '
    "WHERE kind <> 'superseded_rows' ORDER BY time, kind"
)


def provisional_day(lake: LakeRoot, lines: list[str]) -> None:
    """Write kline CSV lines as provisional REST rows of spot BTCUSDT 1m."""
    spec = TableSpec.of(get_dataset("spot", "klines"))
    frame = klines_frame("spot", "BTCUSDT", "1m", rest_rows(lines))
    rows = to_silver(spec, frame, source="rest", bronze_key="bronze/rest/x", ingested_at=NOW)
    assert write_provisional(lake, spec, rows) is not None


def parsed_rows(tmp_path: Path, lines: list[str]) -> pl.DataFrame:
    """Parse kline CSV lines the way ingest does and return the staged silver rows."""
    zipped = tmp_path / "day.zip"
    zipped.write_bytes(make_zip("BTCUSDT-1m-2020-01-03.csv", ("\n".join(lines) + "\n").encode()))
    task = ParseTask(
        market="spot", data_type="klines", key=KEY3, symbol="BTCUSDT", interval="1m",
        period="daily", stamp=DAY3, revision=1, zip_path=str(zipped),
        staged_path=str(tmp_path / "stage.arrow"), chunk_bytes=1 << 20,
        ingested_at=datetime.now(UTC),
    )  # fmt: skip
    parse_to_stage(task)
    return pl.read_ipc(task.staged_path)


def test_report_from_parsed_rows_lists_changes_and_missing_rows_idempotently(
    tmp_path: Path,
) -> None:
    """A changed close, a row only REST had and a row only the archive has are all reported."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    lines = fixture_kline_lines(DAY3)
    provisional_day(lake, lines[:300] + lines[301:])
    archive_lines = change_close(lines, 100, "7999.99")
    archive = parsed_rows(tmp_path, archive_lines[:200] + archive_lines[201:])
    dataset = get_dataset("spot", "klines")
    summary = report_supersessions(lake, dataset, archive, KEY3)
    report = query(lake.uri, REPORT)
    original_close = lines[100].split(",")[4]
    assert report.rows() == [
        ("value_changed", "close", "interval=1m open_time=2020-01-03T01:40:00.000000Z",
         str(float(original_close)), "7999.99"),
        ("missing_in_archive", None, "interval=1m open_time=2020-01-03T03:20:00.000000Z",
         report["provisional_value"][1], None),
        ("missing_in_provisional", None, "interval=1m open_time=2020-01-03T05:00:00.000000Z",
         None, report["archive_value"][2]),
    ]  # fmt: skip
    assert report["provisional_value"][1].startswith("open=")
    assert (summary.superseded_rows, summary.differing_rows, summary.differences) == (1439, 1, 3)
    assert summary.identical_rows == 1437
    again = report_supersessions(lake, dataset, archive, KEY3)
    assert again == summary
    assert query(lake.uri, "SELECT count(*) FROM silver._supersessions").item() == 4


def test_nothing_is_recorded_when_the_span_has_no_provisional_rows(tmp_path: Path) -> None:
    """Archive rows over an empty span write no report and keep an earlier one intact."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    archive = parsed_rows(tmp_path, fixture_kline_lines(DAY3))
    summary = report_supersessions(lake, get_dataset("spot", "klines"), archive, KEY3)
    assert summary.superseded_rows == 0 and summary.differences == 0
    assert supersession_summary(lake, "spot_klines") is None


def fixture_day_parsed(tmp_path: Path, day: str) -> ParsedFile:
    """Parse the real spot BTCUSDT 1m fixture file of a day into a staged file."""
    key = KLINE_KEY.format(day)
    task = ParseTask(
        market="spot", data_type="klines", key=key, symbol="BTCUSDT", interval="1m",
        period="daily", stamp=day, revision=1, zip_path=str(FIXTURE_TREE / key),
        staged_path=str(tmp_path / f"{day}.arrow"), chunk_bytes=1 << 20,
        ingested_at=datetime.now(UTC),
    )  # fmt: skip
    return parse_to_stage(task)


def test_batch_probe_compares_only_files_whose_span_holds_provisional_rows(
    tmp_path: Path,
) -> None:
    """Of two files in one commit batch, only the day with REST rows gets a report."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    batch = [(fixture_day_parsed(tmp_path, day), None) for day in ("2020-01-02", DAY3)]
    assert report_batch_supersessions(lake, batch) == []  # no table yet
    provisional_day(lake, change_close(fixture_kline_lines(DAY3)[:10], 4, "1.5"))
    summaries = report_batch_supersessions(lake, batch)
    assert [(s.superseded_rows, s.differences) for s in summaries] == [(10, 1)]
    keys = query(lake.uri, "SELECT DISTINCT archive_key FROM silver._supersessions").to_series()
    assert keys.to_list() == [KEY3]


def test_batch_probe_reads_no_span_where_file_statistics_show_no_provisional_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over archive rows only, the probe decides from the files' `_provisional` maxima and
    reads nothing; once a file of the symbol holds REST rows, it reads the span again."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    commit_files(lake, [fixture_day_parsed(tmp_path, "2020-01-02")])
    reads: list[object] = []
    real_read_span = supersede.read_span

    def counting_read_span(*args: object, **kwargs: object) -> pl.DataFrame:
        reads.append(args)
        return real_read_span(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(supersede, "read_span", counting_read_span)
    batch = [(fixture_day_parsed(tmp_path, DAY3), None)]
    assert report_batch_supersessions(lake, batch) == []
    assert reads == []
    provisional_day(lake, change_close(fixture_kline_lines(DAY3)[:10], 4, "1.5"))
    summaries = report_batch_supersessions(lake, batch)
    assert reads  # the batch probe, then the comparison of the day that has REST rows
    assert [(s.superseded_rows, s.differences) for s in summaries] == [(10, 1)]


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """Undo the CLI's logging set-up, which binds the CliRunner's (then closed) stderr."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def rest_day3(archive_root: Path) -> Iterator[RestServer]:
    """Serve the real 2020-01-03 rows from REST while the archive lacks that day."""
    drop_archive_day(archive_root, DAY3)
    server = rest_server()
    server.data.set_rows("spot", "klines", "BTCUSDT", rest_rows(fixture_kline_lines(DAY3)), "1m")
    with server:
        yield server


@pytest.mark.req("R3.3")
def test_archive_day_supersedes_rest_day_and_reports_the_changed_close(
    tmp_path: Path,
    archive_root: Path,
    archive: ArchiveServer,
    rest_day3: RestServer,
    settings_for: Callable[..., Settings],
    cli_logging: None,
) -> None:
    """Days 1-2 archive, day 3 REST; then `lakehouse ingest` of day 3 leaves no provisional row."""
    root = str(tmp_path / "lake")
    overrides = rest_day3.settings_overrides()
    request = UpdateRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1),
                            date(2020, 1, 3))  # fmt: skip
    filled = asyncio.run(update(request, settings_for(root, **overrides), now=NOW))
    assert [(d.day.day, d.rows) for d in filled.filled] == [(3, 1440)]
    lines = fixture_kline_lines(DAY3)
    publish(archive_root, KEY3, "\n".join(change_close(lines, 720, "7300.5")) + "\n")
    env = {"LAKEHOUSE_ROOT": root, "LAKEHOUSE_BINANCE_ARCHIVE_URL": archive.archive_url,
           "LAKEHOUSE_BINANCE_LISTING_URL": archive.listing_url}  # fmt: skip
    args = ["ingest", "spot", "klines", "--symbols", "BTCUSDT", "--interval", "1m",
            "--start", DAY3, "--end", DAY3]  # fmt: skip
    outcome = CliRunner().invoke(app, args, env=env)
    assert outcome.exit_code == 0, outcome.output
    day3 = query(root, "SELECT _provisional, _source, count(*) AS n FROM silver.spot_klines "
                 "WHERE open_time >= '2020-01-03' GROUP BY ALL")  # fmt: skip
    assert day3.rows() == [(False, "archive", 1440)]
    assert query(root, REPORT).rows() == [
        ("value_changed", "close", "interval=1m open_time=2020-01-03T12:00:00.000000Z",
         str(float(lines[720].split(",")[4])), "7300.5"),
    ]  # fmt: skip
    summary = supersession_summary(LakeRoot.at(root), "spot_klines")
    assert summary is not None
    assert (summary.superseded_rows, summary.identical_rows, summary.differences) == (1440, 1439, 1)


def test_tick_archive_day_reports_against_provisional_trades(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """COIN-M aggTrades: a changed REST price and a REST-only trade are reported, then gone."""
    key = "data/futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip"
    lines = (FIXTURE_TREE / key).read_bytes()
    with zipfile.ZipFile(io.BytesIO(lines)) as zipped:
        text = zipped.read(zipped.namelist()[0]).decode().splitlines()[1:]
    picked = [line.split(",") for line in text[1000:1003]]
    rows = [{"a": int(f[0]), "p": f[1], "q": f[2], "f": int(f[3]), "l": int(f[4]),
             "T": int(f[5]), "m": f[6] == "true"} for f in picked]  # fmt: skip
    rows[1] = {**rows[1], "p": "1.5"}
    rows.append({**rows[2], "a": 1})
    lake = LakeRoot.at(str(tmp_path / "lake"))
    spec = TableSpec.of(get_dataset("cm", "aggTrades"))
    frame = to_silver(spec, agg_trades_frame("cm", "BTCUSD_PERP", rows), source="rest",
                      bronze_key="bronze/rest/x", ingested_at=NOW)  # fmt: skip
    assert write_provisional(lake, spec, frame) is not None
    request = IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), start=date(2026, 5, 8),
                            end=date(2026, 5, 8))  # fmt: skip
    assert asyncio.run(ingest(request, settings_for(lake.uri))).ok
    report = query(lake.uri, REPORT)
    lo, hi = int(picked[0][5]), int(picked[2][5])
    others = [f for f in (line.split(",") for line in text) if lo <= int(f[5]) <= hi]
    kinds = report.group_by("kind").len().sort("kind").rows()
    assert kinds == [("missing_in_archive", 1), ("missing_in_provisional", len(others) - 3),
                     ("value_changed", 1)]  # fmt: skip
    changed = report.filter(pl.col("kind") == "value_changed").row(0)
    assert changed == ("value_changed", "price", f"agg_trade_id={picked[1][0]}", "1.5",
                       str(float(picked[1][1])))  # fmt: skip
    left = query(lake.uri, "SELECT count(*) FILTER (WHERE _provisional) AS p, count(*) AS n "
                 "FROM silver.cm_agg_trades")  # fmt: skip
    assert left.row(0) == (0, 105_280)
