"""Helpers for tests that go through the real pipeline: ingest fixtures, doctor archive files."""

from __future__ import annotations

import asyncio
import zipfile
from datetime import date
from typing import TYPE_CHECKING

from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.storage.bronze import Manifest
from tests.servers.archive_files import publish

if TYPE_CHECKING:
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.ingest.results import IngestResult
    from crypto_lakehouse.storage.root import LakeRoot

SPOT_1M = "data/spot/daily/klines/BTCUSDT/1m/"
SPOT_REQUEST = IngestRequest(
    "spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1), date(2020, 1, 3)
)


def run_ingest(request: IngestRequest, settings: Settings) -> IngestResult:
    """Run one ingest to completion."""
    return asyncio.run(ingest(request, settings))


def spot_key(day: str) -> str:
    """Return the archive key of the BTCUSDT 1m file of a day (`2020-01-02`)."""
    return f"{SPOT_1M}BTCUSDT-1m-{day}.zip"


def real_lines(archive_root: Path, day: str) -> list[str]:
    """Return the CSV lines of the real BTCUSDT 1m file of a day, read from its zip."""
    with zipfile.ZipFile(archive_root / spot_key(day)) as archive:
        text = archive.read(archive.namelist()[0]).decode()
    return text.splitlines()


def republish(archive_root: Path, day: str, lines: list[str]) -> None:
    """Replace the day's archive file (and CHECKSUM) with these CSV lines."""
    publish(archive_root, spot_key(day), "\n".join(lines) + "\n")


def touched(lake: LakeRoot, result: IngestResult) -> list[tuple[str, str, str]]:
    """Return (symbol, period, stamp) of the files an ingest changed, as its hook would."""
    current = Manifest(lake).current()
    keys = [f.key for f in result.files if f.outcome != "skipped_unchanged" and f.key in current]
    return [(current[key].symbol, current[key].period, current[key].stamp) for key in keys]
