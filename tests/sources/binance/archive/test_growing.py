"""Reading a download while it is written: waits at the growing end, stops on the marker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.exceptions import StreamedParseAborted
from crypto_lakehouse.sources.binance.archive.growing import GrowingReader, GrowingSource, ending_of
from tests.sources.binance.archive._growing_support import grow

if TYPE_CHECKING:
    from pathlib import Path


def test_reader_follows_a_growing_file_to_its_done_marker(tmp_path: Path) -> None:
    """Every byte written after the reader opened the file is read, then the end is b''."""
    path = tmp_path / "body.part"
    path.write_bytes(b"")
    source = GrowingSource(str(path))
    data = bytes(range(256)) * 40
    with GrowingReader(source) as reader:
        writer = grow(path, data, source, piece=1000, pause=0.005)
        got = bytearray()
        reads = 0
        while chunk := reader.read(4096):
            got += chunk
            reads += 1
        writer.join()
    assert bytes(got) == data
    assert reads > 2  # it returned partial reads as bytes arrived, not one read at the end
    assert ending_of(source) == "done"


def test_abandoned_download_stops_the_reader(tmp_path: Path) -> None:
    """An `abort` marker ends a blocked read with StreamedParseAborted."""
    path = tmp_path / "body.part"
    path.write_bytes(b"")
    source = GrowingSource(str(path))
    with GrowingReader(source) as reader:
        writer = grow(path, b"x" * 3000, source, ending="abort", piece=1000, pause=0.005)
        with pytest.raises(StreamedParseAborted, match="abandoned"):
            while reader.read(4096):
                pass
        writer.join()


def test_a_stalled_download_is_given_up(tmp_path: Path) -> None:
    """No byte and no marker for `stall_seconds` raises instead of waiting forever."""
    path = tmp_path / "body.part"
    path.write_bytes(b"abc")
    with GrowingReader(GrowingSource(str(path), stall_seconds=0.1)) as reader:
        assert reader.read(10) == b"abc"
        with pytest.raises(StreamedParseAborted, match="stalled"):
            reader.read(10)
