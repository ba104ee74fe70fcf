"""Stream the CSV member of an archive zip as line-aligned chunks, inflated with isal."""

from __future__ import annotations

import io
import queue
import struct
import threading
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from isal import isal_zlib

from crypto_lakehouse.exceptions import FormatError, StreamedParseAborted, TruncatedBodyError
from crypto_lakehouse.sources.binance.archive.growing import GrowingReader, GrowingSource

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_READ_SIZE = 4 << 20
#: The most a whole-member inflate allocates up front (`read_csv_member`, for zips of a few
#: MB): a zip's claim of its member's size is not trusted beyond this; past it, isal grows
#: the buffer as the member really inflates, and the size check below refuses the lie.
_MAX_PREALLOCATED = 64 << 20
_INFLATE_ERRORS = cast("tuple[type[BaseException], ...]", (isal_zlib.error,))


def csv_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    """Return the one CSV member, ignoring `__MACOSX/` and other non-CSV members.

    Raises:
        FormatError: when there is no CSV member or more than one.
    """
    members = [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and not info.filename.startswith("__MACOSX/")
        and info.filename.lower().endswith(".csv")
    ]
    if len(members) != 1:
        names = [info.filename for info in archive.infolist()]
        raise FormatError(f"expected exactly one CSV member in the zip, found {names}")
    return members[0]


def iter_csv_chunks(source: Path | BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """Yield the CSV member's bytes in chunks of about `chunk_bytes`, each ending at a newline.

    Memory stays near `chunk_bytes` whatever the file size. The CRC-32 of the inflated bytes is
    checked at the end, so a corrupt member raises instead of yielding silently short data.
    `source` is a local path or an open seekable file (e.g. an object in an S3 lake, read by
    ranged GETs); an open file is left open for its owner to close.

    Raises:
        TruncatedBodyError: the zip is not readable or its member is cut short.
        FormatError: no single CSV member.
    """
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise TruncatedBodyError(f"not a complete zip archive: {exc}") from exc
    with archive, source.open("rb") if isinstance(source, Path) else nullcontext(source) as raw:
        info = csv_member(archive)
        yield from _line_chunks(_inflate(raw, info, max(chunk_bytes // 4, 4096)), chunk_bytes)


def read_csv_member(source: Path | bytes) -> bytes:
    """Return a small zip's whole CSV member, inflated in one call and CRC-checked.

    For daily files of a few hundred KB: one read and one inflate instead of the chunked
    generator pipeline, which cost more interpreter time than the inflating itself. `source`
    is the zip's path, or its bytes when they are still in memory from the download.

    Raises:
        TruncatedBodyError: the zip is not readable or its member is corrupt.
        FormatError: no single CSV member, or an unsupported compression.
    """
    data = source.read_bytes() if isinstance(source, Path) else source
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = csv_member(archive)
    except zipfile.BadZipFile as exc:
        raise TruncatedBodyError(f"not a complete zip archive: {exc}") from exc
    if data[info.header_offset : info.header_offset + 4] != _LOCAL_MAGIC:
        raise TruncatedBodyError(f"zip member {info.filename} has no local header")
    fields = _LOCAL_HEADER.unpack_from(data, info.header_offset)
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    packed = memoryview(data)[start : start + info.compress_size]
    try:
        if info.compress_type == zipfile.ZIP_DEFLATED:
            # One byte more than the member: with exactly its size the buffer fills, and isal
            # grows it (a copy) before it sees the stream end. Growing from the default 16 KB
            # took ~5 reallocations a file, and two threads inflating scaled 1.4× instead
            # of 1.9× (page faults of every fresh mapping contend in the kernel).
            bufsize = min(info.file_size, _MAX_PREALLOCATED) + 1
            body = isal_zlib.decompress(packed, wbits=-15, bufsize=bufsize)
        elif info.compress_type == zipfile.ZIP_STORED:
            body = bytes(packed)
        else:
            raise FormatError(f"zip member {info.filename} uses unsupported compression")
    except _INFLATE_ERRORS as exc:
        raise TruncatedBodyError(f"zip member {info.filename} is corrupt: {exc}") from exc
    if len(body) != info.file_size or isal_zlib.crc32(body) & 0xFFFFFFFF != info.CRC:
        raise TruncatedBodyError(
            f"zip member {info.filename} inflated to {len(body)} bytes with a bad CRC "
            f"(expected {info.file_size} bytes)"
        )
    return body


def iter_growing_csv_chunks(source: GrowingSource, chunk_bytes: int) -> Iterator[bytes]:
    """Like `iter_csv_chunks`, but over a zip still being downloaded (see `growing`).

    The member is read from the first local header as bytes arrive, so the central directory
    at the end is not needed to start. Once the download is done, the member's name, size and
    CRC-32 are checked against the central directory like `iter_csv_chunks` does.

    Raises:
        StreamedParseAborted: the download was abandoned, or the zip is not laid out for
            streaming (first member not the CSV, stored with a data descriptor); parse the
            finished file with `iter_csv_chunks` instead.
        TruncatedBodyError: the member is corrupt or does not match the central directory.
    """
    with GrowingReader(source) as raw:
        name, method = _read_local_header(raw)
        if name.startswith("__MACOSX/") or not name.lower().endswith(".csv"):
            raise StreamedParseAborted(f"first zip member {name} is not the CSV")
        if method != zipfile.ZIP_DEFLATED:
            raise StreamedParseAborted(f"zip member {name} is not deflated")
        pieces = _StreamInflater(raw, name, max(chunk_bytes // 4, 4096))
        yield from _line_chunks(pieces.chunks(), chunk_bytes)
        raw.wait_until_ended()
    _verify_streamed(Path(source.path), name, pieces.crc, pieces.produced)


def _read_local_header(raw: GrowingReader) -> tuple[str, int]:
    """Read the first local file header; return the member name and compression method."""
    header = raw.read_exact(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
        raise TruncatedBodyError("body does not start with a zip local header")
    fields = _LOCAL_HEADER.unpack(header)
    flags, method, name_len, extra_len = fields[2], fields[3], fields[9], fields[10]
    name_bytes = raw.read_exact(name_len)
    raw.read_exact(extra_len)
    name = name_bytes.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    return name, method


class _StreamInflater:
    """Inflate one member from a growing reader until its deflate stream ends."""

    def __init__(self, raw: GrowingReader, name: str, max_piece: int) -> None:
        self._raw = raw
        self._name = name
        self._max_piece = max_piece
        self.crc = 0
        self.produced = 0

    def chunks(self) -> Iterator[bytes]:
        """Yield inflated pieces, folding each into the CRC-32 and size."""
        inflater = isal_zlib.decompressobj(-15)
        try:
            while not inflater.eof:
                block = self._raw.read(_READ_SIZE)
                if not block:
                    raise TruncatedBodyError(f"zip member {self._name} ends early")
                for out in _bounded(inflater, block, self._max_piece):
                    self.crc = isal_zlib.crc32(out, self.crc)
                    self.produced += len(out)
                    yield out
        except _INFLATE_ERRORS as exc:
            raise TruncatedBodyError(f"zip member {self._name} is corrupt: {exc}") from exc


def _verify_streamed(path: Path, name: str, crc: int, produced: int) -> None:
    """Check a streamed member against the finished zip's central directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = csv_member(archive)
    except zipfile.BadZipFile as exc:
        raise TruncatedBodyError(f"not a complete zip archive: {exc}") from exc
    if info.filename != name or info.header_offset != 0:
        raise StreamedParseAborted(f"streamed member {name}, but the CSV is {info.filename}")
    if produced != info.file_size or (crc & 0xFFFFFFFF) != info.CRC:
        raise TruncatedBodyError(
            f"zip member {name} inflated to {produced} bytes with a bad CRC "
            f"(expected {info.file_size} bytes)"
        )


def _line_chunks(pieces: Iterator[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Regroup inflated pieces into chunks of about `chunk_bytes` that end at a newline.

    The first chunks are smaller (an eighth, doubling up to `chunk_bytes`), so the stages
    after the parse (encoding, writing) start early instead of waiting for a whole chunk.
    """
    parts: list[bytes] = []
    size = 0
    target = max(chunk_bytes // 8, 1)
    for piece in pieces:
        parts.append(piece)
        size += len(piece)
        if size < target:
            continue
        cut = piece.rfind(b"\n")
        if cut < 0:
            continue
        parts[-1] = piece[: cut + 1]
        yield b"".join(parts)
        target = min(target * 2, chunk_bytes)
        rest = piece[cut + 1 :]
        parts, size = ([rest], len(rest)) if rest else ([], 0)
    tail = b"".join(parts)
    if tail and not tail.isspace():
        yield tail if tail.endswith(b"\n") else tail + b"\n"


def _bounded(inflater: Any, block: bytes, max_piece: int) -> Iterator[bytes]:
    """Inflate one compressed block in pieces of at most `max_piece` bytes."""
    out = inflater.decompress(block, max_piece)
    yield out
    while inflater.unconsumed_tail:
        yield inflater.decompress(inflater.unconsumed_tail, max_piece)


def _inflate(raw: BinaryIO, info: zipfile.ZipInfo, max_piece: int) -> Iterator[bytes]:
    """Yield the inflated bytes of one member, verifying size and CRC-32."""
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
        raise TruncatedBodyError(f"zip member {info.filename} has no local header")
    fields = _LOCAL_HEADER.unpack(header)
    raw.seek(fields[9] + fields[10], 1)  # skip file name and extra field
    if info.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        raise FormatError(f"zip member {info.filename} uses unsupported compression")
    inflater = isal_zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    remaining = info.compress_size
    crc = 0
    produced = 0
    try:
        while remaining > 0:
            block = raw.read(min(_READ_SIZE, remaining))
            if not block:
                raise TruncatedBodyError(f"zip member {info.filename} ends early")
            remaining -= len(block)
            pieces = [block] if inflater is None else _bounded(inflater, block, max_piece)
            for out in pieces:
                crc = isal_zlib.crc32(out, crc)
                produced += len(out)
                yield out
        if inflater is not None:
            tail = inflater.flush()
            if tail:
                crc = isal_zlib.crc32(tail, crc)
                produced += len(tail)
                yield tail
    except _INFLATE_ERRORS as exc:
        raise TruncatedBodyError(f"zip member {info.filename} is corrupt: {exc}") from exc
    if produced != info.file_size or (crc & 0xFFFFFFFF) != info.CRC:
        raise TruncatedBodyError(
            f"zip member {info.filename} inflated to {produced} bytes with a bad CRC "
            f"(expected {info.file_size} bytes)"
        )


def prefetch(chunks: Iterator[bytes], depth: int = 1) -> Generator[bytes, None, None]:
    """Run a chunk iterator one step ahead in a thread, so inflating overlaps parsing.

    isal releases the GIL while inflating, as polars does while parsing; memory grows by
    `depth` chunks. Errors surface at the point of iteration where they happened.
    """
    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[str, object]) -> bool:
        """Put an item unless the consumer has gone; tell whether it was delivered."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(("chunk", chunk)):
                    return
            offer(("end", None))
        except BaseException as exc:  # re-raised in the consumer
            offer(("error", exc))

    worker = threading.Thread(target=produce, name="inflate", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
