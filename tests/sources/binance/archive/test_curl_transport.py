"""CurlTransport over real HTTP against the archive stand-in: results, limits, shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from pathlib import Path

import certifi
import pycurl
import pytest

from crypto_lakehouse.sources.binance.archive import curl_transport
from crypto_lakehouse.sources.binance.archive.curl_transport import (
    CurlTransport,
    CurlTransportError,
    WholeResponse,
    _ca_file,
    _parse_headers,
)
from tests.servers.archive_files import FIXTURE_TREE
from tests.servers.archive_server import ArchiveServer
from tests.servers.tls import local_tls

KEY = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip"


def transport(max_connections: int = 4) -> CurlTransport:
    """A transport with short timeouts."""
    return CurlTransport(max_connections=max_connections, connect_timeout=5, read_timeout=5)


def test_get_returns_status_headers_body_and_hash(archive: ArchiveServer) -> None:
    """A GET answers with the status, case-insensitive headers, the body and its SHA-256."""
    source = (FIXTURE_TREE / KEY).read_bytes()
    curl = transport()

    async def main() -> tuple[WholeResponse, WholeResponse]:
        return await asyncio.gather(
            curl.get(archive.archive_url + "/" + KEY),
            curl.get(archive.archive_url + "/" + KEY + ".missing"),
        )

    try:
        found, missing = asyncio.run(main())
    finally:
        curl.close()
    assert found.status == 200
    assert found.body == source
    assert found.sha256 == hashlib.sha256(source).hexdigest()
    assert found.headers["content-length"] == str(len(source))
    assert found.headers["ETag"].strip('"') == hashlib.md5(source).hexdigest()
    assert missing.status == 404


def test_connections_are_bounded_and_every_request_answered(archive: ArchiveServer) -> None:
    """24 GETs at once through 3 connections: never more than 3 in flight, all 24 answered."""
    archive.latency = 0.02
    curl = transport(max_connections=3)

    async def main() -> list[int]:
        url = archive.archive_url + "/" + KEY
        return [r.status for r in await asyncio.gather(*(curl.get(url) for _ in range(24)))]

    try:
        statuses = asyncio.run(main())
    finally:
        curl.close()
    assert statuses == [200] * 24
    assert 1 <= archive.max_in_flight <= 3


def test_requests_queued_together_share_a_wake_up_and_none_is_lost(
    archive: ArchiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 GETs queued at once write far fewer than 40 wake-ups; GETs one after another, each
    queued while the thread sleeps with nothing in flight, are each answered (none waits for
    a wake-up that never comes)."""
    curl = transport(max_connections=4)
    writes: list[int] = []
    real_write = curl_transport.os.write

    def counting_write(fd: int, data: bytes) -> int:
        if fd == curl._wake_write:
            writes.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(curl_transport.os, "write", counting_write)
    url = archive.archive_url + "/" + KEY

    async def main() -> tuple[list[WholeResponse], list[WholeResponse]]:
        together = await asyncio.gather(*(curl.get(url) for _ in range(40)))
        one_by_one = []
        for _ in range(5):
            await asyncio.sleep(0.02)  # the thread is back in poll, nothing in flight
            one_by_one.append(await asyncio.wait_for(curl.get(url), timeout=5))
        return together, one_by_one

    try:
        together, one_by_one = asyncio.run(main())
    finally:
        curl.close()
    assert [r.status for r in together + one_by_one] == [200] * 45
    assert len(writes) < 20  # one per wake-up of the thread, not one per request


def test_close_fails_requests_in_flight_and_refuses_new_ones(archive: ArchiveServer) -> None:
    """Closing while a slow answer is pending fails it; a GET after close is refused."""
    archive.latency = 2.0
    curl = transport()

    async def main() -> None:
        pending = asyncio.ensure_future(curl.get(archive.archive_url + "/" + KEY))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(curl.close)
        with pytest.raises(CurlTransportError, match="transport closed"):
            await pending

    asyncio.run(main())
    with pytest.raises(CurlTransportError, match="transport closed"):
        asyncio.run(curl.get(archive.archive_url + "/" + KEY))


def test_a_cancelled_get_leaves_the_transport_working(archive: ArchiveServer) -> None:
    """A caller that gives up on a GET does not disturb the next one."""
    curl = transport()

    async def main() -> int:
        archive.latency = 0.5
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(curl.get(archive.archive_url + "/" + KEY), 0.05)
        archive.latency = 0.0
        return (await curl.get(archive.archive_url + "/" + KEY)).status

    try:
        assert asyncio.run(main()) == 200
    finally:
        curl.close()


def test_a_bulk_returns_every_outcome_with_its_tag(archive: ArchiveServer) -> None:
    """30 GETs in one bulk (one missing, one to a closed port): each outcome comes back once,
    beside its tag, in fewer batches than requests; an idle bulk returns nothing at once."""
    curl = transport(max_connections=4)
    url = archive.archive_url + "/" + KEY

    async def main() -> tuple[list[list[tuple[object, object]]], list[tuple[object, object]]]:
        bulk = curl.bulk()
        bulk.submit([(n, url, None) for n in range(28)])
        bulk.submit([("missing", url + ".missing", None),
                     ("refused", "http://127.0.0.1:9/x", None)])  # fmt: skip
        batches = []
        while bulk.pending:
            batches.append(await bulk.next_done())
        return batches, await bulk.next_done()

    try:
        batches, idle = asyncio.run(main())
    finally:
        curl.close()
    outcomes = {tag: outcome for batch in batches for tag, outcome in batch}
    assert sum(len(batch) for batch in batches) == len(outcomes) == 30
    assert len(batches) < 30
    source = (FIXTURE_TREE / KEY).read_bytes()
    for n in range(28):
        found = outcomes[n]
        assert isinstance(found, WholeResponse)
        assert (found.status, found.body) == (200, source)
    missing = outcomes["missing"]
    assert isinstance(missing, WholeResponse)
    assert missing.status == 404
    refused = outcomes["refused"]
    assert isinstance(refused, CurlTransportError)
    assert refused.code == 7
    assert idle == []


def test_closing_fails_the_requests_of_a_bulk_in_flight(archive: ArchiveServer) -> None:
    """A bulk whose answers are slow gets `transport closed` for each request when closed."""
    archive.latency = 2.0
    curl = transport()

    async def main() -> list[tuple[object, object]]:
        bulk = curl.bulk()
        bulk.submit([(n, archive.archive_url + "/" + KEY, None) for n in range(3)])
        await asyncio.sleep(0.2)
        await asyncio.to_thread(curl.close)
        got: list[tuple[object, object]] = []
        while bulk.pending:
            got += await asyncio.wait_for(bulk.next_done(), timeout=5)
        return got

    outcomes = asyncio.run(main())
    assert sorted(tag for tag, _ in outcomes) == [0, 1, 2]  # type: ignore[type-var]
    for _, outcome in outcomes:
        assert isinstance(outcome, CurlTransportError)
        assert "transport closed" in str(outcome)


def test_refused_connection_is_a_transport_error() -> None:
    """Nothing listening: CurlTransportError with libcurl's code 7, not a short body."""
    curl = transport()
    try:
        with pytest.raises(CurlTransportError) as err:
            asyncio.run(curl.get("http://127.0.0.1:9/x.zip"))
    finally:
        curl.close()
    assert err.value.code == 7
    assert not err.value.short


def test_headers_are_those_of_the_last_response() -> None:
    """After a proxy's CONNECT answer, the headers read are the origin's."""
    raw = (
        b"HTTP/1.1 200 Connection established\r\nVia: proxy\r\n\r\n"
        b'HTTP/1.1 200 OK\r\nETag: "abc"\r\nContent-Length: 3\r\n\r\n'
    )
    headers = _parse_headers(raw)
    assert headers["etag"] == '"abc"'
    assert headers["Content-Length"] == "3"
    assert "via" not in headers


def test_ca_bundle_is_the_one_python_trusts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE wins; without it (or when it is missing) a bundle that exists is used."""
    bundle = tmp_path / "roots.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert _ca_file() == str(bundle)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    fallback = _ca_file()
    assert fallback is not None and fallback != str(tmp_path / "missing.pem")
    assert Path(fallback).exists()


def test_certifi_is_asked_only_when_the_system_has_no_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a system bundle certifi is not consulted (its lookup imports importlib's resource
    readers, 7-10 ms of a run); without one, certifi's bundle is used."""
    system = tmp_path / "system.pem"
    system.write_text("-----BEGIN CERTIFICATE-----\n")
    bundled = tmp_path / "certifi.pem"
    bundled.write_text("-----BEGIN CERTIFICATE-----\n")
    paths = ssl.DefaultVerifyPaths(str(system), "", "SSL_CERT_FILE", "", "SSL_CERT_DIR", "")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    asked: list[str] = []

    def where() -> str:
        asked.append("certifi")
        return str(bundled)

    monkeypatch.setattr(certifi, "where", where)
    assert _ca_file() == str(system)
    assert asked == []
    system.unlink()
    assert _ca_file() == str(bundled)
    assert asked == ["certifi"]


def test_https_is_verified_against_the_trusted_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS the body arrives when the server's CA is trusted, and is refused when not."""
    context, ca_pem = local_tls(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.zip").write_bytes(b"PK\x03\x04 body")
    with ArchiveServer(tmp_path, ssl_context=context) as server:
        url = server.archive_url + "/data/x.zip"
        assert url.startswith("https://127.0.0.1:")
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))
        trusting = transport()
        try:
            response = asyncio.run(trusting.get(url))
        finally:
            trusting.close()
        assert response.status == 200
        assert response.body == b"PK\x03\x04 body"
        monkeypatch.delenv("SSL_CERT_FILE")  # the system's roots do not include the test CA
        strict = transport()
        try:
            with pytest.raises(CurlTransportError) as err:
                asyncio.run(strict.get(url))
        finally:
            strict.close()
        assert err.value.code == pycurl.E_PEER_FAILED_VERIFICATION


def _one_shot_server(answer: bytes) -> tuple[str, threading.Thread]:
    """Serve one connection: read the request, send `answer` (maybe nothing), close."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                if answer:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/x.zip", thread


def test_a_connection_closed_before_any_answer_is_not_a_short_body() -> None:
    """No status line at all is a failed request; a status line and then a cut is short."""
    curl = transport()
    try:
        url, server = _one_shot_server(b"")
        with pytest.raises(CurlTransportError) as nothing:
            asyncio.run(curl.get(url))
        server.join(5)
        url, server = _one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nPK\x03\x04")
        with pytest.raises(CurlTransportError) as cut:
            asyncio.run(curl.get(url))
        server.join(5)
    finally:
        curl.close()
    assert nothing.value.code == pycurl.E_GOT_NOTHING
    assert not nothing.value.short
    assert cut.value.code == pycurl.E_PARTIAL_FILE
    assert cut.value.short
    assert "after 4 bytes" in str(cut.value)
