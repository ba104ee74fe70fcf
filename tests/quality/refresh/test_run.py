"""Quality refresh through the real pipeline: ingest real fixtures, check, score, write gold."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import polars as pl
import pytest

from crypto_lakehouse.ingest.run import IngestRequest
from crypto_lakehouse.quality.refresh.run import loaded_days, refresh_after_ingest, refresh_quality
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.quality.lake_support import (
    SPOT_REQUEST,
    real_lines,
    republish,
    run_ingest,
    spot_key,
    touched,
)
from tests.servers.archive_files import publish
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings

DAYS = [date(2020, 1, 1), date(2020, 1, 2), date(2020, 1, 3)]


def utc(*args: int) -> datetime:
    """Return an aware UTC datetime."""
    return datetime(*args, tzinfo=UTC)


def gold(root: str, sql: str) -> pl.DataFrame:
    """Run SQL over the lake."""
    return QueryEngine(LakeRoot.at(root)).sql(sql)


def test_real_days_score_100_without_gaps(
    lake_root: str, settings_for: Callable[..., Settings]
) -> None:
    """The three real spot 1m days score 100 in gold.quality and gold.gaps stays empty."""
    lake = LakeRoot.at(lake_root)
    result = run_ingest(SPOT_REQUEST, settings_for(lake_root))
    refresh = refresh_after_ingest(lake, "spot_klines", touched(lake, result))
    assert refresh.days == 3
    scores = gold(lake_root, "SELECT symbol, day, score FROM gold.quality ORDER BY day")
    assert scores.rows() == [("BTCUSDT", day, 100.0) for day in DAYS]
    assert gold(lake_root, "SELECT count(*) FROM gold.gaps").item() == 0
    assert gold(lake_root, "SELECT count(*) FROM gold.quality_deductions").item() == 0
    completeness = gold(lake_root, "SELECT sum(present_rows) FROM gold.completeness")
    assert completeness.item() == 4320


@pytest.mark.req("R5.3")
def test_missing_middle_file_is_one_missing_upstream_gap(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """Deleting 2020-01-02 upstream yields one missing_upstream gap of 1,440 minutes."""
    (archive_root / spot_key("2020-01-02")).unlink()
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    result = run_ingest(SPOT_REQUEST, settings_for(root))
    assert [f.outcome for f in result.missing] == ["missing_upstream"]
    refresh_after_ingest(lake, "spot_klines", touched(lake, result))
    gaps = gold(root, "SELECT * FROM gold.gaps")
    assert gaps.height == 1
    gap = gaps.row(0, named=True)
    assert (gap["cause"], gap["missing"], gap["day"]) == ("missing_upstream", 1440, DAYS[1])
    assert (gap["gap_start"], gap["gap_end"]) == (utc(2020, 1, 2), utc(2020, 1, 3))
    scores = dict(gold(root, "SELECT day, score FROM gold.quality").iter_rows())
    assert scores == {DAYS[0]: 100.0, DAYS[1]: 0.0, DAYS[2]: 100.0}
    refresh_quality(lake, "spot_klines")
    assert gold(root, "SELECT count(*) FROM gold.gaps").item() == 1


@pytest.mark.req("R5.3")
def test_file_cut_after_row_700_is_truncated_from_11_40(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """The real 2020-01-02 file cut after row 700 gives a 740-minute truncated gap at 11:40Z."""
    republish(archive_root, "2020-01-02", real_lines(archive_root, "2020-01-02")[:700])
    root = str(tmp_path / "lake")
    run_ingest(SPOT_REQUEST, settings_for(root))
    refresh = refresh_quality(LakeRoot.at(root), "spot_klines")
    gaps = gold(root, "SELECT * FROM gold.gaps")
    assert gaps.height == 1
    gap = gaps.row(0, named=True)
    assert (gap["cause"], gap["missing"]) == ("truncated", 740)
    assert (gap["gap_start"], gap["gap_end"]) == (utc(2020, 1, 2, 11, 40), utc(2020, 1, 3))
    assert refresh.min_score is not None
    assert refresh.min_score < 100.0


def test_two_rows_removed_are_an_in_file_gap_of_2_minutes(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """Removing rows 701-702 of the real file gives a 2-minute in_file gap at 11:40Z."""
    lines = real_lines(archive_root, "2020-01-02")
    republish(archive_root, "2020-01-02", lines[:700] + lines[702:])
    root = str(tmp_path / "lake")
    run_ingest(SPOT_REQUEST, settings_for(root))
    refresh_quality(LakeRoot.at(root), "spot_klines")
    gap = gold(root, "SELECT * FROM gold.gaps").row(0, named=True)
    assert (gap["cause"], gap["missing"]) == ("in_file", 2)
    assert (gap["gap_start"], gap["gap_end"]) == (utc(2020, 1, 2, 11, 40), utc(2020, 1, 2, 11, 42))
    deductions = gold(root, 'SELECT "check" FROM gold.quality_deductions ORDER BY "check"')
    assert deductions.get_column("check").to_list() == ["completeness", "gaps"]


def test_refresh_replaces_only_the_days_asked_for(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """Re-running is idempotent, and a re-published day replaces exactly its own rows."""
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    settings = settings_for(root)
    run_ingest(SPOT_REQUEST, settings)
    refresh_quality(lake, "spot_klines")
    refresh_quality(lake, "spot_klines")
    assert gold(root, "SELECT count(*) FROM gold.quality").item() == 3
    republish(archive_root, "2020-01-03", real_lines(archive_root, "2020-01-03")[:1430])
    again = run_ingest(SPOT_REQUEST, settings)
    changed = touched(lake, again)
    assert changed == [("BTCUSDT", "daily", "2020-01-03")]
    refresh = refresh_after_ingest(lake, "spot_klines", changed)
    assert refresh.runs == {"BTCUSDT": [(DAYS[2], DAYS[2])]}
    rows = gold(root, "SELECT day, score, refreshed_at FROM gold.quality ORDER BY day")
    assert rows.height == 3
    assert rows["score"].to_list()[:2] == [100.0, 100.0]
    assert rows["score"][2] < 100.0
    assert rows["refreshed_at"][2] > rows["refreshed_at"][0]
    assert gold(root, "SELECT cause, missing FROM gold.gaps").rows() == [("truncated", 10)]


def test_monthly_stamp_stands_for_every_day_of_its_month() -> None:
    """A monthly stamp turns into all of its days; daily stamps into one day."""
    days = loaded_days([("A", "monthly", "2020-02"), ("B", "daily", "2020-01-02")])
    assert len(days["A"]) == 29
    assert days["B"] == {date(2020, 1, 2)}


def test_header_changes_the_fingerprint_and_a_new_one_is_flagged(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A UM file with a header fingerprints differently from one without and is flagged new."""
    base = "data/futures/um/daily/klines/ETHUSDT/1m/"
    publish(archive_root, base + "ETHUSDT-1m-2022-05-01.zip", kline_csv("2022-05-01"))
    publish(archive_root, base + "ETHUSDT-1m-2022-05-02.zip", kline_csv("2022-05-02", header=True))
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    request = IngestRequest("um", "klines", ("ETHUSDT",), "1m", date(2022, 5, 1), date(2022, 5, 2))
    result = run_ingest(request, settings_for(root))
    refresh = refresh_after_ingest(lake, "um_klines", touched(lake, result))
    prints = gold(root, "SELECT key, fingerprint, is_new, header FROM gold.format_fingerprints "
                 "ORDER BY key")  # fmt: skip
    assert prints.height == 2
    plain, headed = prints.rows(named=True)
    assert plain["fingerprint"] != headed["fingerprint"]
    assert (plain["is_new"], headed["is_new"]) == (False, True)
    assert headed["header"].startswith("open_time,")
    assert refresh.new_fingerprints.get_column("key").to_list() == [headed["key"]]


def test_extra_column_file_is_quarantined_and_fingerprinted_as_new(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A file with an extra column fails parsing; its kept bytes are sniffed and flagged new."""
    lines = real_lines(archive_root, "2020-01-03")
    republish(archive_root, "2020-01-03", [line + ",0" for line in lines])
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    result = run_ingest(SPOT_REQUEST, settings_for(root))
    assert [f.outcome for f in result.failed] == ["quarantined"]
    refresh_after_ingest(lake, "spot_klines", touched(lake, result))
    prints = gold(root, "SELECT stamp, status, column_count, is_new FROM gold.format_fingerprints "
                 "ORDER BY stamp")  # fmt: skip
    assert prints.rows()[-1] == ("2020-01-03", "quarantined", 13, True)


def test_bad_value_in_known_layout_is_not_a_new_format(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A file quarantined for one bad cell keeps the known fingerprint; its day is not_loaded."""
    lines = real_lines(archive_root, "2020-01-03")
    lines[99] = lines[99].replace(lines[99].split(",")[8], "4x2", 1)
    republish(archive_root, "2020-01-03", lines)
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    result = run_ingest(SPOT_REQUEST, settings_for(root))
    assert [f.outcome for f in result.failed] == ["quarantined"]
    refresh_after_ingest(lake, "spot_klines", touched(lake, result))
    prints = gold(root, "SELECT stamp, status, column_count, is_new FROM gold.format_fingerprints "
                 "ORDER BY stamp")  # fmt: skip
    assert prints.rows() == [
        ("2020-01-01", "loaded", 12, False),
        ("2020-01-02", "loaded", 12, False),
        ("2020-01-03", "quarantined", 12, False),
    ]
    assert gold(root, "SELECT cause, missing, day FROM gold.gaps").rows() == [
        ("not_loaded", 1440, DAYS[2])
    ]


def test_funding_month_is_checked_per_day(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """The real monthly funding file (8-hourly) scores every April day of 2026 at 100."""
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    request = IngestRequest("um", "fundingRate", ("BTCUSDT",), start=date(2026, 4, 1),
                            end=date(2026, 4, 30))  # fmt: skip
    result = run_ingest(request, settings_for(root))
    refresh = refresh_after_ingest(lake, "um_funding_rate", touched(lake, result))
    assert refresh.days == 30
    assert refresh.scores.get_column("score").min() == 100.0
    assert gold(root, "SELECT count(*) FROM gold.quality").item() == 30


def agg_trades_csv(day: str, ids: range) -> str:
    """Return spot aggTrades rows, one per id and second, each covering one raw trade."""
    start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
    return "".join(
        f"{i},100.5,0.25,{i},{i},{start + n * 1000},True,True\n" for n, i in enumerate(ids)
    )


def test_id_hole_at_midnight_is_found_when_only_the_later_day_is_refreshed(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """Refreshing day 2 alone reads day 1's last ids and finds the hole at id 101."""
    base = "data/spot/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-"
    publish(archive_root, base + "2021-03-01.zip", agg_trades_csv("2021-03-01", range(1, 101)))
    publish(archive_root, base + "2021-03-02.zip", agg_trades_csv("2021-03-02", range(102, 201)))
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    request = IngestRequest("spot", "aggTrades", ("ETHUSDT",), None, date(2021, 3, 1),
                            date(2021, 3, 2), refresh_quality=False)  # fmt: skip
    assert run_ingest(request, settings_for(root)).ok
    refresh = refresh_after_ingest(lake, "spot_agg_trades", [("ETHUSDT", "daily", "2021-03-02")])
    holes = gold(root, 'SELECT day, "check", before_id, after_id, missing FROM gold.sequence_holes '
                 'ORDER BY "check"')  # fmt: skip
    assert holes.rows() == [
        (date(2021, 3, 2), "agg_trade_id", 100, 102, 1),
        (date(2021, 3, 2), "trade_id", 100, 102, 1),
    ]
    assert refresh.scores.rows() == [("spot_agg_trades", "ETHUSDT", date(2021, 3, 2), 97.0, 2)]
    completeness = gold(root, "SELECT expected_rows, present_rows FROM gold.completeness")
    assert completeness.rows() == [(100, 99)]
