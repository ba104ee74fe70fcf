"""Small files (`ingest/small_files.py`): batches start while workers idle; bronze first."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from deltalake import DeltaTable

from crypto_lakehouse.ingest import small_files
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.run_state import DownloadPace
from crypto_lakehouse.ingest.runtime.cpu_load import CpuLoad
from crypto_lakehouse.ingest.small_files import SmallFileBatches
from crypto_lakehouse.storage.bronze import Manifest
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import publish
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from tests.servers.archive_server import ArchiveServer

ETH_1M = "data/spot/daily/klines/ETHUSDT/1m/"


def _publish_days(archive_root: Path, first: date, days: int) -> None:
    """Publish `days` short ETHUSDT 1m files from `first` on."""
    for offset in range(days):
        day = (first + timedelta(days=offset)).isoformat()
        publish(archive_root, f"{ETH_1M}ETHUSDT-1m-{day}.zip", kline_csv(day, minutes=30))


def _count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every batch the ingest hands to its workers."""
    sizes: list[int] = []
    real = small_files.store_and_parse_batch

    def counting(files: Any, *args: Any) -> Any:
        sizes.append(len(files))
        return real(files, *args)

    monkeypatch.setattr(small_files, "store_and_parse_batch", counting)
    return sizes


@pytest.fixture
def ingest_24_days(
    tmp_path: Path,
    settings_for: Callable[..., Settings],
    archive_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], list[int]]:
    """Ingest 24 daily files with 16-file batches on 2 workers; return the batch sizes."""

    def run(overlap: str) -> list[int]:
        _publish_days(archive_root, date(2021, 1, 1), 24)
        sizes = _count_batches(monkeypatch)
        settings = settings_for(str(tmp_path / "lake"), parse_batch_files=16, workers=2,
                                auto_compact=False, overlap_parse=overlap)  # fmt: skip
        request = IngestRequest("spot", "klines", ("ETHUSDT",), "1m", date(2021, 1, 1),
                                date(2021, 1, 24))  # fmt: skip
        result = asyncio.run(ingest(request, settings))
        assert result.ok
        assert result.rows_loaded == 24 * 30
        return sizes

    return run


@pytest.mark.req("R2.1")
def test_batches_start_small_while_workers_are_idle(
    ingest_24_days: Callable[[str], list[int]],
) -> None:
    """A worker that waits takes a batch of an eighth; no batch exceeds parse_batch_files."""
    sizes = ingest_24_days("always")
    assert sum(sizes) == 24
    assert len(sizes) >= 2
    assert max(sizes) <= 16
    assert sizes[0] == 2  # the first batch starts with an eighth of 16, on an idle worker


def test_files_wait_for_the_downloads_when_overlap_is_off(
    ingest_24_days: Callable[[str], list[int]],
) -> None:
    """With `overlap_parse=never` every file waits, then equal batches share the workers."""
    assert ingest_24_days("never") == [12, 12]


@pytest.mark.req("R2.1")
def test_files_parse_beside_the_downloads_of_a_distant_archive(
    ingest_24_days: Callable[[str], list[int]],
    archive: ArchiveServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a CDN's round trip on every request the cores idle, so `auto` parses meanwhile."""
    archive.latency = 0.1  # downloads last long enough to be worth parsing beside
    # The cores' load is given, not read: on a shared host /proc/stat shows other work.
    monkeypatch.setattr(CpuLoad, "busy_share", lambda self: 0.2)
    sizes = ingest_24_days("auto")
    assert sum(sizes) == 24
    assert sizes[0] < 12  # started while files were still downloading, not after them all
    assert len(sizes) > 2


def test_a_batch_larger_than_a_commit_reaches_silver_in_one_commit(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A batch's files share the worker's Parquet file, so a commit never splits them."""
    _publish_days(archive_root, date(2021, 1, 1), 12)
    root = str(tmp_path / "lake")
    settings = settings_for(root, parse_batch_files=16, commit_batch_files=3, workers=1,
                            overlap_parse="never", auto_compact=False)  # fmt: skip
    request = IngestRequest("spot", "klines", ("ETHUSDT",), "1m", date(2021, 1, 1),
                            date(2021, 1, 12))  # fmt: skip
    result = asyncio.run(ingest(request, settings))
    assert result.ok
    assert result.rows_loaded == 12 * 30
    current = Manifest(LakeRoot.at(root)).current()
    assert len({current[f.key].silver_version for f in result.loaded}) == 1


def test_a_refused_bronze_write_fails_those_files_and_loads_the_others(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """One symbol's bronze folder is blocked: its files fail, the other symbol's load."""
    _publish_days(archive_root, date(2020, 1, 1), 3)
    root = tmp_path / "lake"
    blocked = root / "bronze" / "binance" / ETH_1M.rstrip("/")
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where a folder must go")
    request = IngestRequest("spot", "klines", ("BTCUSDT", "ETHUSDT"), "1m", date(2020, 1, 1),
                            date(2020, 1, 3))  # fmt: skip
    result = asyncio.run(ingest(request, settings_for(str(root))))
    outcomes = {f.key: f for f in result.files}
    assert not result.ok
    assert sorted(f.key.split("/")[4] for f in result.loaded) == ["BTCUSDT"] * 3
    failed = [f for key, f in outcomes.items() if key.startswith(ETH_1M)]
    assert [f.outcome for f in failed] == ["failed"] * 3
    assert all("could not store in bronze" in f.reason for f in failed)
    blocked.unlink()
    again = asyncio.run(ingest(request, settings_for(str(root))))
    assert sorted(f.key.split("/")[4] for f in again.loaded) == ["ETHUSDT"] * 3
    current = Manifest(LakeRoot.at(str(root))).current()
    assert all(current[f.key].status == "loaded" for f in again.loaded)


def test_spawned_workers_store_and_parse_batches_like_threads(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """Bodies travel to a spawned process pool; bronze and silver come out as with threads."""
    _publish_days(archive_root, date(2021, 1, 1), 6)
    request = IngestRequest("spot", "klines", ("ETHUSDT",), "1m", date(2021, 1, 1),
                            date(2021, 1, 6))  # fmt: skip
    spawned = IngestRequest("spot", "klines", ("ETHUSDT",), "1m", date(2021, 1, 1),
                            date(2021, 1, 6), executor="processes")  # fmt: skip
    roots = {"threads": tmp_path / "threads", "processes": tmp_path / "processes"}
    for name, req in (("threads", request), ("processes", spawned)):
        result = asyncio.run(ingest(req, settings_for(str(roots[name]), workers=2)))
        assert result.ok
        assert result.rows_loaded == 6 * 30
    for name, root in roots.items():
        bronze = sorted(p.name for p in (root / "bronze").rglob("*.zip"))
        assert len(bronze) == 6, name
    uris = [LakeRoot.at(str(root)).table_uri("silver", "spot_klines") for root in roots.values()]
    got = [_silver_rows(uri) for uri in uris]
    assert got[0].height == 6 * 30
    assert got[0].equals(got[1])


def _silver_rows(uri: str) -> pl.DataFrame:
    """Read a silver table's rows in time order, without the ingest timestamp."""
    frame = pl.from_arrow(DeltaTable(uri).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.drop("_ingested_at").sort("open_time")


@pytest.fixture
def started_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of each batch `schedule` starts, instead of starting it."""
    started: list[int] = []

    def start(batches: SmallFileBatches, size: int) -> None:
        started.append(len(batches.held[:size]))
        batches.held = batches.held[size:]
        batches.running += 1

    monkeypatch.setattr(SmallFileBatches, "start", start)
    return started


class _Load:
    """A CPU load fixed at a share (None: too early to tell), in place of the measured one."""

    def __init__(self, share: float | None) -> None:
        self.share = share

    def busy_share(self) -> float | None:
        return self.share


def _scheduled_run(
    waiting: int,
    *,
    busy: int,
    downloading: int,
    overlap: str = "always",
    load: float | None = 0.0,
    seconds_left: float | None = 1.0,
) -> Any:
    """A run with 1 KB zips waiting for a batch, two workers and 64-file batches.

    `seconds_left` is how long the downloads still awaited are projected to take.
    """
    settings: Any = SimpleNamespace(
        tuning=SimpleNamespace(parse_batch_files=64, overlap_parse=overlap), memory_budget_mb=2048
    )
    pace: Any = SimpleNamespace(awaiting=downloading, seconds_left=lambda: seconds_left)
    load_now: Any = _Load(load)
    return SmallFileBatches(
        workers=2, settings=settings, pace=pace, parse=_no_parse, commits=_NO_COMMITS,
        held=list(range(waiting)), held_bytes=waiting * 1024, running=busy, cpu_load=load_now,
    )  # fmt: skip


async def _no_parse(batch: list[Any]) -> list[Any]:
    """Stand in for a batch's parse: scheduling tests start no batch."""
    raise AssertionError(f"no batch runs in a scheduling test: {len(batch)} files")


_NO_COMMITS: Any = None


def test_files_left_when_downloads_end_make_one_batch_per_worker_at_once(
    started_batches: list[int],
) -> None:
    """What waits when nothing more downloads is split evenly, busy workers included."""
    run = _scheduled_run(59, busy=1, downloading=0)
    run.schedule()
    assert started_batches == [30, 29]  # no tail of halving batches as workers free up
    assert run.held == []
    started_batches.clear()
    run = _scheduled_run(300, busy=0, downloading=0)
    run.schedule()
    assert started_batches == [50] * 6  # 300 files, 2 workers, at most 64 a batch


def test_while_files_download_batches_start_on_idle_workers_only(
    started_batches: list[int],
) -> None:
    """A short batch starts for an idle worker; with every worker busy, files wait to grow it."""
    run = _scheduled_run(10, busy=1, downloading=5)
    run.schedule()
    assert started_batches == [10]
    run.held = list(range(20))
    run.schedule()
    assert started_batches == [10] and len(run.held) == 20
    run.held = list(range(70))
    run.schedule()
    assert started_batches == [10, 64] and len(run.held) == 6


def test_busy_cores_hold_files_until_the_downloads_end(started_batches: list[int]) -> None:
    """In auto mode, downloads that keep the cores busy, or too new to tell, are not joined.

    Once idle cores let a batch start, later batches start too, whatever the load says then.
    """
    run = _scheduled_run(70, busy=0, downloading=5, overlap="auto", load=None)
    run.schedule()
    assert started_batches == []
    run.cpu_load = _Load(0.75)  # a local server and the client
    run.schedule()
    assert started_batches == []
    run.cpu_load = _Load(0.1)  # the downloads now wait on the network
    run.schedule()
    assert started_batches == [64]  # the 6 left wait to grow: 8 make a batch beside downloads
    run.cpu_load = _Load(0.9)  # the batch's own parse loads the machine: no reason to stop
    run.running = 0
    run.held = list(range(10))
    run.schedule()
    assert started_batches == [64, 10]
    started_batches.clear()
    run = _scheduled_run(70, busy=0, downloading=5, overlap="never", load=0.0)
    run.schedule()
    assert started_batches == []
    run.pace.awaiting = 0
    run.schedule()
    assert started_batches == [35, 35]


def test_downloads_about_to_end_are_waited_for_even_on_idle_cores(
    started_batches: list[int],
) -> None:
    """A parse beside the last few downloads only splits the files into small batches."""
    run = _scheduled_run(70, busy=0, downloading=5, overlap="auto", load=0.3, seconds_left=0.02)
    run.schedule()
    assert started_batches == []
    run.pace.seconds_left = lambda: None  # nothing arrived yet: no pace to project
    run.schedule()
    assert started_batches == []
    run.pace.seconds_left = lambda: 0.5  # a distant archive: half a second still to go
    run.schedule()
    assert started_batches == [64]
    assert run.beside_downloads


def test_the_time_left_to_download_is_projected_from_the_pace_so_far() -> None:
    """Files still awaited take as long each as the arrived ones took on average."""
    pace = DownloadPace()
    pace.begin(10, started=100.0)
    assert pace.seconds_left(now=100.2) is None  # nothing arrived yet: no pace to project
    for key in "abcd":
        pace.done(key)
    assert pace.seconds_left(now=100.2) == pytest.approx(0.3)  # 6 files, 0.05 s each


def test_held_zips_never_exceed_an_eighth_of_the_memory_budget(
    started_batches: list[int],
) -> None:
    """A fast mirror cannot make files pile up in memory: past the limit, batches start."""
    run = _scheduled_run(70, busy=0, downloading=500, overlap="never")
    run.held_bytes = run.hold_limit_bytes()  # 256 MB of a 2 GB budget
    run.schedule()
    assert started_batches == [64]
