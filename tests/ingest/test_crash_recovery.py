"""SIGKILL at a random moment, re-run, and end with the same tables as an uninterrupted run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import polars as pl
import pytest

from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.conftest import env_for
from tests.servers.archive_files import publish
from tests.servers.archive_server import Fault
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers.archive_server import ArchiveServer

DAYS = [f"2021-03-{day:02d}" for day in range(1, 21)]
BASE = "data/spot/daily/klines/ETHUSDT/1m/"
ARGS = ["ingest", "spot", "klines", "--symbols", "ETHUSDT", "--interval", "1m",
        "--start", DAYS[0], "--end", DAYS[-1]]  # fmt: skip


def _cli(archive: ArchiveServer, root: str, *extra: str) -> subprocess.Popen[bytes]:
    """Start `lakehouse ingest` in a child process."""
    env = env_for(archive, root)
    env["LAKEHOUSE_TUNING__COMMIT_BATCH_FILES"] = "3"
    env["LAKEHOUSE_DOWNLOAD_CONCURRENCY"] = "2"
    return subprocess.Popen(
        [sys.executable, "-m", "crypto_lakehouse", *ARGS, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _table(root: str) -> pl.DataFrame:
    """Return silver rows in key order without the per-run ingest time."""
    frame = QueryEngine(LakeRoot.at(root)).sql(
        "SELECT * EXCLUDE (_ingested_at) FROM silver.spot_klines ORDER BY open_time"
    )
    return frame


@pytest.mark.slow
@pytest.mark.req("R3.1", "R3.3")
def test_killed_ingest_rerun_matches_uninterrupted_run(
    tmp_path: Path, archive_root: Path, archive: ArchiveServer
) -> None:
    """Kill the ingest with SIGKILL at random moments; each re-run converges to the same table."""
    for day in DAYS:
        key = f"{BASE}ETHUSDT-1m-{day}.zip"
        publish(archive_root, key, kline_csv(day))
        archive.faults.add("/" + key, Fault.delay(0.5), times=1000)
    reference = str(tmp_path / "reference")
    started = time.monotonic()
    assert _cli(archive, reference).wait(timeout=120) == 0
    assert time.monotonic() - started > 4.5, "too short to kill mid-way"
    expected = _table(reference)
    assert expected.height == 1440 * len(DAYS)
    rng = random.Random(20261125)
    for attempt in range(3):
        root = str(tmp_path / f"crashed-{attempt}")
        proc = _cli(archive, root)
        time.sleep(rng.uniform(1.2, 4.0))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, "the ingest finished before the kill"
        assert _cli(archive, root).wait(timeout=120) == 0
        got = _table(root)
        assert got.height == expected.height
        assert got.equals(expected), f"attempt {attempt} diverged after SIGKILL"
