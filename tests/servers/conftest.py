"""Fixtures of the stand-in servers' own tests: the archive tree, the stand-in, a plain client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.servers.archive_server import ArchiveServer


@pytest.fixture
def root(archive_root: Path) -> Path:
    """Copy of the real fixture archive tree (the shared `archive_root` fixture)."""
    return archive_root


@pytest.fixture
def server(archive: ArchiveServer) -> ArchiveServer:
    """Running server over that tree with the default page size (the shared `archive`)."""
    return archive


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """Plain httpx client without retries: a client other than the one under test."""
    with httpx.Client(timeout=10) as c:
        yield c
