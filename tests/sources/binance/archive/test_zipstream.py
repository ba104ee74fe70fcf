"""Inflating the CSV member: line-aligned chunks, extra members ignored, corruption caught."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.exceptions import FormatError, StreamedParseAborted, TruncatedBodyError
from crypto_lakehouse.sources.binance.archive.growing import GrowingSource
from crypto_lakehouse.sources.binance.archive.zipstream import (
    iter_csv_chunks,
    iter_growing_csv_chunks,
    prefetch,
    read_csv_member,
)
from tests.servers.archive_files import FIXTURE_TREE, make_zip
from tests.servers.synthetic import kline_csv
from tests.sources.binance.archive._growing_support import grow

if TYPE_CHECKING:
    from collections.abc import Callable
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


def test_an_open_file_streams_the_same_chunks_and_stays_open(tmp_path: Path) -> None:
    """A seekable file object (an S3 object opened by a remote worker) reads like the path."""
    body = kline_csv("2020-01-01").encode()
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip("a.csv", body))
    with path.open("rb") as raw:
        chunks = list(iter_csv_chunks(raw, 8192))
        assert not raw.closed  # its owner closes it
    assert chunks == list(iter_csv_chunks(path, 8192))
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


@pytest.mark.parametrize(
    "read",
    [lambda path: list(iter_csv_chunks(path, 1 << 20)), read_csv_member],
    ids=["chunked", "whole"],
)
def test_corrupt_member_is_reported_as_truncated(
    tmp_path: Path, read: Callable[[Path], object]
) -> None:
    """Flipped bytes inside the deflate stream fail the CRC or the inflate, never pass silently."""
    data = bytearray(make_zip("a.csv", kline_csv("2020-01-01").encode()))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    path = tmp_path / "a.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(TruncatedBodyError, match=r"corrupt|CRC"):
        read(path)


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


def _streamed(tmp_path: Path, data: bytes, chunk_bytes: int = 8192) -> list[bytes]:
    """Return the chunks of `iter_growing_csv_chunks` over `data` arriving in slices."""
    path = tmp_path / "growing.zip"
    path.write_bytes(b"")
    source = GrowingSource(str(path))
    writer = grow(path, data, source)
    try:
        return list(iter_growing_csv_chunks(source, chunk_bytes))
    finally:
        writer.join()


def test_growing_zip_streams_the_same_chunks_as_the_finished_file(tmp_path: Path) -> None:
    """Reading while the zip arrives yields the CSV in newline-ended chunks, byte for byte."""
    body = kline_csv("2020-01-01").encode()
    chunks = _streamed(tmp_path, make_zip("a.csv", body))
    assert len(chunks) > 5
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert b"".join(chunks) == body


def test_growing_zip_with_data_descriptor_streams(tmp_path: Path) -> None:
    """A real archive zip written with data descriptors (sizes after the data) streams too."""
    fixture = FIXTURE_TREE.parent / "binance-updates" / "2022-04-21_aggregate_trade_updates.zip"
    data = fixture.read_bytes()
    (tmp_path / "done.zip").write_bytes(data)
    expected = b"".join(iter_csv_chunks(tmp_path / "done.zip", 1 << 20))
    assert b"".join(_streamed(tmp_path, data, 1 << 20)) == expected
    assert expected.count(b"\n") > 100


def test_growing_zip_that_cannot_stream_asks_for_the_ordinary_parse(tmp_path: Path) -> None:
    """A resource fork stored before the CSV is not guessed at: the caller falls back."""
    data = make_zip("__MACOSX/._a.csv", b"\x00junk", extra_members={"a.csv": b"1,2\n"})
    with pytest.raises(StreamedParseAborted, match="not the CSV"):
        _streamed(tmp_path, data)


def test_growing_zip_with_a_bad_crc_is_truncated(tmp_path: Path) -> None:
    """A member whose central directory CRC disagrees with the streamed bytes is refused."""
    data = bytearray(make_zip("a.csv", kline_csv("2020-01-01").encode()))
    central = data.rfind(b"PK\x01\x02")
    data[central + 16 : central + 20] = b"\x00\x00\x00\x00"  # the directory's CRC-32
    with pytest.raises(TruncatedBodyError, match="CRC"):
        _streamed(tmp_path, bytes(data))


def test_whole_member_read_equals_the_chunked_read(tmp_path: Path) -> None:
    """`read_csv_member` returns exactly the bytes the chunked reader yields."""
    body = kline_csv("2020-01-01").encode()
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip("a.csv", body, extra_members={"__MACOSX/._a.csv": b"\x00junk"}))
    assert read_csv_member(path) == body == b"".join(iter_csv_chunks(path, 8192))


@pytest.mark.parametrize("claimed", [-100, 10**9])
def test_a_member_whose_directory_lies_about_its_size_is_refused(claimed: int) -> None:
    """The size the central directory gives sizes the inflate buffer, but is checked after.

    A claim of a gigabyte for a 100 KB member allocates no more than a capped buffer.
    """
    body = kline_csv("2020-01-01").encode()
    data = bytearray(make_zip("a.csv", body))
    central = data.rfind(b"PK\x01\x02")
    size = len(body) + claimed if claimed < 0 else claimed
    data[central + 24 : central + 28] = size.to_bytes(4, "little")  # uncompressed size
    with pytest.raises(TruncatedBodyError, match=f"expected {size} bytes"):
        read_csv_member(bytes(data))
