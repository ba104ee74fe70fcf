"""Helpers shared by the archive, REST, limiter, breaker and stream tests (not fixtures, to
stay local)."""

from __future__ import annotations

import ipaddress
import socket
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from crypto_lakehouse.config import Settings, load_settings
from crypto_lakehouse.sources.binance.rest.client import BinanceRestClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

    from tests.servers.archive_server import ArchiveServer
    from tests.servers.rest_server import RestServer


class SleepRecorder:
    """Stands in for asyncio.sleep: records each requested wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def gets(archive: ArchiveServer, path: str) -> list[int]:
    """Statuses of the GETs the archive stand-in answered for one path, oldest first."""
    return [r.status for r in archive.requests if r.method == "GET" and r.path == "/" + path]


def utc(text: str) -> datetime:
    """Return an aware UTC datetime from ISO text, e.g. utc("2024-01-01T05:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rest_settings(server: RestServer, **overrides: Any) -> Settings:
    """Return Settings pointing every REST market at the stand-in, with fast retries."""
    values: dict[str, Any] = {
        **server.settings_overrides(),
        "retry_backoff_seconds": 0.01,
        "retry_max_wait_seconds": 0.05,
        "http_retries": 2,
        "http_timeout_seconds": 10.0,
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def rest_client(settings: Settings, **kwargs: Any) -> AsyncIterator[BinanceRestClient]:
    """Yield a client on a session of the caller's, which this helper closes afterwards."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)) as session:
        yield BinanceRestClient(settings, session=session, **kwargs)


def block_non_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any socket connect to a non-loopback address fail the test."""
    original = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"test tried to reach {address}, beyond loopback")
        return original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
