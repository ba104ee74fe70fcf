"""A large tick file parsed while it downloads lands exactly as the ordinary path lands it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

import pytest
from deltalake import DeltaTable

from crypto_lakehouse.ingest import fetch, overlap
from crypto_lakehouse.ingest import run as ingest_module
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import publish
from tests.servers.archive_server import Fault

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import polars as pl

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.ingest.parse.file import ParseTask
    from tests.servers.archive_server import ArchiveServer

KEY = "data/futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip"
REQUEST = IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), start=date(2026, 5, 8),
                        end=date(2026, 5, 8))  # fmt: skip
ROWS = "SELECT * EXCLUDE (_ingested_at) FROM silver.cm_agg_trades ORDER BY agg_trade_id"


@dataclass
class StreamLog:
    """What the streamed parses of a run did, seen from the ingesting process."""

    started: list[str] = field(default_factory=list)
    used: list[bool] = field(default_factory=list)
    tasks: list[ParseTask] = field(default_factory=list)


@pytest.fixture
def streams(monkeypatch: pytest.MonkeyPatch) -> StreamLog:
    """Make the 1.4 MB fixture count as a large file and record every streamed parse."""
    monkeypatch.setattr(fetch, "SMALL_FILE_BYTES", 0)
    log = StreamLog()
    start, finish, parse = (
        overlap.StreamedParse.start,
        overlap.StreamedParse.finish,
        ingest_module.parse_file,
    )

    def spy_start(self: overlap.StreamedParse, path: Path) -> None:
        log.started.append(path.name)
        start(self, path)

    async def spy_finish(self: overlap.StreamedParse, verified: Path) -> Any:
        written = await finish(self, verified)
        log.used.append(written is not None)
        return written

    async def spy_parse(run: Any, plan: Any, entry: Any, local: Path, previous: Any) -> None:
        log.tasks.append(ingest_module.task_for(run, plan, entry.revision, local))
        await parse(run, plan, entry, local, previous)

    monkeypatch.setattr(overlap.StreamedParse, "start", spy_start)
    monkeypatch.setattr(overlap.StreamedParse, "finish", spy_finish)
    monkeypatch.setattr(ingest_module, "parse_file", spy_parse)
    return log


def _rows(root: str) -> pl.DataFrame:
    """Return the tick table's rows without the ingest instant."""
    return QueryEngine(LakeRoot.at(root)).sql(ROWS)


def _orphans(root: Path) -> set[str]:
    """Return Parquet files in the table folder that no commit references."""
    table = root / "silver" / "cm_agg_trades"
    on_disk = {str(p) for p in table.rglob("*.parquet")}
    if not (table / "_delta_log").exists():
        return on_disk
    return on_disk - {uri.removeprefix("file://") for uri in DeltaTable(str(table)).file_uris()}


@pytest.mark.parametrize("executor", ["threads", "processes"])
@pytest.mark.req("R2.1")
def test_streamed_parse_equals_the_ordinary_parse(
    tmp_path: Path, settings_for: Callable[..., Settings], streams: StreamLog, executor: str
) -> None:
    """Same rows, lineage and revision whether the parse followed the download or not."""
    request = replace(REQUEST, executor=executor)
    streamed = asyncio.run(ingest(request, settings_for(str(tmp_path / "a"), parse_batch_mb=1)))
    assert (len(streams.started), streams.used, streams.tasks) == (1, [True], [])
    plain = asyncio.run(
        ingest(request, settings_for(str(tmp_path / "b"), parse_batch_mb=1, stream_parse=False))
    )
    assert len(streams.started) == 1 and len(streams.tasks) == 1  # the second run did not stream
    assert streamed.rows_loaded == plain.rows_loaded == 105_280
    assert _rows(str(tmp_path / "a")).equals(_rows(str(tmp_path / "b")))
    assert not _orphans(tmp_path / "a")


@pytest.mark.req("R3.2")
def test_cut_download_abandons_the_stream_and_lands_the_retry(
    tmp_path: Path, settings_for: Callable[..., Settings], archive: ArchiveServer,
    streams: StreamLog,
) -> None:  # fmt: skip
    """A body cut mid-way is retried; the parse that followed it leaves no file behind."""
    archive.faults.add("/" + KEY, Fault.truncate(600_000))
    result = asyncio.run(ingest(REQUEST, settings_for(str(tmp_path / "lake"))))
    assert [f.outcome for f in result.files] == ["loaded"]
    assert result.rows_loaded == 105_280
    assert len(streams.started) == 2  # the cut try and the retry
    assert streams.used == [False] and len(streams.tasks) == 1  # the ordinary parse took over
    assert not _orphans(tmp_path / "lake")


@pytest.mark.req("R3.3")
def test_checksum_mismatch_commits_nothing_the_stream_parsed(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path,
    streams: StreamLog,
) -> None:  # fmt: skip
    """Rows parsed from a body that fails its CHECKSUM never reach silver."""
    publish(archive_root, KEY, "\n".join(_fixture_lines(archive_root)) + "\n", checksum="0" * 64)
    result = asyncio.run(ingest(REQUEST, settings_for(str(tmp_path / "lake"))))
    assert [f.outcome for f in result.files] == ["checksum_mismatch"]
    assert streams.started and not streams.used and not streams.tasks
    assert not _orphans(tmp_path / "lake")


@pytest.mark.req("R5.3")
def test_bad_row_in_a_streamed_file_is_quarantined_with_its_line(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path,
    streams: StreamLog,
) -> None:  # fmt: skip
    """A malformed cell found while streaming quarantines the verified file, line named."""
    lines = _fixture_lines(archive_root)
    lines[50_000] = lines[50_000].replace("false", "nope", 1).replace("true", "nope", 1)
    publish(archive_root, KEY, "\n".join(lines) + "\n")
    result = asyncio.run(ingest(REQUEST, settings_for(str(tmp_path / "lake"), parse_batch_mb=1)))
    assert [f.outcome for f in result.files] == ["quarantined"]
    assert "line 50001" in result.files[0].reason
    assert len(streams.started) == 1 and not streams.tasks
    assert not _orphans(tmp_path / "lake")


def _fixture_lines(archive_root: Path) -> list[str]:
    """Return the real COIN-M aggTrades fixture's CSV lines (header first)."""
    import zipfile

    with zipfile.ZipFile(archive_root / KEY) as archive:
        return archive.read(archive.namelist()[0]).decode().splitlines()
