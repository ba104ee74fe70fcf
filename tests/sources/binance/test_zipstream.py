"""Inflating the CSV member: line-aligned chunks, extra members ignored, corruption caught."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.exceptions import FormatError, TruncatedBodyError
from crypto_lakehouse.sources.binance.zipstream import iter_csv_chunks, prefetch
from tests.servers.archive_files import make_zip
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from pathlib import Path


def test_chunks_end_at_newlines_and_rebuild_the_member(tmp_path: Path) -> None:
    """Small chunks each end with a newline and concatenate to the original CSV."""
    body = kline_csv("2020-01-01").encode()
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip("a.csv", body))
    chunks = list(iter_csv_chunks(path, 8192))
    assert len(chunks) > 5
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert b"".join(chunks) == body


def test_macosx_member_is_ignored(tmp_path: Path) -> None:
    """A `__MACOSX/._x.csv` resource fork beside the CSV does not count as a member."""
    body = b"1,2\n"
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip("a.csv", body, extra_members={"__MACOSX/._a.csv": b"\x00junk"}))
    assert list(prefetch(iter_csv_chunks(path, 1 << 20))) == [body]


def test_two_csv_members_are_a_format_error(tmp_path: Path) -> None:
    """A zip with two CSVs is refused rather than guessed."""
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip("a.csv", b"1\n", extra_members={"b.csv": b"2\n"}))
    with pytest.raises(FormatError, match="exactly one CSV"):
        list(iter_csv_chunks(path, 1 << 20))


def test_corrupt_member_is_reported_as_truncated(tmp_path: Path) -> None:
    """Flipped bytes inside the deflate stream fail the CRC or the inflate, never pass silently."""
    data = bytearray(make_zip("a.csv", kline_csv("2020-01-01").encode()))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    path = tmp_path / "a.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(TruncatedBodyError, match=r"corrupt|CRC"):
        list(iter_csv_chunks(path, 1 << 20))


def test_prefetch_reraises_producer_errors() -> None:
    """An error in the prefetched iterator surfaces in the consumer."""

    def broken() -> object:
        yield b"a\n"
        raise TruncatedBodyError("cut")

    got = []
    with pytest.raises(TruncatedBodyError):
        for chunk in prefetch(broken()):  # type: ignore[arg-type]
            got.append(chunk)
    assert got == [b"a\n"]
