"""The `lakehouse` command as a user runs it: exit codes, stdout data, stderr logs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.conftest import env_for
from tests.servers.archive_files import publish

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import OverlapGate
    from tests.servers.archive_server import ArchiveServer

KLINES = ["ingest", "spot", "klines", "--symbols", "BTCUSDT", "--interval", "1m",
          "--start", "2020-01-01", "--end", "2020-01-03"]  # fmt: skip
COUNT = "SELECT count(*) AS n, min(open_time) AS first FROM silver.spot_klines"


def lakehouse(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.req("R1.1", "R5.1", "R6.2")
def test_ingest_then_sql_json_prints_count_and_first_instant(
    lake_root: str, archive: ArchiveServer
) -> None:
    """`ingest` exits 0 and `sql --format json` prints n = 4320 from 2020-01-01T00:00 UTC."""
    env = env_for(archive, lake_root)
    ingested = lakehouse(env, *KLINES)
    assert ingested.returncode == 0, ingested.stderr
    assert "loaded" in ingested.stdout
    out = lakehouse(env, "sql", COUNT, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": 4320, "first": "2020-01-01T00:00:00+00:00"}]


def test_download_concurrency_flag_bounds_the_requests_in_flight(
    tmp_path: Path,
    archive: ArchiveServer,
    overlap_gate: Callable[[ArchiveServer, float], OverlapGate],
) -> None:
    """`--download-concurrency 1` sends one request at a time; by default several overlap."""
    archive.latency = 0.05  # so that requests which may overlap do
    env = env_for(archive, str(tmp_path / "one"))
    one = lakehouse(env, *KLINES, "--download-concurrency", "1")
    assert one.returncode == 0, one.stderr
    assert archive.max_in_flight == 1
    archive.reset_log()
    overlap_gate(archive, 0.05)  # a request waits until another one waits beside it
    default = lakehouse(env_for(archive, str(tmp_path / "default")), *KLINES)
    assert default.returncode == 0, default.stderr
    assert archive.max_in_flight > 1
    assert "loaded" in one.stdout and "loaded" in default.stdout


def test_ingest_with_a_bad_file_exits_nonzero_and_names_it(
    tmp_path: Path, archive_root: Path, archive: ArchiveServer
) -> None:
    """A checksum mismatch makes the exit code 1 and the summary names the file and reason."""
    key = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-04.zip"
    publish(archive_root, key, "1,2\n", checksum="f" * 64)
    env = env_for(archive, str(tmp_path / "lake"))
    args = [*KLINES[:-1], "2020-01-04"]
    result = lakehouse(env, *args)
    assert result.returncode == 1
    assert "BTCUSDT-1m-2020-01-04.zip" in result.stdout
    assert "checksum_mismatch" in result.stdout
    counted = lakehouse(env, "sql", "SELECT count(*) AS n FROM silver.spot_klines", "--format",
                        "csv")  # fmt: skip
    assert counted.stdout.splitlines() == ["n", "4320"]


@pytest.mark.req("R7.2")
def test_logs_are_json_on_stderr_and_errors_have_no_traceback(
    tmp_path: Path, archive: ArchiveServer
) -> None:
    """Structured logs go to stderr as JSON; a user error prints one line and exits 2."""
    env = env_for(archive, str(tmp_path / "lake"))
    ok = lakehouse(env, *KLINES)
    events = [json.loads(line) for line in ok.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "silver_committed" for e in events)
    bad = lakehouse(env, "sql", "SELECT * FROM silver.nope")
    assert bad.returncode == 2
    assert "silver.nope does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong = lakehouse(env, "ingest", "spot", "klines", "--symbols", "BTCUSDT")
    assert wrong.returncode == 2
    assert "--interval" in wrong.stderr


@pytest.mark.req("R7.1", "R1.1")
def test_status_shows_tables_and_manifest(lake_root: str, archive: ArchiveServer) -> None:
    """`status` lists each table with rows and the manifest counts by status."""
    env = env_for(archive, lake_root)
    lakehouse(env, *KLINES)
    shown = lakehouse(env, "status")
    assert shown.returncode == 0, shown.stderr
    assert "silver.spot_klines" in shown.stdout
    assert "4,320" in shown.stdout
    assert "loaded" in shown.stdout
