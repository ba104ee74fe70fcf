"""`update`: archive first, then REST for the days the archive lacks, as provisional rows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import polars as pl
import pytest

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.ingest.write.provisional import (
    LINEAGE,
    TableSpec,
    to_silver,
    write_provisional,
)
from crypto_lakehouse.recent.results import UpdateResult
from crypto_lakehouse.recent.update import UpdateRequest, plan_gaps, update
from crypto_lakehouse.storage.bronze import ManifestEntry
from crypto_lakehouse.storage.root import LakeRoot
from tests.recent._live_support import (
    NOW,
    bronze_lines,
    drop_archive_day,
    query,
    rest_server,
)
from tests.servers.rest_data import ms
from tests.servers.rest_server import RestServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from crypto_lakehouse.config import Settings

REQUEST = UpdateRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1), date(2020, 1, 5))
BY_DAY = (
    "SELECT CAST(open_time AS DATE) AS day, _source, _provisional, count(*) AS n "
    "FROM silver.spot_klines GROUP BY ALL ORDER BY day"
)


@pytest.fixture
def rest() -> Iterator[RestServer]:
    """Serve spot BTCUSDT klines from 2019-12-31 up to 2020-01-05T06:00."""
    with rest_server() as server:
        yield server


@pytest.fixture
def lagging_archive(archive_root: Path) -> Path:
    """Make the archive miss 2020-01-02; it still has 01-01 and 01-03 (real files)."""
    drop_archive_day(archive_root, "2020-01-02")
    return archive_root


def run_update(settings: Settings, request: UpdateRequest = REQUEST) -> UpdateResult:
    """Run one update at NOW."""
    return asyncio.run(update(request, settings, now=NOW))


@pytest.mark.req("R5.1", "R3.3")
def test_update_fills_missing_day_and_days_after_archive_as_provisional(
    tmp_path: Path,
    lagging_archive: Path,
    rest: RestServer,
    settings_for: Callable[..., Settings],
) -> None:
    """Days 1 and 3 come from the archive; 2, 4 and 5 (to 06:00) from REST, provisional."""
    root = str(tmp_path / "lake")
    result = run_update(settings_for(root, **rest.settings_overrides()))
    assert result.ok
    assert result.archive_loaded == 2
    assert result.rest_status == "ok"
    assert [(d.day.day, d.outcome, d.rows) for d in result.days] == [
        (2, "filled", 1440), (4, "filled", 1440), (5, "filled", 360)
    ]  # fmt: skip
    assert result.still_missing == []
    assert list(result.breakers.values()) == ["closed"]
    assert query(root, BY_DAY).rows() == [
        (date(2020, 1, 1), "archive", False, 1440),
        (date(2020, 1, 2), "rest", True, 1440),
        (date(2020, 1, 3), "archive", False, 1440),
        (date(2020, 1, 4), "rest", True, 1440),
        (date(2020, 1, 5), "rest", True, 360),
    ]
    keys = query(root, "SELECT DISTINCT _bronze_key FROM silver.spot_klines WHERE _provisional")
    assert sorted(keys["_bronze_key"]) == sorted({d.bronze_key for d in result.days})
    pages = bronze_lines(tmp_path / "lake", "bronze/binance-rest/spot/klines/BTCUSDT/1m/2020-01-02")
    assert pages and all("/api/v3/klines" in p["url"] for p in pages)
    assert sum(len(json.loads(p["body"])) for p in pages) == 1440


def test_second_update_keeps_complete_days_and_refreshes_the_open_one(
    tmp_path: Path,
    lagging_archive: Path,
    rest: RestServer,
    settings_for: Callable[..., Settings],
) -> None:
    """A re-run fetches only the day that was still open, and leaves no duplicate rows."""
    root = str(tmp_path / "lake")
    settings = settings_for(root, **rest.settings_overrides())
    run_update(settings)
    requests_before = len(rest.requests)
    again = run_update(settings)
    fetched = [d.day.day for d in again.days if d.reason != "kept from an earlier run"]
    assert fetched == [5]
    klines = [r for r in rest.requests[requests_before:] if r.endpoint == "klines"]
    assert len(klines) == 1
    totals = query(root, "SELECT count(*) AS n, count(DISTINCT open_time) AS k "
                   "FROM silver.spot_klines")  # fmt: skip
    assert totals.row(0) == (6120, 6120)


@pytest.mark.req("R6.2")
def test_update_on_s3_lands_the_same_rows(
    s3_root: str,
    lagging_archive: Path,
    rest: RestServer,
    settings_for: Callable[..., Settings],
) -> None:
    """The same update on a moto S3 lake gives the same provisional and archive counts."""
    result = run_update(settings_for(s3_root, **rest.settings_overrides()))
    assert result.ok
    counts = query(s3_root, "SELECT _provisional, count(*) AS n FROM silver.spot_klines "
                   "GROUP BY ALL ORDER BY 1")  # fmt: skip
    assert counts.rows() == [(False, 2880), (True, 3240)]
    assert LakeRoot.at(s3_root).exists(result.days[0].bronze_key)


@pytest.mark.req("R6.1", "R3.1")
def test_ban_stops_the_run_with_a_clear_message(
    tmp_path: Path,
    lagging_archive: Path,
    rest: RestServer,
    settings_for: Callable[..., Settings],
) -> None:
    """A 418 stops REST at once: the result says banned, the archive rows are kept."""
    rest.add_fault("*", 418, retry_after=120)
    root = str(tmp_path / "lake")
    result = run_update(settings_for(root, **rest.settings_overrides()))
    assert result.stopped and not result.ok
    assert "HTTP 418" in result.rest_message and "banned" in result.rest_message
    assert {d.outcome for d in result.days} == {"failed"}
    assert len(rest.requests) == 1
    assert query(root, "SELECT count(*) AS n FROM silver.spot_klines").item() == 2880


@pytest.mark.req("R3.1")
def test_region_block_leaves_an_archive_only_result_that_says_so(
    tmp_path: Path,
    lagging_archive: Path,
    rest: RestServer,
    settings_for: Callable[..., Settings],
) -> None:
    """A 451 is not a failure: archive rows load, every gap says REST is unavailable."""
    rest.add_fault("*", 451, times=50)
    root = str(tmp_path / "lake")
    result = run_update(settings_for(root, **rest.settings_overrides()))
    assert result.ok and result.rest_status == "region_blocked"
    assert result.rest_message.startswith("REST unavailable from this region")
    assert [(d.day.day, d.outcome) for d in result.still_missing] == [
        (2, "unavailable"), (4, "unavailable"), (5, "unavailable")
    ]  # fmt: skip
    assert query(root, "SELECT count(*) FILTER (WHERE _provisional) AS p, count(*) AS n "
                 "FROM silver.spot_klines").row(0) == (0, 2880)  # fmt: skip


@pytest.mark.req("R5.2")
def test_funding_after_the_last_monthly_file_is_filled_from_rest(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """The monthly funding archive ends with April; May 1-2 come from REST as provisional."""
    now = datetime(2026, 5, 3, tzinfo=UTC)
    with RestServer(now_ms=ms("2026-05-03")) as server:
        settings = settings_for(str(tmp_path / "lake"), **server.settings_overrides())
        request = UpdateRequest("um", "fundingRate", ("BTCUSDT",), start=date(2026, 4, 1))
        result = asyncio.run(update(request, settings, now=now))
    assert result.ok and result.archive_loaded == 1
    assert [(d.day.isoformat(), d.gap, d.rows) for d in result.days] == [
        ("2026-05-01", "after_archive", 6), ("2026-05-02", "after_archive", 6)
    ]  # fmt: skip
    counts = query(str(tmp_path / "lake"), "SELECT _source, count(*) AS n FROM "
                   "silver.um_funding_rate GROUP BY ALL ORDER BY 1")  # fmt: skip
    assert counts.rows() == [("archive", 90), ("rest", 12)]


@pytest.mark.req("R3.3")
def test_rest_rows_never_replace_archive_rows(
    tmp_path: Path,
    lagging_archive: Path,
    rest: RestServer,
    settings_for: Callable[..., Settings],
) -> None:
    """Provisional rows for an archived day are dropped; the archive rows stay as they were."""
    root = str(tmp_path / "lake")
    run_update(settings_for(root, **rest.settings_overrides()))
    spec = TableSpec.of(get_dataset("spot", "klines"))
    before = query(root, "SELECT * FROM silver.spot_klines WHERE NOT _provisional ORDER BY 3")
    doubled = before.head(5).drop(*LINEAGE).with_columns(pl.col("close") * 2)
    fake = to_silver(spec, doubled, source="rest", bronze_key="x", ingested_at=NOW)
    assert write_provisional(LakeRoot.at(root), spec, fake) is None
    after = query(root, "SELECT * FROM silver.spot_klines WHERE NOT _provisional ORDER BY 3")
    assert after.equals(before)


def test_plan_gaps_skips_loaded_periods_and_stops_at_now() -> None:
    """Missing days and days after the last loaded file are gaps, covered and future ones not."""
    entries = [
        ManifestEntry("k1", "t", "S", "monthly", "2020-01", "loaded"),
        ManifestEntry("k2", "t", "S", "daily", "2020-01-15", "missing_upstream"),
        ManifestEntry("k3", "t", "S", "daily", "2020-02-02", "missing_upstream"),
        ManifestEntry("k4", "t", "S", "daily", "2020-02-03", "loaded"),
    ]
    gaps = plan_gaps(entries, "S", start=None, end=date(2020, 2, 10),
                     now=datetime(2020, 2, 6, 12, tzinfo=UTC))  # fmt: skip
    assert [(g.day.isoformat(), g.reason) for g in gaps] == [
        ("2020-02-02", "missing_upstream"),
        ("2020-02-04", "after_archive"),
        ("2020-02-05", "after_archive"),
        ("2020-02-06", "after_archive"),
    ]
