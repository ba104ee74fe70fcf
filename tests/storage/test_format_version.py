"""The lake format version: stamped by the first write, refused when newer, migrated when older."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crypto_lakehouse.exceptions import LakeFormatError, StorageError
from crypto_lakehouse.storage import format_version
from crypto_lakehouse.storage.format_version import (
    FORMAT_KEY,
    FORMAT_VERSION,
    MigrationStep,
    check_format,
    migrate,
    package_version,
    read_format,
    stamp,
)
from crypto_lakehouse.storage.root import LakeRoot


@pytest.mark.req("R6.2")
def test_a_write_stamps_an_unversioned_lake_on_disk_and_s3(lake_root: str) -> None:
    """The first writing check records the current format and the package that wrote it."""
    lake = LakeRoot.at(lake_root)
    assert read_format(lake).format_version == 0
    assert not read_format(lake).versioned
    found = check_format(lake, write=True)
    assert found.format_version == FORMAT_VERSION
    recorded = read_format(lake)
    assert recorded.format_version == FORMAT_VERSION
    assert recorded.written_by == package_version()
    assert recorded.versioned


def test_the_format_file_is_json_at_a_fixed_key_with_no_temp_files_left(tmp_path: Path) -> None:
    """The stamp is `_lakehouse/format.json` holding the two fields, written through a rename."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    stamp(lake)
    folder = tmp_path / "lake" / "_lakehouse"
    assert [p.name for p in folder.iterdir()] == ["format.json"]
    record = json.loads((tmp_path / "lake" / FORMAT_KEY).read_text())
    assert record == {"format_version": FORMAT_VERSION, "written_by": package_version()}


def test_a_read_leaves_an_unversioned_lake_untouched(tmp_path: Path) -> None:
    """A read-only check accepts a lake written before versioning and writes nothing."""
    root = tmp_path / "lake"
    (root / "silver").mkdir(parents=True)
    found = check_format(LakeRoot.at(str(root)), write=False)
    assert found.format_version == 0
    assert not (root / "_lakehouse").exists()


@pytest.mark.parametrize("write", [False, True])
@pytest.mark.req("R6.2")
def test_a_lake_of_a_newer_format_is_refused(tmp_path: Path, write: bool) -> None:
    """Reading and writing both refuse a newer lake, in one line that says to upgrade."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    stamp(lake, FORMAT_VERSION + 1)
    with pytest.raises(LakeFormatError, match="upgrade crypto-lakehouse") as caught:
        check_format(lake, write=write)
    assert caught.value.found == FORMAT_VERSION + 1
    assert caught.value.supported == FORMAT_VERSION
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, StorageError)
    assert read_format(lake).format_version == FORMAT_VERSION + 1


def test_migrate_upgrades_an_unversioned_lake_and_is_idempotent(lake_root: str) -> None:
    """Migrating a lake without a format stamps it; migrating again changes nothing."""
    lake = LakeRoot.at(lake_root)
    first = migrate(lake)
    assert (first.before, first.after, first.changed) == (0, FORMAT_VERSION, True)
    assert read_format(lake).format_version == FORMAT_VERSION
    again = migrate(lake)
    assert (again.before, again.after, again.changed, again.steps) == (
        FORMAT_VERSION,
        FORMAT_VERSION,
        False,
        (),
    )


def test_migrate_refuses_a_newer_lake(tmp_path: Path) -> None:
    """A newer lake is not downgraded by an older package's migrate."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    stamp(lake, FORMAT_VERSION + 5)
    with pytest.raises(LakeFormatError, match="upgrade"):
        migrate(lake)
    assert read_format(lake).format_version == FORMAT_VERSION + 5


def test_registered_steps_run_in_order_and_writes_wait_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With steps pending a write is refused; migrate runs them in order, each then stamped."""
    seen: list[tuple[str, int]] = []

    def step(name: str) -> MigrationStep:
        def apply(lake: LakeRoot) -> None:
            seen.append((name, read_format(lake).format_version))

        return MigrationStep(source=int(name[-1]), describe=name, apply=apply)

    monkeypatch.setattr(format_version, "FORMAT_VERSION", 3)
    monkeypatch.setattr(format_version, "MIGRATIONS", {1: step("v1"), 2: step("v2")})
    lake = LakeRoot.at(str(tmp_path / "lake"))
    stamp(lake, 1)
    with pytest.raises(LakeFormatError, match="lakehouse migrate"):
        check_format(lake, write=True)
    assert check_format(lake, write=False).format_version == 1
    result = migrate(lake)
    assert seen == [("v1", 1), ("v2", 2)]
    assert result.steps == ("1 -> 2: v1", "2 -> 3: v2")
    assert read_format(lake).format_version == 3
    assert migrate(lake).steps == ()
    assert seen == [("v1", 1), ("v2", 2)]


def test_a_write_leaves_an_unversioned_lake_to_migrate_when_a_step_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When upgrading from version 0 takes a real step, a write refuses instead of stamping."""
    monkeypatch.setattr(format_version, "FORMAT_VERSION", 2)
    monkeypatch.setattr(
        format_version, "MIGRATIONS", {0: MigrationStep(0, "rewrite", lambda lake: None)}
    )
    lake = LakeRoot.at(str(tmp_path / "lake"))
    with pytest.raises(LakeFormatError, match="has format 0"):
        check_format(lake, write=True)
    assert not read_format(lake).versioned


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"written_by": "x"}', b'{"format_version": "1"}']
)
def test_a_damaged_format_file_is_reported_not_guessed(tmp_path: Path, body: bytes) -> None:
    """A format file that is not a JSON object with a positive integer version is an error."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    lake.put_bytes(body, FORMAT_KEY)
    with pytest.raises(LakeFormatError, match="format"):
        read_format(lake)
