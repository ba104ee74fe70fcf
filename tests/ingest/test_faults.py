"""Ingest through an archive that misbehaves on a schedule: every file still lands, exit 0."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.cli.test_app import KLINES, lakehouse
from tests.conftest import env_for
from tests.servers.archive_server import Fault

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers.archive_server import ArchiveServer

SPOT_1M = "data/spot/daily/klines/BTCUSDT/1m/"
FIRST_HTML = SPOT_1M + "BTCUSDT-1m-2020-01-01.zip"
FIRST_TRUNCATED = SPOT_1M + "BTCUSDT-1m-2020-01-02.zip"
MINUTES = "SELECT count(DISTINCT open_time) AS minutes, count(*) AS n FROM silver.spot_klines"


def misbehave(archive: ArchiveServer) -> None:
    """Script the faults: 503, 429 with Retry-After: 1, cut bodies and HTML pages."""
    archive.faults.every(3, Fault.status(503))
    archive.faults.every(5, Fault.status(429, retry_after=1))
    archive.faults.every(7, Fault.truncate_share(0.5), objects_only=True)
    archive.faults.every(11, Fault.html(), objects_only=True)
    archive.faults.add("/" + FIRST_HTML, Fault.html())
    archive.faults.add("/" + FIRST_TRUNCATED, Fault.truncate_share(0.5))


@pytest.mark.req("R3.2", "R5.1")
def test_three_real_days_land_whole_through_an_archive_that_misbehaves(
    tmp_path: Path, archive: ArchiveServer
) -> None:
    """Every 3rd request 503, every 5th 429, every 7th object cut, every 11th HTML, and the
    first GETs of two zips bad: the 3 bundled spot days still land 4,320 minutes, exit 0."""
    misbehave(archive)
    env = env_for(archive, str(tmp_path / "lake"))
    ingested = lakehouse(env, *KLINES)
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    answered = archive.requests
    statuses = [r.status for r in answered]
    assert 503 in statuses and 429 in statuses  # the faults were met, and retried through
    zips = [r for r in answered if r.path == "/" + FIRST_TRUNCATED]
    assert zips[0].bytes_sent < zips[-1].bytes_sent  # cut first, whole at last
    archive.faults.clear()
    out = lakehouse(env, "sql", MINUTES, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"minutes": 4320, "n": 4320}]
