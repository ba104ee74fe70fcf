"""`update` and `stream` check the lake's format before they write anything."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.config import load_settings
from crypto_lakehouse.exceptions import LakeFormatError
from crypto_lakehouse.recent.live import StreamRequest, run_stream
from crypto_lakehouse.recent.update import UpdateRequest, update
from crypto_lakehouse.storage.format_version import FORMAT_VERSION, read_format, stamp
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from pathlib import Path

# Unroutable endpoints: a refused run must fail before it reaches any of them.
NOWHERE = {
    "binance_archive_url": "http://127.0.0.1:9",
    "binance_listing_url": "http://127.0.0.1:9",
    "binance_spot_api_url": "http://127.0.0.1:9",
    "binance_spot_ws_url": "ws://127.0.0.1:9",
}


def test_update_refuses_a_lake_of_a_newer_format(tmp_path: Path) -> None:
    """`update` raises LakeFormatError and leaves a newer lake with nothing but its stamp."""
    root = tmp_path / "lake"
    stamp(LakeRoot.at(str(root)), FORMAT_VERSION + 1)
    settings = load_settings(root=str(root), **NOWHERE)
    request = UpdateRequest("spot", "klines", ("BTCUSDT",), "1m")
    with pytest.raises(LakeFormatError, match="upgrade crypto-lakehouse"):
        asyncio.run(update(request, settings))
    assert sorted(p.name for p in root.iterdir()) == ["_lakehouse"]


def test_stream_refuses_a_lake_of_a_newer_format(tmp_path: Path) -> None:
    """`run_stream` raises LakeFormatError before it connects or writes."""
    root = tmp_path / "lake"
    stamp(LakeRoot.at(str(root)), FORMAT_VERSION + 1)
    settings = load_settings(root=str(root), **NOWHERE)
    # A duration bounds the run should the check ever be skipped.
    request = StreamRequest("spot", ("BTCUSDT",), ("kline_1m",), duration=1.0)
    with pytest.raises(LakeFormatError, match="upgrade crypto-lakehouse"):
        asyncio.run(run_stream(request, settings))
    assert sorted(p.name for p in root.iterdir()) == ["_lakehouse"]
    assert read_format(LakeRoot.at(str(root))).format_version == FORMAT_VERSION + 1
