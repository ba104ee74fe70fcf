"""The archive stand-in's fault scripts: one-off faults per path and periodic ones."""

from __future__ import annotations

import io
import socket
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.servers.archive_files import ZIP_KEY, ZIP_PATH
from tests.servers.archive_server import ArchiveServer, Fault, RequestRecord

if TYPE_CHECKING:
    from pathlib import Path


def test_status_fault_fires_once_then_serves_normally(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """A queued 503 answers exactly one request with an S3 XML error, then the file is served."""
    server.faults.add(ZIP_PATH, Fault.status(503))
    failed = client.get(server.archive_url + ZIP_PATH)
    assert failed.status_code == 503
    assert ET.fromstring(failed.content).findtext("Code") == "SlowDown"
    assert "retry-after" not in failed.headers
    assert client.get(server.archive_url + ZIP_PATH).status_code == 200
    assert server.faults.pending() == 0


def test_429_fault_sends_retry_after(server: ArchiveServer, client: httpx.Client) -> None:
    """Fault.status(429, retry_after=1) adds a Retry-After header."""
    server.faults.add(ZIP_KEY, Fault.status(429, retry_after=1))
    resp = client.get(server.archive_url + ZIP_PATH)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"


def test_faults_repeat_with_times_and_queue_in_order(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """times= repeats a fault and faults for one path are consumed first-in first-out."""
    server.faults.add(ZIP_PATH, Fault.status(500), times=2)
    server.faults.add(ZIP_PATH, Fault.status(429, retry_after=3))
    assert server.faults.pending(ZIP_PATH) == 3
    codes = [client.get(server.archive_url + ZIP_PATH).status_code for _ in range(4)]
    assert codes == [500, 500, 429, 200]


def test_faults_only_hit_their_own_path(server: ArchiveServer, client: httpx.Client) -> None:
    """A fault queued for one download leaves other paths and the listing untouched."""
    server.faults.add(ZIP_PATH, Fault.status(503))
    assert client.get(server.archive_url + ZIP_PATH + ".CHECKSUM").status_code == 200
    assert client.get(server.listing_url, params={"prefix": "data/"}).status_code == 200
    assert server.faults.pending(ZIP_PATH) == 1
    server.faults.clear()
    assert client.get(server.archive_url + ZIP_PATH).status_code == 200


def test_truncate_fault_announces_full_length_then_closes(
    server: ArchiveServer, root: Path
) -> None:
    """Fault.truncate(n) sends the full Content-Length, n body bytes, then closes the socket."""
    size = (root / ZIP_KEY).stat().st_size
    server.faults.add(ZIP_PATH, Fault.truncate(1000))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {ZIP_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"Content-Length: {size}".encode() in head
    assert body == (root / ZIP_KEY).read_bytes()[:1000]
    assert server.requests[-1] == RequestRecord("GET", ZIP_PATH, 200, 1000)


def test_truncate_fault_surfaces_as_client_protocol_error(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """An httpx client sees the truncated body as an error, and the next request succeeds."""
    server.faults.add(ZIP_PATH, Fault.truncate(30_000))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.archive_url + ZIP_PATH)
    assert client.get(server.archive_url + ZIP_PATH).status_code == 200


def test_html_fault_returns_200_html_page(server: ArchiveServer, client: httpx.Client) -> None:
    """Fault.html() answers 200 text/html instead of the zip."""
    server.faults.add(ZIP_PATH, Fault.html())
    resp = client.get(server.archive_url + ZIP_PATH)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.text.lstrip().lower().startswith("<!doctype html")
    assert not zipfile.is_zipfile(io.BytesIO(resp.content))


def test_delay_fault_waits_then_serves_without_blocking_others(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """Fault.delay holds only its own request, which then gets the normal response."""
    server.faults.add(ZIP_PATH, Fault.delay(3.0))
    with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=10) as other:
        slow = pool.submit(client.get, server.archive_url + ZIP_PATH)
        assert other.get(server.archive_url + ZIP_PATH + ".CHECKSUM").status_code == 200
        answered_while_held = not slow.done()
        resp = slow.result()
    assert answered_while_held
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/zip"


def test_latency_delays_every_answer_without_queueing_them(server: ArchiveServer) -> None:
    """With `latency`, eight requests at once are all waiting together, then all answered."""
    server.latency = 0.4
    urls = [server.archive_url + ZIP_PATH, server.archive_url + ZIP_PATH + ".CHECKSUM"] * 4
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda url: httpx.get(url, timeout=10), urls))
    server.latency = 0.0
    assert [a.status_code for a in answers] == [200] * 8
    assert answers[0].content == (server.root / ZIP_PATH.lstrip("/")).read_bytes()
    assert server.max_in_flight == 8  # not queued: every wait overlapped the others
    server.reset_log()
    assert server.max_in_flight == 0


def test_concurrent_fault_consumption_is_exact(server: ArchiveServer) -> None:
    """Under parallel load each queued fault is consumed by exactly one request."""
    server.faults.add(ZIP_PATH, Fault.status(503), times=10)
    with httpx.Client(timeout=20) as c, ThreadPoolExecutor(12) as pool:
        codes = list(
            pool.map(lambda _: c.get(server.archive_url + ZIP_PATH).status_code, range(30))
        )
    assert codes.count(503) == 10
    assert codes.count(200) == 20


def test_periodic_faults_count_every_request_and_every_object(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """every(3) hits requests 3, 6, 9...; every(4, objects_only) hits the 4th, 8th... object."""
    server.faults.every(3, Fault.status(503))
    server.faults.every(4, Fault.html(), objects_only=True)
    listing = {"delimiter": "/", "prefix": "data/"}
    answers = [
        client.get(server.listing_url, params=listing),  # request 1 (not an object)
        *(client.get(server.archive_url + ZIP_PATH) for _ in range(8)),  # objects 1-8
    ]
    kinds = [
        "503" if a.status_code == 503 else "html" if "html" in a.headers["content-type"] else "ok"
        for a in answers
    ]
    # requests 3, 6, 9 are 503; objects 4 (request 5) and 8 (request 9: the 503 wins) are HTML
    assert kinds == ["ok", "ok", "503", "ok", "html", "503", "ok", "ok", "503"]


def test_one_off_fault_goes_before_periodic_ones_and_still_counts(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """A queued fault for a path wins over a periodic rule, and its request is counted."""
    server.faults.every(2, Fault.status(503))
    server.faults.add(ZIP_PATH, Fault.html())
    first = client.get(server.archive_url + ZIP_PATH)
    second = client.get(server.archive_url + ZIP_PATH)
    assert first.headers["content-type"].startswith("text/html")
    assert second.status_code == 503  # request 2, whatever the first one got
    server.faults.clear()
    assert client.get(server.archive_url + ZIP_PATH).status_code == 200


def test_truncate_share_cuts_each_body_by_its_own_length(server: ArchiveServer, root: Path) -> None:
    """Fault.truncate_share(0.5) sends half of whichever object it hits, zip or CHECKSUM."""
    server.faults.every(1, Fault.truncate_share(0.5), objects_only=True)
    for key in (ZIP_KEY, ZIP_KEY + ".CHECKSUM"):
        with httpx.Client(timeout=10) as c, pytest.raises(httpx.RemoteProtocolError):
            c.get(f"{server.archive_url}/{key}")
    sent = [r.bytes_sent for r in server.requests]
    sizes = [(root / key).stat().st_size for key in (ZIP_KEY, ZIP_KEY + ".CHECKSUM")]
    assert sent == [size // 2 for size in sizes]
