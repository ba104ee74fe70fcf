"""Executors give identical silver tables; a streamed multi-batch parse equals a one-batch one."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.exceptions import FormatError
from crypto_lakehouse.ingest import file_steps, small_files
from crypto_lakehouse.ingest.parse import file as parse_module
from crypto_lakehouse.ingest.parse.batch import BatchRejected
from crypto_lakehouse.ingest.parse.file import ParseTask, parse_to_stage
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.runtime.executor import DaskExecutor, make_executor
from crypto_lakehouse.ingest.write import staged as silver
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.sources.binance.archive import zipstream
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import FIXTURE_TREE, publish

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from tests.servers.archive_server import ArchiveServer

REQUESTS = (
    IngestRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1), date(2020, 1, 3)),
    IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), None, date(2026, 5, 8), date(2026, 5, 8)),
    IngestRequest("um", "fundingRate", ("BTCUSDT",), None, date(2026, 4, 1), date(2026, 4, 30)),
)
SPOT_DAY = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-02.zip"
CM_DAY = "data/futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip"


def silver_rows(root: str, market: str, data_type: str) -> pl.DataFrame:
    """Return a silver table sorted by its primary key, without `_ingested_at`."""
    dataset = get_dataset(market, data_type)
    frame = tables.read_frame(LakeRoot.at(root), "silver", dataset.table)
    return frame.drop("_ingested_at").sort(list(dataset.primary_key))


def assert_same_silver(request: IngestRequest, expected_root: str, got_root: str) -> None:
    """Assert two lakes hold the same silver rows (and schema) for a request's table."""
    expected = silver_rows(expected_root, request.market, request.data_type)
    got = silver_rows(got_root, request.market, request.data_type)
    assert got.schema == expected.schema
    assert got.equals(expected), f"{request.market} {request.data_type} differs"


def on_dask(request: IngestRequest, address: str) -> IngestRequest:
    """Return the same request, run on the Dask cluster at `address`."""
    return replace(request, executor="dask", dask_address=address)


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """Start a LocalCluster of 2 worker processes (1 thread each); yield its address."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.mark.req("R2.3", "R1.3")
def test_dask_workers_build_the_same_silver_tables_as_threads(
    tmp_path: Path, settings_for: Callable[..., Settings], dask_cluster: str
) -> None:
    """Real archive files ingested on 2 Dask worker processes equal the local thread pool's."""
    local_root, dask_root = str(tmp_path / "threads"), str(tmp_path / "dask")
    for request in REQUESTS:
        threads = asyncio.run(ingest(request, settings_for(local_root, workers=2)))
        remote = asyncio.run(
            ingest(on_dask(request, dask_cluster), settings_for(dask_root, workers=2))
        )
        assert threads.ok and remote.ok
        assert threads.rows_loaded == remote.rows_loaded > 0
        assert sorted(f.key for f in remote.loaded) == sorted(f.key for f in threads.loaded)
    for request in REQUESTS:
        assert_same_silver(request, local_root, dask_root)


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> list[ParseTask]:
    """Record every parse task sent to Dask (alone, or inside a batch of small files)."""
    sent: list[ParseTask] = []
    submit = DaskExecutor.submit

    def recording_submit(self: DaskExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        sent.extend(a for a in args if isinstance(a, ParseTask))
        sent.extend(b.task for a in args if isinstance(a, list) for b in a if hasattr(b, "task"))
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(DaskExecutor, "submit", recording_submit)
    return sent


def assert_names_no_driver_path(task: ParseTask, lake_root: str) -> None:
    """Assert a task reads its zip from bronze and stages its rows in the lake."""
    assert task.zip_path == ""
    assert task.bronze is not None
    lake, path = task.bronze
    assert lake.uri == lake_root.rstrip("/")
    assert path == f"bronze/binance/{task.key}"
    assert task.stage_lake is not None and task.stage_lake.uri == lake.uri
    assert task.staged_path.startswith(f"{staging.STAGING}/")


@pytest.mark.s3
@pytest.mark.req("R1.2", "R2.3", "R6.2")
def test_dask_workers_on_an_s3_lake_read_zips_from_bronze_not_the_drivers_disk(
    tmp_path: Path,
    s3_root: str,
    settings_for: Callable[..., Settings],
    dask_cluster: str,
    sent_tasks: list[ParseTask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With --dask-address and an S3 lake, tasks name bronze objects; the tables still match.

    Workers on other hosts cannot open the driver's temp folder, so every task sent must carry
    no local zip path (an empty `zip_path` would fail the parse), and the rows must equal a
    local thread pool's.
    """
    removed: list[ParseTask] = []
    remove = staging.remove
    monkeypatch.setattr(staging, "remove", lambda task: (removed.append(task), remove(task)))
    local_root = str(tmp_path / "threads")
    for request in REQUESTS:  # bars and funding rates (batched small files), a tick table
        threads = asyncio.run(ingest(request, settings_for(local_root, workers=2)))
        remote = asyncio.run(
            ingest(on_dask(request, dask_cluster), settings_for(s3_root, workers=2))
        )
        assert threads.ok and remote.ok, remote.failed
        assert remote.rows_loaded == threads.rows_loaded > 0
        assert_same_silver(request, local_root, s3_root)
    tick_tasks = [t for t in sent_tasks if t.data_type == "aggTrades"]
    assert tick_tasks and sent_tasks
    for task in sent_tasks:
        assert_names_no_driver_path(task, s3_root)
    assert removed == []  # batches and tick files stage nothing: no deletes sent to S3


@pytest.mark.s3
@pytest.mark.req("R1.2", "R2.3")
def test_dask_workers_stage_per_file_parses_in_the_lake_and_the_run_clears_them(
    tmp_path: Path,
    s3_root: str,
    settings_for: Callable[..., Settings],
    dask_cluster: str,
    sent_tasks: list[ParseTask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Non-tick files parsed one by one (large bar files) stage under `_staging/` in the lake.

    The driver commits from there, so the rows equal a thread run's without a shared folder,
    and the run deletes its staging prefix when it ends.
    """
    monkeypatch.setattr(small_files, "SMALL_FILE_BYTES", 0)  # every file takes the per-file path
    staged_in_lake: list[bool] = []
    remove = staging.remove

    def checking_remove(task: ParseTask) -> None:
        if task.stage_lake is not None:
            staged_in_lake.append(task.stage_lake.exists(task.staged_path))
        remove(task)

    monkeypatch.setattr(staging, "remove", checking_remove)
    request = REQUESTS[0]
    local_root = str(tmp_path / "threads")
    threads = asyncio.run(ingest(request, settings_for(local_root, workers=2)))
    remote = asyncio.run(ingest(on_dask(request, dask_cluster), settings_for(s3_root, workers=2)))
    assert threads.ok and remote.ok, remote.failed
    assert len(sent_tasks) == len(remote.loaded) == 3
    for task in sent_tasks:
        assert_names_no_driver_path(task, s3_root)
    assert staged_in_lake == [True] * 3  # the driver committed them from the lake
    assert_same_silver(request, local_root, s3_root)
    assert LakeRoot.at(s3_root).list_dirs(staging.STAGING) == []


def test_dask_executor_runs_tasks_and_shuts_down_like_a_pool(dask_cluster: str) -> None:
    """The Dask adapter runs callables remotely and accepts shutdown(cancel_futures=True)."""
    executor, owner = make_executor("dask", 2, dask_address=dask_cluster)
    try:
        assert isinstance(executor, DaskExecutor)
        assert executor.submit(pow, 2, 10).result(timeout=30) == 1024
        assert list(executor.map(abs, [-1, -2])) == [1, 2]
        executor.shutdown(wait=True, cancel_futures=True)
    finally:
        owner.close()  # type: ignore[union-attr]


def _task(zip_path: Path, key: str, staged: Path, chunk_bytes: int) -> ParseTask:
    """Build the parse task of one archive file (daily period)."""
    dataset_path = key.split("/")
    market = {"spot": "spot", "futures": dataset_path[2]}[dataset_path[1]]
    data_type = dataset_path[4] if market != "spot" else dataset_path[3]
    symbol = dataset_path[5] if market != "spot" else dataset_path[4]
    interval = dataset_path[5] if data_type == "klines" else None
    return ParseTask(
        market=market, data_type=data_type, key=key, symbol=symbol, interval=interval,
        period="daily", stamp=key[-14:-4], revision=1, zip_path=str(zip_path),
        staged_path=str(staged), chunk_bytes=chunk_bytes,
        ingested_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def _parse_and_commit(
    tmp_path: Path, zip_path: Path, key: str, chunk_bytes: int, name: str
) -> tuple[Any, pl.DataFrame]:
    """Parse a zip with a chunk size, commit it to its own lake, return (parsed, rows)."""
    task = _task(zip_path, key, tmp_path / f"{name}.staged", chunk_bytes)
    parsed = parse_to_stage(task)
    lake = LakeRoot.at(str(tmp_path / name))
    silver.commit_files(lake, [parsed])
    dataset = get_dataset(task.market, task.data_type)
    rows = tables.read_frame(lake, "silver", dataset.table).sort(list(dataset.primary_key))
    return parsed, rows


@pytest.fixture
def small_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Read the zip in tiny blocks and count the CSV batches the parser handles."""
    # With 4 MB compressed reads a small file inflates in one piece, so a tiny chunk_bytes
    # alone would still give one batch; small reads make the streaming path really stream.
    monkeypatch.setattr(zipstream, "_READ_SIZE", 1024, raising=False)
    batches: list[int] = []
    real = parse_module.parse_chunk

    def counting(chunk: bytes, *args: Any, **kwargs: Any) -> Any:
        batches.append(len(chunk))
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(parse_module, "parse_chunk", counting)
    return batches


@pytest.mark.parametrize("key", [SPOT_DAY, CM_DAY], ids=["spot-klines", "cm-aggtrades-header"])
def test_streamed_multi_batch_parse_equals_single_batch(
    tmp_path: Path, small_reads: list[int], key: str
) -> None:
    """Parsing in 4 KB batches yields exactly the rows (and file facts) of one big batch."""
    zip_path = FIXTURE_TREE / key
    one, one_rows = _parse_and_commit(tmp_path, zip_path, key, 1 << 30, "single")
    assert len(small_reads) == 1
    small_reads.clear()
    many, many_rows = _parse_and_commit(tmp_path, zip_path, key, 4096, "streamed")
    assert len(small_reads) > 10, "the file was not parsed in many batches"
    assert max(small_reads) < 64 << 10
    assert many_rows.equals(one_rows)
    for name in ("rows", "duplicates", "min_time", "max_time", "header", "time_unit", "csv_bytes"):
        assert getattr(many, name) == getattr(one, name), name


def test_streamed_parse_drops_duplicates_across_batch_boundaries(
    tmp_path: Path, small_reads: list[int]
) -> None:
    """A file holding its rows twice over loads each key once, however it is batched."""
    original = (FIXTURE_TREE / SPOT_DAY).read_bytes()
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(original)) as archive:
        lines = archive.read(archive.namelist()[0]).splitlines(keepends=True)
    doubled = b"".join(lines + lines)
    zip_path = publish(tmp_path / "archive", SPOT_DAY, doubled)
    one, one_rows = _parse_and_commit(tmp_path, zip_path, SPOT_DAY, 1 << 30, "single")
    small_reads.clear()
    many, many_rows = _parse_and_commit(tmp_path, zip_path, SPOT_DAY, 4096, "streamed")
    assert one.rows == one_rows.height == 1440
    assert many_rows.height == 1440
    assert many.duplicates == one.duplicates == 1440


@pytest.mark.s3
def test_dask_workers_load_files_left_in_bronze_without_copies_on_the_drivers_disk(
    tmp_path: Path,
    s3_root: str,
    archive: ArchiveServer,
    settings_for: Callable[..., Settings],
    dask_cluster: str,
    sent_tasks: list[ParseTask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Files a run quarantined (bronze kept) are parsed again on Dask straight from bronze."""
    request = REQUESTS[0]
    with monkeypatch.context() as patch:  # a thread run whose parser rejects every file
        patch.setattr(small_files, "store_and_parse_batch", _rejecting_batch)
        patch.setattr(file_steps, "parse_to_stage", _rejecting_parse)
        first = asyncio.run(ingest(request, settings_for(s3_root, workers=2)))
    assert [f.outcome for f in first.files] == ["quarantined"] * 3

    def no_copy(self: LakeRoot, relative: str, local: Path) -> Path:
        raise AssertionError(f"{relative} copied to the driver's disk")

    monkeypatch.setattr(LakeRoot, "get_file", no_copy)
    archive.reset_log()
    remote = asyncio.run(ingest(on_dask(request, dask_cluster), settings_for(s3_root, workers=2)))
    assert remote.ok and len(remote.loaded) == 3, remote.failed
    assert not [r for r in archive.requests if r.path.endswith(".zip")]  # from bronze
    for task in sent_tasks:
        assert_names_no_driver_path(task, s3_root)
    local_root = str(tmp_path / "threads")
    asyncio.run(ingest(request, settings_for(local_root, workers=2)))
    assert_same_silver(request, local_root, s3_root)


def _rejecting_batch(*args: object) -> object:
    """Stand in for a batch parse that cannot take its files whole."""
    raise BatchRejected("injected")


def _rejecting_parse(*args: object) -> object:
    """Stand in for a parser that finds a bad row in every file."""
    raise FormatError("injected: bad row")
