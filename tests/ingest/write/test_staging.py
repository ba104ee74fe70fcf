"""Staged rows in the lake (workers on other hosts): written, read back, cleared, swept."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from crypto_lakehouse.exceptions import FormatError, StorageError
from crypto_lakehouse.ingest.parse.file import ParseTask, parse_to_stage
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import FIXTURE_TREE, make_zip

KEY = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-02.zip"
NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def _task(zip_path: Path, staged_path: str, stage_lake: LakeRoot | None) -> ParseTask:
    """Build the parse task of the spot 1m kline fixture of 2020-01-02."""
    return ParseTask(
        market="spot", data_type="klines", key=KEY, symbol="BTCUSDT", interval="1m",
        period="daily", stamp="2020-01-02", revision=1, zip_path=str(zip_path),
        staged_path=staged_path, chunk_bytes=1 << 20, ingested_at=NOW, stage_lake=stage_lake,
    )  # fmt: skip


@pytest.fixture
def lake(lake_root: str) -> LakeRoot:
    """A lake on local disk, and one on the moto S3 server."""
    return LakeRoot.at(lake_root)


def test_rows_staged_in_a_lake_equal_rows_staged_on_local_disk(
    tmp_path: Path, lake: LakeRoot
) -> None:
    """A lake stage holds the same Arrow rows as a temp-folder stage, and `remove` deletes it."""
    zip_path = FIXTURE_TREE / KEY
    local = parse_to_stage(_task(zip_path, str(tmp_path / "local.arrow"), None))
    prefix = staging.new_run_prefix(NOW)
    in_lake = parse_to_stage(_task(zip_path, f"{prefix}/one.arrow", lake))
    assert in_lake.rows == local.rows == 1440
    assert lake.exists(f"{prefix}/one.arrow")
    assert not (tmp_path / prefix).exists()  # not a relative path on this host's disk
    assert staging.read_table(in_lake.task).equals(staging.read_table(local.task))
    batches = list(staging.batches([in_lake.task, in_lake.task]))  # a path is read once
    assert sum(batch.num_rows for batch in batches) == 1440
    staging.remove(in_lake.task)
    staging.remove(in_lake.task)  # already gone: fine
    assert not lake.exists(f"{prefix}/one.arrow")


def test_a_bad_file_leaves_nothing_staged_in_the_lake(tmp_path: Path, lake: LakeRoot) -> None:
    """A row that fails deep in the file leaves no half-written object behind."""
    with zipfile.ZipFile(FIXTURE_TREE / KEY) as source:
        (member,) = source.namelist()
        lines = source.read(member).decode().splitlines()
    lines[-1] = lines[-1].replace(",", ",x", 1)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(make_zip(member, ("\n".join(lines) + "\n").encode()))
    task = replace(_task(bad, "_staging/run/bad.arrow", lake), chunk_bytes=4096)
    with pytest.raises(FormatError):
        parse_to_stage(task)
    assert not lake.exists("_staging/run/bad.arrow")


def test_sweep_deletes_only_run_prefixes_older_than_the_cutoff(lake: LakeRoot) -> None:
    """Crashed runs' prefixes go; a live run's and foreign folders stay."""
    old = staging.new_run_prefix(NOW - timedelta(days=8))
    live = staging.new_run_prefix(NOW - timedelta(hours=2))
    for prefix in (old, live, f"{staging.STAGING}/notes"):
        lake.put_bytes(b"rows", f"{prefix}/file.arrow")
    swept = staging.sweep_stale(lake, NOW, older_than=timedelta(days=7))
    assert swept == [old.split("/")[1]]
    assert not lake.exists(f"{old}/file.arrow")
    assert lake.exists(f"{live}/file.arrow")
    assert lake.exists(f"{staging.STAGING}/notes/file.arrow")
    staging.remove_prefix(lake, live)
    staging.remove_prefix(lake, live)  # already gone: fine
    assert lake.list_dirs(staging.STAGING) == ["notes"]


def test_a_staged_table_reads_back_as_written(tmp_path: Path, lake: LakeRoot) -> None:
    """read_table returns what open_sink was given (the committer's view of a worker's file)."""
    task = _task(tmp_path / "unused.zip", "_staging/run/t.arrow", lake)
    table = pa.table({"a": [1, 2, 3]})
    with staging.open_sink(task) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert staging.read_table(task).equals(table)


def _stage(task: ParseTask, table: pa.Table) -> None:
    """Write a staged file as a worker does."""
    with staging.open_sink(task) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_replacing_staged_rows_swaps_the_file_whole(tmp_path: Path, lake: LakeRoot) -> None:
    """De-duplicated rows replace the staged file; on disk no temp file stays behind."""
    task = _task(tmp_path / "unused.zip", "_staging/run/t.arrow", lake)
    _stage(task, pa.table({"a": [1, 1, 2]}))
    staging.replace(task, pa.table({"a": [1, 2]}))
    assert staging.read_table(task).equals(pa.table({"a": [1, 2]}))
    assert lake.list_dirs(staging.STAGING) == ["run"]
    if not lake.is_s3:
        assert sorted(p.name for p in (Path(lake.uri) / "_staging" / "run").iterdir()) == [
            "t.arrow"
        ]


@pytest.mark.req("R3.3", "R6.2")
def test_a_failed_replacement_leaves_no_half_written_rows(
    tmp_path: Path, lake: LakeRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing half-way keeps the old rows on disk, and leaves no partial S3 object."""
    task = _task(tmp_path / "unused.zip", "_staging/run/t.arrow", lake)
    old = pa.table({"a": [1, 1, 2]})
    _stage(task, old)

    class FailingWriter:
        def __init__(self, sink: object, schema: pa.Schema) -> None:
            self.sink = sink

        def __enter__(self) -> FailingWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def write_table(self, table: pa.Table) -> None:
            if isinstance(self.sink, str):
                Path(self.sink).write_bytes(b"ARROW1 half")
            else:
                self.sink.write(b"ARROW1 half")  # type: ignore[attr-defined]
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(staging.pa.ipc, "new_file", FailingWriter)
    with pytest.raises(StorageError, match="No space"):
        staging.replace(task, pa.table({"a": [1, 2]}))
    monkeypatch.undo()
    if lake.is_s3:
        assert not lake.exists("_staging/run/t.arrow")  # no abort in pyarrow: deleted
    else:
        assert staging.read_table(task).equals(old)
        assert [p.name for p in (Path(lake.uri) / "_staging" / "run").iterdir()] == ["t.arrow"]
