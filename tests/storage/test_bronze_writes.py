"""Bronze objects written in the background: all of them land, and `wait` reports failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_lakehouse.exceptions import StorageError
from crypto_lakehouse.storage.bronze_writes import store_in_background
from crypto_lakehouse.storage.root import LakeRoot


def test_every_object_lands_before_wait_returns(lake_root: str) -> None:
    """On local disk and S3, each object holds its bytes once `wait` has returned."""
    lake = LakeRoot.at(lake_root)
    objects = [
        (f"zip {i}".encode(), f"bronze/SYM/SYM-1m-2024-01-{i:02d}.zip") for i in range(1, 21)
    ]
    store_in_background(lake, objects).wait()
    for data, path in objects:
        with lake.open_input(path) as raw:
            assert raw.read() == data


def test_wait_raises_a_refused_write(tmp_path: Path) -> None:
    """A refused object fails the wait; what was written before it is complete."""
    lake = LakeRoot.at(str(tmp_path))
    (tmp_path / "bronze").mkdir()
    (tmp_path / "bronze" / "blocked").write_text("a file where a folder must go")
    pending = store_in_background(
        lake,
        [
            (b"first", "bronze/ok/a.zip"),
            (b"x", "bronze/blocked/b.zip"),
            (b"last", "bronze/ok/c.zip"),
        ],
    )
    with pytest.raises(StorageError) as raised:
        pending.wait()
    assert isinstance(raised.value.__cause__, NotADirectoryError)
    assert (tmp_path / "bronze" / "ok" / "a.zip").read_bytes() == b"first"
    assert not list(tmp_path.rglob(".*.tmp"))


def test_nothing_to_write_waits_for_nothing(tmp_path: Path) -> None:
    """An empty batch (every zip already in bronze) starts no write."""
    pending = store_in_background(LakeRoot.at(str(tmp_path)), [])
    assert pending.futures == ()
    pending.wait()
    assert not any(tmp_path.iterdir())
