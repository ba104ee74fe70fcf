"""Lake objects are written atomically: a reader sees the old bytes or the new, never half."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from crypto_lakehouse.exceptions import StorageError
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from pathlib import Path


def test_put_bytes_creates_folders_and_replaces_in_place(tmp_path: Path) -> None:
    """The object lands at its path; a second write replaces it; no temp file remains."""
    lake = LakeRoot.at(str(tmp_path))
    lake.put_bytes(b"first", "bronze/a/b/object.zip")
    lake.put_bytes(b"second", "bronze/a/b/object.zip")
    folder = tmp_path / "bronze" / "a" / "b"
    assert (folder / "object.zip").read_bytes() == b"second"
    assert [p.name for p in folder.iterdir()] == ["object.zip"]


@pytest.mark.req("R3.3")
def test_failed_write_keeps_the_old_object_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half-way (disk full) leaves the previous bytes and nothing else."""
    lake = LakeRoot.at(str(tmp_path))
    lake.put_bytes(b"old", "bronze/object.zip")

    def disk_full(path: Path, data: bytes) -> None:
        path.write_bytes(data[:2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("crypto_lakehouse.storage.root._write_new", disk_full)
    with pytest.raises(StorageError, match="No space"):
        lake.put_bytes(b"new bytes", "bronze/object.zip")
    monkeypatch.undo()
    assert (tmp_path / "bronze" / "object.zip").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "bronze").iterdir()] == ["object.zip"]


def test_writes_from_many_threads_into_a_new_folder_all_land(tmp_path: Path) -> None:
    """Folders are made when a write finds them missing: racing first writes all succeed."""
    lake = LakeRoot.at(str(tmp_path))
    objects = [(f"object-{i}".encode(), f"bronze/new/folder/{i}.zip") for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: lake.put_bytes(*item), objects))
    folder = tmp_path / "bronze" / "new" / "folder"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.zip" for i in range(40))
    assert all((folder / f"{i}.zip").read_bytes() == f"object-{i}".encode() for i in range(40))


def test_a_missing_source_file_is_not_taken_for_a_missing_folder(tmp_path: Path) -> None:
    """`put_file` of a file that is not there fails, and leaves no temp file behind."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    with pytest.raises(StorageError) as raised:
        lake.put_file(tmp_path / "absent.zip", "bronze/a/object.zip")
    assert isinstance(raised.value.__cause__, FileNotFoundError)
    assert [p.name for p in (tmp_path / "lake" / "bronze" / "a").iterdir()] == []


@pytest.mark.req("R3.3", "R6.2")
def test_a_failed_upload_leaves_no_partial_object_on_s3(
    s3_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow publishes a half-written S3 object on close; the lake deletes it instead."""
    lake = LakeRoot.at(s3_root)
    local = tmp_path / "object.zip"
    local.write_bytes(b"0123456789" * 1000)

    def cut_short(source: Any, sink: Any, length: int = 0) -> None:
        sink.write(source.read(100))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("crypto_lakehouse.storage.root.shutil.copyfileobj", cut_short)
    with pytest.raises(StorageError, match="Input/output error"):
        lake.put_file(local, "bronze/object.zip")
    assert not lake.exists("bronze/object.zip")


@pytest.mark.req("R6.2")
def test_open_input_reads_an_object_at_random_on_local_disk_and_s3(lake_root: str) -> None:
    """Remote workers read bronze zips by seeking in the object; a missing one is a StorageError."""
    lake = LakeRoot.at(lake_root)
    lake.put_bytes(b"0123456789", "bronze/object.zip")
    with lake.open_input("bronze/object.zip") as raw:
        raw.seek(-4, 2)
        assert raw.read() == b"6789"
        raw.seek(2)
        assert raw.read(3) == b"234"
    with pytest.raises(StorageError, match=r"bronze/absent\.zip"):
        lake.open_input("bronze/absent.zip")
