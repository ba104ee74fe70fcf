"""The lake's format version as a user meets it: stamped by writes, refused when newer, migrated."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.storage.format_version import FORMAT_VERSION, read_format, stamp
from crypto_lakehouse.storage.root import LakeRoot
from tests.cli.test_app import KLINES, lakehouse
from tests.conftest import env_for

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers.archive_server import ArchiveServer


# Closed local ports for every endpoint: a refused command must fail before it reaches one.
NOWHERE = {
    f"LAKEHOUSE_BINANCE_{name}": url
    for name, url in {
        "ARCHIVE_URL": "http://127.0.0.1:9",
        "LISTING_URL": "http://127.0.0.1:9",
        "SPOT_API_URL": "http://127.0.0.1:9",
        "SPOT_WS_URL": "ws://127.0.0.1:9",
    }.items()
}


def root_env(root: str) -> dict[str, str]:
    """Return the environment of a CLI run against `root` (S3 credentials included)."""
    return {**os.environ, **NOWHERE, "LAKEHOUSE_ROOT": root}


def test_ingest_stamps_the_lake_it_writes(lake_root: str, archive: ArchiveServer) -> None:
    """The first ingest into a new lake records the current format, on disk and on S3."""
    lake = LakeRoot.at(lake_root)
    assert not read_format(lake).versioned
    ingested = lakehouse(env_for(archive, lake_root), *KLINES)
    assert ingested.returncode == 0, ingested.stderr
    assert read_format(lake).format_version == FORMAT_VERSION


def test_read_commands_leave_an_unversioned_lake_unstamped(tmp_path: Path) -> None:
    """`sql` and `status` work on a lake without a format file and do not write one."""
    root = tmp_path / "lake"
    (root / "silver").mkdir(parents=True)
    env = root_env(str(root))
    selected = lakehouse(env, "sql", "SELECT 42 AS answer", "--format", "csv")
    assert selected.returncode == 0, selected.stderr
    assert selected.stdout.splitlines() == ["answer", "42"]
    shown = lakehouse(env, "status")
    assert shown.returncode == 0, shown.stderr
    assert not (root / "_lakehouse").exists()


def test_a_writing_command_stamps_an_unversioned_lake(tmp_path: Path) -> None:
    """`optimize` (a writing command) stamps a lake written before versioning."""
    root = str(tmp_path / "lake")
    optimized = lakehouse(root_env(root), "optimize")
    assert optimized.returncode == 0, optimized.stderr
    assert read_format(LakeRoot.at(root)).format_version == FORMAT_VERSION


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("sql", "SELECT 1"),
        ("optimize",),
        ("migrate",),
        (*KLINES,),
        ("update", "spot", "klines", "--symbols", "BTCUSDT", "--interval", "1m"),
        ("stream", "spot", "--symbols", "BTCUSDT", "--duration", "1"),
        ("gold", "build"),
    ],
    ids=["status", "sql", "optimize", "migrate", "ingest", "update", "stream", "gold"],
)
def test_a_lake_of_a_newer_format_is_refused_with_exit_2(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Every command refuses a newer lake: one error line, exit 2, the lake left as it was."""
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    stamp(lake, FORMAT_VERSION + 1)
    refused = lakehouse(root_env(root), *command)
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: lake {lake.uri} has format {FORMAT_VERSION + 1} (written by crypto-lakehouse "
        f"{read_format(lake).written_by}); this version reads format {FORMAT_VERSION} at most: "
        "upgrade crypto-lakehouse"
    ]
    assert "Traceback" not in refused.stderr
    assert refused.stdout == ""
    assert read_format(lake).format_version == FORMAT_VERSION + 1


def test_migrate_upgrades_an_old_lake_once(lake_root: str) -> None:
    """`migrate` stamps an unversioned lake and says so; a second run reports it current."""
    env = root_env(lake_root)
    first = lakehouse(env, "migrate")
    assert first.returncode == 0, first.stderr
    uri = LakeRoot.at(lake_root).uri
    assert first.stdout.strip() == f"lake {uri}: format 0 -> {FORMAT_VERSION}"
    assert read_format(LakeRoot.at(lake_root)).format_version == FORMAT_VERSION
    again = lakehouse(env, "migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"lake {uri}: format {FORMAT_VERSION}, already current"
