"""fetch_many over real HTTP against the archive stand-in: each file ends as its own fetch would."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.exceptions import (
    ChecksumMismatchError,
    NotAZipError,
    NotFoundUpstreamError,
)
from crypto_lakehouse.sources.binance.archive.bulk_fetch import fetch_many
from crypto_lakehouse.sources.binance.archive.client import ArchiveClient, Body
from tests.servers.archive_files import publish
from tests.servers.archive_server import Fault
from tests.servers.synthetic import kline_csv
from tests.sources.binance._support import SleepRecorder, gets

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from tests.conftest import OverlapGate
    from tests.servers.archive_server import ArchiveServer

BASE = "data/spot/daily/klines/ETHUSDT/1m/"


@pytest.fixture
def settings(settings_for: Callable[..., Settings], tmp_path: Path) -> Settings:
    """Settings aimed at the stand-in, with three retries and short backoff."""
    return settings_for(str(tmp_path / "lake"))


def _publish_days(root: Path, days: int) -> list[str]:
    """Publish `days` daily kline zips with their CHECKSUMs; return their keys in order."""
    keys = []
    for day in range(1, days + 1):
        stamp = f"2021-03-{day:02d}"
        key = f"{BASE}ETHUSDT-1m-{stamp}.zip"
        publish(root, key, kline_csv(stamp))
        keys.append(key)
    return keys


def _fetch_all(
    settings: Settings, keys: list[str], spill: Path, sleep: SleepRecorder | None = None
) -> dict[str, Body | Exception]:
    """Run fetch_many over `keys` and return each key's outcome."""

    async def main() -> dict[str, Body | Exception]:
        async with ArchiveClient(settings, sleep=sleep or SleepRecorder()) as client:
            return {key: got async for key, got in fetch_many(client, keys, spill)}

    return asyncio.run(main())


def test_every_file_arrives_verified_with_one_get_of_each_half(
    settings: Settings,
    archive: ArchiveServer,
    archive_root: Path,
    tmp_path: Path,
    overlap_gate: Callable[[ArchiveServer, float], OverlapGate],
) -> None:
    """12 files, 3 requests at a time: each body is its zip, hashed, after one GET of the zip
    and one of its CHECKSUM; never more than `download_concurrency` GETs in flight."""
    keys = _publish_days(archive_root, 12)
    overlap_gate(archive, 0.02)  # a request waits until another one waits beside it
    got = _fetch_all(settings.model_copy(update={"download_concurrency": 3}), keys,
                     tmp_path / "spill")  # fmt: skip
    assert sorted(got) == keys
    for key in keys:
        body = got[key]
        assert isinstance(body, Body)
        source = (archive_root / key).read_bytes()
        assert body.data == source
        assert body.sha256 == hashlib.sha256(source).hexdigest()
        assert gets(archive, key) == [200]
        assert gets(archive, key + ".CHECKSUM") == [200]
    assert 1 < archive.max_in_flight <= 3


def test_a_failed_first_get_goes_on_under_the_retry_policy(
    settings: Settings, archive: ArchiveServer, archive_root: Path, tmp_path: Path
) -> None:
    """A 503 on a zip, a cut body and a 503 on a CHECKSUM: each is retried once, as its own
    fetch would retry it, and every file arrives verified."""
    keys = _publish_days(archive_root, 6)
    archive.faults.add("/" + keys[1], Fault.status(503))
    archive.faults.add("/" + keys[2], Fault.truncate(500))
    archive.faults.add("/" + keys[3] + ".CHECKSUM", Fault.status(503))
    sleep = SleepRecorder()
    got = _fetch_all(settings, keys, tmp_path / "spill", sleep=sleep)
    assert all(isinstance(got[key], Body) for key in keys)
    assert gets(archive, keys[1]) == [503, 200]
    assert gets(archive, keys[2]) == [200, 200]
    assert gets(archive, keys[3] + ".CHECKSUM") == [503, 200]
    assert len(sleep.waits) == 3  # one backoff per retried GET, the policy's


def test_bad_files_end_as_a_fetch_of_their_own_would(
    settings: Settings, archive: ArchiveServer, archive_root: Path, tmp_path: Path
) -> None:
    """Missing, HTML and checksum-mismatched files get fetch's errors; the others arrive."""
    keys = _publish_days(archive_root, 4)
    missing = f"{BASE}ETHUSDT-1m-2021-04-01.zip"
    mismatched = f"{BASE}ETHUSDT-1m-2021-04-02.zip"
    publish(archive_root, mismatched, kline_csv("2021-04-02"), checksum="0" * 64)
    archive.faults.add("/" + keys[0], Fault.html(), times=10)
    spill = tmp_path / "spill"
    got = _fetch_all(settings, [*keys, missing, mismatched], spill)
    assert isinstance(got[missing], NotFoundUpstreamError)
    html = got[keys[0]]
    assert isinstance(html, NotAZipError)
    assert html.path is not None
    assert html.path.parent == spill
    assert html.path.read_bytes().startswith(b"<!DOCTYPE html>")
    wrong = got[mismatched]
    assert isinstance(wrong, ChecksumMismatchError)
    assert gets(archive, mismatched) == [200, 200]  # downloaded twice, as fetch does
    assert all(isinstance(got[key], Body) for key in keys[1:])


def test_closing_early_cancels_the_rest_and_leaves_the_client_usable(
    settings_for: Callable[..., Settings],
    archive: ArchiveServer,
    archive_root: Path,
    tmp_path: Path,
) -> None:
    """A caller that stops after the first file cancels the fetches still running, and their
    request slots come back: with one slot, a fetch after the early close still succeeds."""
    keys = _publish_days(archive_root, 4)
    settings = settings_for(str(tmp_path / "lake"), download_concurrency=1)

    async def main() -> tuple[str, Body]:
        async with ArchiveClient(settings) as client:
            fetched = fetch_many(client, keys, tmp_path / "spill")
            first_key, _ = await anext(fetched)
            await fetched.aclose()
            again = await asyncio.wait_for(client.fetch(keys[-1], tmp_path / "spill"), 30)
            return first_key, again

    first_key, again = asyncio.run(main())
    assert first_key in keys
    assert again.data == (archive_root / keys[-1]).read_bytes()
