"""Shared fixtures: the archive stand-in, a moto S3 server, and lake roots on disk and S3."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from crypto_lakehouse.config import Settings, load_settings
from tests.servers.archive_files import copy_fixture_tree
from tests.servers.archive_server import ArchiveServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


#: Seconds a test marked `slow` may take; every other test has the ini's `timeout` (120 s).
SLOW_TIMEOUT_SECONDS = 600
_MOTO_LISTENING = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --run-integration for tests that reach the real internet."""
    parser.addoption("--run-integration", action="store_true", default=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give `slow` tests a longer timeout; skip integration tests unless asked for.

    A hang shows after the ini's 120 s; a test marked `slow` (a crash-recovery loop, a
    spawned process pool) gets `SLOW_TIMEOUT_SECONDS` unless it names its own timeout.
    """
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_SECONDS))
    if config.getoption("--run-integration"):
        return
    skip = pytest.mark.skip(reason="needs --run-integration (reaches the internet)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def _drain(stream: Iterator[str]) -> None:
    """Read a child's output to its end, so that its pipe never fills and blocks it."""
    for _ in stream:
        pass


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start a moto S3 server over real HTTP for the whole session.

    The server picks its own port and prints it once listening: the fixture reads that
    line instead of polling the port (no race for a port chosen beforehand, no sleeps).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    endpoint = None
    for line in proc.stdout:
        found = _MOTO_LISTENING.search(line)
        if found:
            endpoint = found.group(1)
            break
    if endpoint is None:
        proc.kill()
        raise RuntimeError(f"moto server exited before listening (code {proc.wait()})")
    threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_root(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Return a fresh `s3://bucket/prefix` lake root on the moto server."""
    import boto3

    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/lake"


@pytest.fixture(params=["local", "s3"])
def lake_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a lake root on local disk, then on S3 (moto): every test runs on both."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return str(request.getfixturevalue("s3_root"))


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    """Return a private copy of the real fixture archive tree, free to modify."""
    return copy_fixture_tree(tmp_path / "archive")


@pytest.fixture
def archive(archive_root: Path) -> Iterator[ArchiveServer]:
    """Serve the private archive tree over HTTP."""
    with ArchiveServer(archive_root) as server:
        yield server


@pytest.fixture
def settings_for(archive: ArchiveServer) -> object:
    """Return a factory of Settings pointing at the stand-in and a given lake root."""

    def make(root: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "root": root,
            "binance_archive_url": archive.archive_url,
            "binance_listing_url": archive.listing_url,
            "retry_backoff_seconds": 0.01,
            "retry_max_wait_seconds": 2.0,
            "http_retries": 3,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


def env_for(archive: ArchiveServer, root: str) -> dict[str, str]:
    """Return a subprocess environment pointing the CLI at the stand-in and a lake root."""
    env = dict(os.environ)
    env.update(
        LAKEHOUSE_BINANCE_ARCHIVE_URL=archive.archive_url,
        LAKEHOUSE_BINANCE_LISTING_URL=archive.listing_url,
        LAKEHOUSE_ROOT=root,
        LAKEHOUSE_TUNING__RETRY_BACKOFF_SECONDS="0.01",
    )
    return env


class OverlapGate:
    """Stands in for asyncio.sleep on the archive stand-in: latency waits end in company.

    A wait of `latency` seconds (the stand-in's per-request latency) lasts until a second
    request waits at the same moment, or `limit` seconds for a client that never sends two
    at once (its test then fails on `max_in_flight`). "Requests overlap" is then shown by
    the server's own count, not by how soon a busy host sent the second request.
    """

    def __init__(self, latency: float, limit: float = 10.0) -> None:
        self.latency = latency
        self.limit = limit
        self.waiting = 0
        self._company: asyncio.Event | None = None
        self._real = asyncio.sleep

    async def sleep(self, delay: float, result: Any = None) -> Any:
        """Hold a latency wait until two requests wait; pass any other wait to the real sleep."""
        if delay != self.latency:
            return await self._real(delay, result)
        if self._company is None:
            self._company = asyncio.Event()
        self.waiting += 1
        if self.waiting >= 2:
            self._company.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._company.wait(), self.limit)
        finally:
            self.waiting -= 1
        return result


@pytest.fixture
def overlap_gate(monkeypatch: pytest.MonkeyPatch) -> Callable[[ArchiveServer, float], OverlapGate]:
    """Return a function that gives the stand-in a latency whose waits end in company."""

    def install(server: ArchiveServer, latency: float) -> OverlapGate:
        gate = OverlapGate(latency)
        server.latency = latency
        monkeypatch.setattr(asyncio, "sleep", gate.sleep)
        return gate

    return install
