"""Archive → bronze → silver end to end against the stand-in, on local disk and on S3."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
import structlog

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.exceptions import SourceError
from crypto_lakehouse.ingest.request import discover
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.sources.binance.archive.client import ArchiveClient
from crypto_lakehouse.storage.bronze import Manifest
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import publish
from tests.servers.archive_server import Fault
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.ingest.results import IngestResult
    from tests.servers.archive_server import ArchiveServer

SPOT_1M = "data/spot/daily/klines/BTCUSDT/1m/"
SPOT_REQUEST = IngestRequest(
    "spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1), date(2020, 1, 3)
)


def run(request: IngestRequest, settings: Settings) -> IngestResult:
    """Run one ingest to completion."""
    return asyncio.run(ingest(request, settings))


def query(root: str, sql: str) -> pl.DataFrame:
    """Run SQL over a lake root."""
    return QueryEngine(LakeRoot.at(root)).sql(sql)


def zip_gets(archive: ArchiveServer) -> int:
    """Count zip downloads the stand-in served."""
    return sum(1 for r in archive.requests if r.method == "GET" and r.path.endswith(".zip"))


@pytest.mark.req("R1.1", "R5.1", "R6.2")
def test_spot_klines_land_with_right_count_and_first_instant(
    lake_root: str, settings_for: Callable[..., Settings]
) -> None:
    """The three real spot 1m days load as 4,320 rows starting 2020-01-01T00:00Z."""
    result = run(SPOT_REQUEST, settings_for(lake_root))
    assert result.ok
    assert [f.outcome for f in result.files] == ["loaded"] * 3
    frame = query(lake_root, "SELECT count(*) AS n, min(open_time) AS first, "
                  "count(DISTINCT _bronze_key) AS keys FROM silver.spot_klines")  # fmt: skip
    assert frame.row(0) == (4320, datetime(2020, 1, 1, tzinfo=UTC), 3)


@pytest.mark.req("R5.2")
def test_futures_funding_and_cm_agg_trades_load(
    lake_root: str, settings_for: Callable[..., Settings]
) -> None:
    """The real monthly funding (header row) and COIN-M aggTrades files load completely."""
    settings = settings_for(lake_root)
    funding = run(IngestRequest("um", "fundingRate", ("BTCUSDT",), start=date(2026, 4, 1),
                                end=date(2026, 4, 30)), settings)  # fmt: skip
    trades = run(IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), start=date(2026, 5, 8),
                               end=date(2026, 5, 8)), settings)  # fmt: skip
    assert funding.rows_loaded == 90
    assert trades.rows_loaded == 105_280
    counts = query(
        lake_root,
        "SELECT (SELECT count(*) FROM silver.um_funding_rate) AS f, "
        "(SELECT count(DISTINCT agg_trade_id) FROM silver.cm_agg_trades) AS a",
    )
    assert counts.row(0) == (90, 105_280)


def test_second_run_downloads_nothing_and_keeps_counts(
    lake_root: str, settings_for: Callable[..., Settings], archive: ArchiveServer
) -> None:
    """Re-running the same ingest skips unchanged files and leaves row counts unchanged."""
    settings = settings_for(lake_root)
    run(SPOT_REQUEST, settings)
    archive.reset_log()
    again = run(SPOT_REQUEST, settings)
    assert [f.outcome for f in again.files] == ["skipped_unchanged"] * 3
    assert zip_gets(archive) == 0
    assert query(lake_root, "SELECT count(*) FROM silver.spot_klines").item() == 4320


@pytest.mark.req("R1.1", "R3.3")
def test_republished_file_becomes_new_revision_without_duplicates(
    lake_root: str, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A re-published file is fetched again, recorded as revision 2, and replaces its rows."""
    settings = settings_for(lake_root)
    run(SPOT_REQUEST, settings)
    key = SPOT_1M + "BTCUSDT-1m-2020-01-02.zip"
    body = kline_csv("2020-01-02", minutes=1440)
    publish(archive_root, key, body)
    result = run(SPOT_REQUEST, settings)
    changed = [f for f in result.files if f.key == key]
    assert changed[0].outcome == "loaded"
    assert changed[0].revision == 2
    frame = query(lake_root, "SELECT count(*) AS n, count(DISTINCT open_time) AS d, "
                  "max(_revision) AS r FROM silver.spot_klines")  # fmt: skip
    assert frame.row(0) == (4320, 4320, 2)
    day2 = query(lake_root, "SELECT min(open) FROM silver.spot_klines WHERE "
                 "open_time >= '2020-01-02' AND open_time < '2020-01-03'")  # fmt: skip
    assert day2.item() == 100.0
    states = Manifest(LakeRoot.at(lake_root)).events(key_prefix=key)
    assert set(states["status"]) >= {"loaded", "superseded"}
    assert states.filter(pl.col("status") == "superseded")["revision"].to_list() == [1]


def test_spot_microseconds_and_milliseconds_share_a_table(
    lake_root: str, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A 2024 ms file and a 2025 µs file land in one table with the right instants."""
    publish(archive_root, SPOT_1M + "BTCUSDT-1m-2024-12-31.zip", kline_csv("2024-12-31"))
    publish(archive_root, SPOT_1M + "BTCUSDT-1m-2025-01-01.zip",
            kline_csv("2025-01-01", unit="us"))  # fmt: skip
    request = IngestRequest("spot", "klines", ("BTCUSDT",), "1m", date(2024, 12, 31),
                            date(2025, 1, 1))  # fmt: skip
    assert run(request, settings_for(lake_root)).ok
    frame = query(lake_root, "SELECT min(open_time) AS a, max(open_time) AS b, "
                  "max(close_time) AS c, count(*) AS n FROM silver.spot_klines")  # fmt: skip
    assert frame.row(0)[:2] == (
        datetime(2024, 12, 31, tzinfo=UTC),
        datetime(2025, 1, 1, 23, 59, tzinfo=UTC),
    )
    assert frame["c"][0] == datetime(2025, 1, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert frame["n"][0] == 2880


def test_futures_files_with_and_without_header_both_parse(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """UM kline files with and without a header row both load every row."""
    base = "data/futures/um/daily/klines/ETHUSDT/1m/"
    publish(archive_root, base + "ETHUSDT-1m-2022-05-01.zip", kline_csv("2022-05-01"))
    publish(archive_root, base + "ETHUSDT-1m-2022-05-02.zip",
            kline_csv("2022-05-02", header=True))  # fmt: skip
    root = str(tmp_path / "lake")
    request = IngestRequest("um", "klines", ("ETHUSDT",), "1m", date(2022, 5, 1),
                            date(2022, 5, 2))  # fmt: skip
    result = run(request, settings_for(root))
    assert result.ok
    assert result.rows_loaded == 2880
    headers = Manifest(LakeRoot.at(root)).current()
    assert headers[base + "ETHUSDT-1m-2022-05-02.zip"].header.startswith("open_time,")
    assert headers[base + "ETHUSDT-1m-2022-05-01.zip"].header == ""


@pytest.mark.req("R3.2", "R5.3")
def test_bad_files_are_quarantined_while_others_load(
    lake_root: str,
    settings_for: Callable[..., Settings],
    archive_root: Path,
    archive: ArchiveServer,
) -> None:
    """Checksum mismatch, truncation, HTML and a malformed CSV are each quarantined."""
    keys = {
        "mismatch": SPOT_1M + "BTCUSDT-1m-2020-01-04.zip",
        "truncated": SPOT_1M + "BTCUSDT-1m-2020-01-05.zip",
        "html": SPOT_1M + "BTCUSDT-1m-2020-01-06.zip",
        "malformed": SPOT_1M + "BTCUSDT-1m-2020-01-07.zip",
    }
    publish(archive_root, keys["mismatch"], kline_csv("2020-01-04"), checksum="0" * 64)
    publish(archive_root, keys["truncated"], kline_csv("2020-01-05"))
    publish(archive_root, keys["html"], kline_csv("2020-01-06"))
    bad = kline_csv("2020-01-07").splitlines()
    bad[99] = bad[99].replace(",42,", ",4x2,")
    publish(archive_root, keys["malformed"], "\n".join(bad) + "\n")
    archive.faults.add("/" + keys["truncated"], Fault.truncate(500), times=20)
    archive.faults.add("/" + keys["html"], Fault.html(), times=20)
    request = IngestRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1),
                            date(2020, 1, 7))  # fmt: skip
    result = run(request, settings_for(lake_root))
    outcomes = {f.key: f for f in result.files}
    assert not result.ok
    assert outcomes[keys["mismatch"]].outcome == "checksum_mismatch"
    assert "differs from CHECKSUM" in outcomes[keys["mismatch"]].reason
    assert outcomes[keys["truncated"]].outcome == "quarantined"
    assert "TruncatedBodyError" in outcomes[keys["truncated"]].reason
    assert outcomes[keys["html"]].outcome == "quarantined"
    assert "NotAZipError" in outcomes[keys["html"]].reason
    assert outcomes[keys["malformed"]].outcome == "quarantined"
    assert "line 100" in outcomes[keys["malformed"]].reason
    assert "trades" in outcomes[keys["malformed"]].reason
    assert "'4x2'" in outcomes[keys["malformed"]].reason
    assert len(result.loaded) == 3
    frame = query(lake_root, "SELECT count(*) AS n, count(DISTINCT _bronze_key) AS k "
                  "FROM silver.spot_klines")  # fmt: skip
    assert frame.row(0) == (4320, 3)
    current = Manifest(LakeRoot.at(lake_root)).current()
    assert current[keys["mismatch"]].status == "checksum_mismatch"
    assert current[keys["mismatch"]].bronze_path.startswith("quarantine/")
    assert LakeRoot.at(lake_root).exists(current[keys["mismatch"]].bronze_path)
    assert current[keys["malformed"]].status == "quarantined"


def test_missing_day_is_recorded_as_missing_upstream(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A day absent from the listing is recorded with status missing_upstream."""
    (archive_root / SPOT_1M / "BTCUSDT-1m-2020-01-02.zip").unlink()
    root = str(tmp_path / "lake")
    result = run(SPOT_REQUEST, settings_for(root))
    assert result.ok
    assert [f.key.rsplit("-", 1)[-1] for f in result.missing] == ["02.zip"]
    assert Manifest(LakeRoot.at(root)).current()[SPOT_1M + "BTCUSDT-1m-2020-01-02.zip"].status == (
        "missing_upstream"
    )


@pytest.mark.req("R3.2")
def test_listing_pagination_and_transient_errors_are_retried(
    tmp_path: Path, settings_for: Callable[..., Settings], archive: ArchiveServer
) -> None:
    """With 2-entry pages, a 429 with Retry-After and 5xx answers, everything still loads."""
    archive.page_size = 2
    archive.emit_next_marker = False
    archive.faults.add("listing", Fault.status(503))
    archive.faults.add("/" + SPOT_1M + "BTCUSDT-1m-2020-01-01.zip",
                       Fault.status(429, retry_after=1))  # fmt: skip
    archive.faults.add("/" + SPOT_1M + "BTCUSDT-1m-2020-01-02.zip", Fault.status(500), times=2)
    result = run(SPOT_REQUEST, settings_for(str(tmp_path / "lake")))
    assert result.ok
    assert result.rows_loaded == 4320
    listings = [r for r in archive.requests if "prefix=" in r.path]
    assert len(listings) >= 3
    statuses = [r.status for r in archive.requests]
    assert 429 in statuses
    assert 500 in statuses


def test_slow_file_does_not_hold_back_the_others(
    tmp_path: Path,
    settings_for: Callable[..., Settings],
    archive: ArchiveServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two days land in a commit of their own while the third day is still downloading.

    The third day's answer is held until the log says two files were committed (at most
    30 s): a run that waited for it before committing would commit all three at once.
    """
    from deltalake import DeltaTable

    fast_days_in = threading.Event()
    committed: list[int] = []

    def watch(_logger: object, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") == "silver_committed":
            committed.append(int(event.get("files", 0)))
            if sum(committed) >= 2:
                fast_days_in.set()
        return event

    real_sleep = asyncio.sleep

    async def held(delay: float, result: Any = None) -> Any:
        if delay != 2.0:  # the slow day's scripted delay; every other wait is real
            return await real_sleep(delay, result)
        await asyncio.get_running_loop().run_in_executor(None, fast_days_in.wait, 30)
        return result

    monkeypatch.setattr(asyncio, "sleep", held)
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[watch, *processors])
    archive.faults.add("/" + SPOT_1M + "BTCUSDT-1m-2020-01-03.zip", Fault.delay(2.0))
    root = str(tmp_path / "lake")
    settings = settings_for(root, commit_interval_seconds=0.3, auto_compact=False)
    try:
        result = run(SPOT_REQUEST, settings)
    finally:
        structlog.configure(processors=processors)
    assert [f.outcome for f in result.files] == ["loaded"] * 3
    uri = LakeRoot.at(root).table_uri("silver", "spot_klines")
    rows = [DeltaTable(uri, version=v).to_pyarrow_dataset().count_rows()
            for v in range(DeltaTable(uri).version() + 1)]  # fmt: skip
    assert 2880 in rows  # the two fast days, committed before the slow one arrived
    assert query(root, "SELECT count(*) FROM silver.spot_klines").item() == 4320


def test_tables_are_created_beside_the_downloads_even_when_nothing_loads(
    tmp_path: Path, settings_for: Callable[..., Settings], archive: ArchiveServer
) -> None:
    """A fresh lake gets its (empty) silver table and manifest while files download."""
    from deltalake import DeltaTable

    for day in ("01", "02", "03"):
        archive.faults.add(f"/{SPOT_1M}BTCUSDT-1m-2020-01-{day}.zip", Fault.status(404), times=5)
    root = str(tmp_path / "lake")
    result = run(SPOT_REQUEST, settings_for(root))
    assert [f.outcome for f in result.files] == ["missing_upstream"] * 3
    assert result.rows_loaded == 0
    silver = DeltaTable(LakeRoot.at(root).table_uri("silver", "spot_klines"))
    assert silver.version() == 0
    assert silver.to_pyarrow_dataset().count_rows() == 0
    current = Manifest(LakeRoot.at(root)).current()
    assert {entry.status for entry in current.values()} == {"missing_upstream"}


FOUR_SYMBOLS = IngestRequest("spot", "klines", ("ADAUSDT", "BTCUSDT", "ETHUSDT", "XRPUSDT"),
                             "1m", date(2020, 1, 1), date(2020, 1, 3))  # fmt: skip


def test_symbols_are_listed_at_once(
    tmp_path: Path, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """All eight listings (4 symbols, daily and monthly) are under way before any answers."""
    settings = settings_for(str(tmp_path / "lake"))
    real_list_all = ArchiveClient.list_all
    started: list[str] = []
    all_started = asyncio.Event()

    async def held_list_all(self: ArchiveClient, prefix: str) -> Any:
        started.append(prefix)
        if len(started) == 8:
            all_started.set()
        await all_started.wait()  # one listing after another would never get past here
        return await real_list_all(self, prefix)

    monkeypatch.setattr(ArchiveClient, "list_all", held_list_all)

    async def plan() -> list[str]:
        async with ArchiveClient(settings) as client:
            planned, _ = await asyncio.wait_for(
                discover(get_dataset("spot", "klines"), FOUR_SYMBOLS, client), timeout=60
            )
            return [p.key for p in planned]

    keys = asyncio.run(plan())
    assert len(started) == 8
    assert keys == [f"{SPOT_1M}BTCUSDT-1m-2020-01-0{day}.zip" for day in (1, 2, 3)]


def test_a_listing_that_fails_stops_the_run_and_leaves_no_listing_behind(
    tmp_path: Path, settings_for: Callable[..., Settings], archive: ArchiveServer
) -> None:
    """One listing failing after its retries raises as is; the other listings are cancelled."""
    archive.faults.add("listing", Fault.status(500), times=40)
    settings = settings_for(str(tmp_path / "lake"), http_retries=1, retry_backoff_seconds=0)

    async def run_and_count_leftovers() -> int:
        with pytest.raises(SourceError, match="500"):
            await ingest(FOUR_SYMBOLS, settings)
        return len(asyncio.all_tasks()) - 1  # this coroutine's own task

    assert asyncio.run(run_and_count_leftovers()) == 0
