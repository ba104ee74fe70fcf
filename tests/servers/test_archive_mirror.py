"""The benchmarks' plain mirror answers as the full archive stand-in does."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import time
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.config import Settings
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers import archive_mirror
from tests.servers.archive_mirror import ArchiveMirror
from tests.servers.archive_server import CHUNK_SIZE, ArchiveServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Both = tuple[ArchiveServer, ArchiveMirror]
ZIP_KEY = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip"
BIG_KEY = "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2019-12.zip"
#: Headers that must be equal: the ones the archive client and S3 users read.
COMPARED = ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Server")


@pytest.fixture
def both(archive_root: Path) -> Iterator[Both]:
    """The full stand-in and the mirror over the same tree, with a big object added."""
    big = archive_root / BIG_KEY
    big.parent.mkdir(parents=True, exist_ok=True)
    big.write_bytes(os.urandom(CHUNK_SIZE * 3 + 17))
    with (
        ArchiveServer(archive_root, page_size=2) as full,
        ArchiveMirror(archive_root, page_size=2) as mirror,
    ):
        assert mirror.warm() == full.warm_etags()
        yield full, mirror


def _get(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers, body."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _same(
    both: Both, path: str, method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """Ask both servers; assert equal status, compared headers and body; return the mirror's."""
    full, mirror = both
    want = _get(full.archive_url, path, method, headers)
    got = _get(mirror.archive_url, path, method, headers)
    assert got[0] == want[0]
    for name in COMPARED:
        assert got[1].get(name) == want[1].get(name), name
    assert got[2] == want[2]
    return got


def test_objects_checksums_and_big_files_match(both: Both) -> None:
    """Zip, CHECKSUM and a big object (sent with sendfile): same bytes and validators."""
    status, headers, body = _same(both, "/" + ZIP_KEY)
    assert status == 200 and body[:2] == b"PK" and headers["Content-Type"] == "application/zip"
    status, _, body = _same(both, f"/{ZIP_KEY}.CHECKSUM")
    assert status == 200 and body.decode().split()[1] == ZIP_KEY.rsplit("/", 1)[1]
    status, headers, body = _same(both, "/" + BIG_KEY)
    assert status == 200 and len(body) == CHUNK_SIZE * 3 + 17
    assert int(headers["Content-Length"]) == len(body)


def test_head_and_conditional_get_match(both: Both) -> None:
    """HEAD: headers, no body; If-None-Match with the ETag: 304; a stale one: 200."""
    status, headers, body = _same(both, "/" + ZIP_KEY, "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    etag = headers["ETag"]
    status, _, body = _same(both, "/" + ZIP_KEY, headers={"If-None-Match": etag})
    assert status == 304 and body == b""
    status, _, _ = _same(both, "/" + ZIP_KEY, headers={"If-None-Match": '"stale"'})
    assert status == 200


def test_listing_pages_match(both: Both) -> None:
    """Listing pages (2 entries each, following NextMarker) are the same XML."""
    prefix = "data/spot/daily/klines/BTCUSDT/1m/"
    status, _, first = _same(both, f"/data.binance.vision?delimiter=/&prefix={prefix}")
    assert status == 200 and b"<IsTruncated>true</IsTruncated>" in first
    marker = first.split(b"<NextMarker>")[1].split(b"</NextMarker>")[0].decode()
    status, _, second = _same(
        both, f"/data.binance.vision/?delimiter=/&prefix={prefix}&marker={marker}"
    )
    assert status == 200 and second != first and marker.encode() not in second.split(b"<Key>")[1]


def test_errors_match_and_a_refused_method_closes(both: Both) -> None:
    """Unknown key and a path outside /data: 404 NoSuchKey; POST: 405, connection closed."""
    full, mirror = both
    for path in ("/data/spot/nothing.zip", "/etc/passwd", "/data/../x"):
        for url in (full.archive_url, mirror.archive_url):
            status, headers, body = _get(url, path)
            assert status == 404 and b"<Code>NoSuchKey</Code>" in body
            assert headers["Content-Type"] == "application/xml"
    status, headers, body = _get(mirror.archive_url, "/" + ZIP_KEY, "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD" and headers["Connection"] == "close"


def test_keep_alive_connection_answers_in_order(both: Both) -> None:
    """Two requests sent at once on one connection are answered in order; close then closes."""
    _, mirror = both
    port = int(mirror.archive_url.rsplit(":", 1)[1])
    heads = (f"GET /{ZIP_KEY}.CHECKSUM HTTP/1.1\r\nHost: x\r\n\r\n"
             f"GET /{BIG_KEY} HTTP/1.1\r\nHost: x\r\n\r\n"
             f"HEAD /{ZIP_KEY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(heads.encode())
        received = b""
        while chunk := sock.recv(1 << 16):  # ends when the server closes
            received += chunk
    answers = received.split(b"HTTP/1.1 200 OK\r\n")
    assert len(answers) == 4 and answers[0] == b""
    assert b"BTCUSDT-1m-2020-01-01.zip" in answers[1]
    assert len(answers[2].split(b"\r\n\r\n", 1)[1]) == CHUNK_SIZE * 3 + 17
    assert b"Connection: close" in answers[3] and answers[3].endswith(b"\r\n\r\n")


def test_latency_delays_every_answer(archive_root: Path) -> None:
    """With `latency`, an answer comes no sooner than that."""
    with ArchiveMirror(archive_root, latency=0.05) as mirror:
        started = time.perf_counter()
        status, _, _ = _get(mirror.archive_url, "/" + ZIP_KEY)
        assert status == 200 and time.perf_counter() - started >= 0.05


def test_ingest_through_the_mirror_loads_the_real_files(archive_root: Path, tmp_path: Path) -> None:
    """The archive client lists and fetches through it: three real days, 4,320 rows."""
    with ArchiveMirror(archive_root) as mirror:
        settings = Settings(root=str(tmp_path / "lake"), binance_archive_url=mirror.archive_url,
                            binance_listing_url=mirror.listing_url)  # fmt: skip
        request = IngestRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1),
                                date(2020, 1, 3))  # fmt: skip
        result = asyncio.run(ingest(request, settings))
    assert [f.outcome for f in result.files] == ["loaded"] * 3
    frame = QueryEngine(LakeRoot.at(settings.root)).sql(
        "SELECT count(*), min(open_time) FROM silver.spot_klines"
    )
    assert frame.row(0) == (4320, datetime(2020, 1, 1, tzinfo=UTC))


def test_http_1_0_closes_and_a_failure_answers_500(
    archive_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP/1.0 request gets its answer, then the close; a listing that fails answers 500."""

    def broken(*args: object, **kwargs: object) -> tuple[int, bytes]:
        raise OSError("disk gone")

    monkeypatch.setattr(archive_mirror, "render_listing", broken)
    with ArchiveMirror(archive_root) as mirror:
        port = int(mirror.archive_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET /{ZIP_KEY}.CHECKSUM HTTP/1.0\r\n\r\n".encode())
            received = b""
            while chunk := sock.recv(1 << 16):  # ends when the server closes
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in received
        status, headers, body = _get(mirror.archive_url, "/data.binance.vision?prefix=data/")
    assert status == 500 and b"OSError: disk gone" in body
    assert headers["Connection"] == "close"
