"""`lakehouse update` and `lakehouse stream` as a user runs them: exit codes, summaries."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from tests.cli.test_app import lakehouse
from tests.conftest import env_for
from tests.recent._live_support import drop_archive_day, rest_server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.servers.archive_server import ArchiveServer
    from tests.servers.rest_server import RestServer

UPDATE = ["update", "spot", "klines", "--symbols", "BTCUSDT", "--interval", "1m",
          "--start", "2020-01-01", "--end", "2020-01-04"]  # fmt: skip


@pytest.fixture
def rest() -> Iterator[RestServer]:
    """Serve spot BTCUSDT klines up to 2020-01-05T06:00."""
    with rest_server() as server:
        yield server


def update_env(archive: ArchiveServer, rest: RestServer, root: str) -> dict[str, str]:
    """Return a CLI environment pointing at the archive and REST stand-ins."""
    env = env_for(archive, root)
    env.update({f"LAKEHOUSE_{k.upper()}": v for k, v in rest.settings_overrides().items()})
    return env


@pytest.mark.req("R5.1")
def test_update_fills_gaps_and_prints_the_summary(
    tmp_path: Path, archive_root: Path, archive: ArchiveServer, rest: RestServer
) -> None:
    """Exit 0; the summary counts archive files and REST days; the rows are provisional."""
    drop_archive_day(archive_root, "2020-01-02")
    env = update_env(archive, rest, str(tmp_path / "lake"))
    result = lakehouse(env, *UPDATE)
    assert result.returncode == 0, result.stderr
    lines = {line.strip("│ ").split("│")[0].strip(): line for line in result.stdout.splitlines()}
    assert "2" in lines["archive files loaded"]
    assert "2" in lines["REST days filled"]
    assert "ok" in lines["REST status"]
    assert "closed" in lines["breakers"]
    counted = lakehouse(env, "sql", "SELECT count(*) AS n FROM silver.spot_klines WHERE "
                        "_provisional AND _source = 'rest'", "--format", "csv")  # fmt: skip
    assert counted.stdout.splitlines() == ["n", "2880"]


@pytest.mark.req("R6.1")
def test_a_ban_stops_update_with_a_clear_message_and_exit_2(
    tmp_path: Path, archive: ArchiveServer, rest: RestServer
) -> None:
    """HTTP 418 ends the run: exit 2, and stderr says the IP is banned and until when."""
    rest.add_fault("*", 418, retry_after=300)
    result = lakehouse(update_env(archive, rest, str(tmp_path / "lake")), *UPDATE)
    assert result.returncode == 2
    assert "stopped:" in result.stderr and "HTTP 418" in result.stderr
    assert "banned" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.req("R3.1")
def test_a_region_block_gives_an_archive_only_run_with_the_reason(
    tmp_path: Path, archive: ArchiveServer, rest: RestServer
) -> None:
    """HTTP 451 is not a failure: exit 0 and the summary says REST is unavailable here."""
    rest.add_fault("*", 451, times=20)
    result = lakehouse(update_env(archive, rest, str(tmp_path / "lake")), *UPDATE)
    assert result.returncode == 0, result.stderr
    assert "REST unavailable from this region" in result.stdout
    assert "days still missing" in result.stdout


def test_stream_refuses_an_unknown_stream_without_a_traceback(tmp_path: Path) -> None:
    """A misspelt stream token exits 2 with the list of accepted tokens."""
    env = {**os.environ, "LAKEHOUSE_ROOT": str(tmp_path / "lake")}
    result = lakehouse(env, "stream", "spot", "--symbols", "BTCUSDT",
                       "--streams", "klines_1m")  # fmt: skip
    assert result.returncode == 2
    assert "unknown stream 'klines_1m'" in result.stderr
    assert "Traceback" not in result.stderr
