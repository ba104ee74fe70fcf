"""Small bar files: worker-written Parquet is appended only when nothing could be replaced."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest

from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.write import bars as direct_bars
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import publish
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings

REQUEST = IngestRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1), date(2020, 1, 3))
COUNTS = ("SELECT count(*) AS n, count(DISTINCT open_time) AS d, count(DISTINCT _bronze_key) AS k "
          "FROM silver.spot_klines")  # fmt: skip


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which way each bar batch was committed: `append` or `replace`."""
    taken: list[str] = []
    append, replace = direct_bars._append, direct_bars._replace

    def spy_append(*args: Any) -> int:
        taken.append("append")
        return append(*args)

    def spy_replace(*args: Any) -> int:
        taken.append("replace")
        return replace(*args)

    monkeypatch.setattr(direct_bars, "_append", spy_append)
    monkeypatch.setattr(direct_bars, "_replace", spy_replace)
    return taken


def _counts(root: Path) -> tuple[int, int, int]:
    """Return rows, distinct open times and distinct archive keys of spot klines."""
    row = QueryEngine(LakeRoot.at(str(root))).sql(COUNTS).row(0)
    return int(row[0]), int(row[1]), int(row[2])


def _orphans(root: Path) -> set[str]:
    """Return Parquet files in the table folder that no commit ever added.

    Files a later commit removed stay on disk until vacuum; those are not orphans.
    """
    table = root / "silver" / "spot_klines"
    added: set[str] = set()
    for log in (table / "_delta_log").glob("*.json"):
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                added.add(unquote(action["add"]["path"]))
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet")} - added


def test_first_load_appends_the_worker_files(
    tmp_path: Path, settings_for: Callable[..., Settings], paths: list[str]
) -> None:
    """Three fresh days land in one append of the worker's files, nothing rewritten."""
    root = tmp_path / "lake"
    result = asyncio.run(ingest(REQUEST, settings_for(str(root), auto_compact=False)))
    assert result.rows_loaded == 4320
    assert paths == ["append"]
    assert _counts(root) == (4320, 4320, 3)
    assert not _orphans(root)


def test_republished_day_is_replaced_not_appended(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path,
    paths: list[str],
) -> None:  # fmt: skip
    """A new revision of a loaded day replaces its rows; the worker's files are cleaned up."""
    root = tmp_path / "lake"
    settings = settings_for(str(root), auto_compact=False)
    asyncio.run(ingest(REQUEST, settings))
    publish(archive_root, "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-02.zip",
            kline_csv("2020-01-02", minutes=1440))  # fmt: skip
    asyncio.run(ingest(REQUEST, settings))
    assert paths == ["append", "replace"]
    assert _counts(root) == (4320, 4320, 3)
    assert not _orphans(root)


@pytest.mark.req("R3.3")
def test_rows_already_committed_are_replaced_when_the_manifest_forgot_them(
    tmp_path: Path, settings_for: Callable[..., Settings], paths: list[str]
) -> None:
    """A crash between the silver commit and the manifest event: the re-run overlaps the
    committed rows, so it replaces them instead of appending duplicates."""
    root = tmp_path / "lake"
    settings = settings_for(str(root), auto_compact=False)
    asyncio.run(ingest(REQUEST, settings))
    shutil.rmtree(root / "bronze" / "_manifest")  # every file looks new again
    again = asyncio.run(ingest(REQUEST, settings))
    assert again.rows_loaded == 4320
    assert paths == ["append", "replace"]
    assert _counts(root) == (4320, 4320, 3)
    assert not _orphans(root)
