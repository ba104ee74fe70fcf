"""The archive stand-in's request log, concurrency, lifecycle and CLI; the tree helpers."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import signal
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.servers.archive_files import (
    FIXTURE_TREE,
    KLINES_1M,
    ZIP_KEY,
    ZIP_PATH,
    checksum_text,
    copy_fixture_tree,
    fixture_keys,
    make_zip,
    publish,
)
from tests.servers.archive_server import ArchiveServer, Fault, RequestRecord

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- log, concurrency, lifecycle -------------------------------------------------------------


def test_request_log_records_method_path_status_and_bytes(
    server: ArchiveServer, client: httpx.Client, root: Path
) -> None:
    """The log lists each request with its query string, and reset_log empties it."""
    client.get(server.listing_url, params={"prefix": KLINES_1M})
    client.get(server.archive_url + ZIP_PATH)
    client.head(server.archive_url + ZIP_PATH)
    client.get(server.archive_url + "/data/nope.zip")
    log = server.requests
    assert [(r.method, r.status) for r in log] == [
        ("GET", 200),
        ("GET", 200),
        ("HEAD", 200),
        ("GET", 404),
    ]
    assert log[0].path.startswith("/data.binance.vision?prefix=")
    assert log[1] == RequestRecord("GET", ZIP_PATH, 200, (root / ZIP_KEY).stat().st_size)
    zip_gets = [r for r in log if r.method == "GET" and r.path.endswith(".zip") and r.status == 200]
    assert len(zip_gets) == 1
    server.reset_log()
    assert server.requests == []


def test_concurrent_downloads_all_succeed(server: ArchiveServer, root: Path) -> None:
    """Many parallel downloads of every fixture object return the right bytes."""
    keys = fixture_keys("data/") * 6
    with (
        httpx.Client(timeout=20, limits=httpx.Limits(max_connections=16)) as c,
        ThreadPoolExecutor(16) as pool,
    ):
        bodies = list(pool.map(lambda k: c.get(f"{server.archive_url}/{k}").content, keys))
    for key, body in zip(keys, bodies, strict=True):
        assert body == (root / key).read_bytes()
    assert len(server.requests) == len(keys)
    assert all(r.status == 200 for r in server.requests)


def test_stop_then_start_reuses_port_and_closes_idle_connections(root: Path) -> None:
    """stop() drops keep-alive connections and a restart binds the same port."""
    srv = ArchiveServer(root).start()
    url = srv.archive_url
    idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        idle.request("HEAD", ZIP_PATH)
        assert idle.getresponse().status == 200
        assert idle.sock is not None
        srv.stop()
        assert idle.sock.recv(1) == b""
    finally:
        idle.close()
    srv.start()
    try:
        assert srv.archive_url == url
        assert httpx.get(url + ZIP_PATH).status_code == 200
    finally:
        srv.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + ZIP_PATH)


def test_urls_require_a_started_server(root: Path) -> None:
    """archive_url needs a bound port; listing_url is archive_url plus the bucket."""
    srv = ArchiveServer(root)
    with pytest.raises(RuntimeError):
        _ = srv.archive_url
    with srv:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", srv.archive_url)
        assert srv.listing_url == srv.archive_url + "/data.binance.vision"


def test_server_is_quiet(
    server: ArchiveServer, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    """Serving requests, errors and faults writes nothing to stdout or stderr."""
    server.faults.add(ZIP_PATH, Fault.truncate(10))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.archive_url + ZIP_PATH)
    client.get(server.archive_url + "/data/nope.zip")
    client.get(server.listing_url, params={"prefix": "data/"})
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_module_cli_prints_urls_and_stops_on_sigterm(root: Path) -> None:
    """python -m tests.servers.archive_server prints one JSON line and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.servers.archive_server",
            "--root",
            str(root),
            "--port",
            "0",
            "--page-size",
            "2",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        assert set(urls) == {"archive_url", "listing_url"}
        assert httpx.get(urls["archive_url"] + ZIP_PATH).status_code == 200
        listing = httpx.get(urls["listing_url"], params={"delimiter": "/", "prefix": KLINES_1M})
        assert listing.text.count("<Key>") == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- archive_files ---------------------------------------------------------------------------


def test_checksum_text_reproduces_real_binance_checksum_file() -> None:
    """checksum_text matches Binance's own CHECKSUM bytes (two spaces, no newline)."""
    real = (FIXTURE_TREE / (ZIP_KEY + ".CHECKSUM")).read_text()
    zip_bytes = (FIXTURE_TREE / ZIP_KEY).read_bytes()
    assert checksum_text(zip_bytes, "BTCUSDT-1m-2020-01-01.zip") == real
    assert checksum_text(zip_bytes, "x.zip", newline=True).endswith("  x.zip\n")


def test_make_zip_deflates_member_and_extras() -> None:
    """make_zip writes the named member first, deflated, plus any extra members."""
    data = make_zip(
        "A-1m-2020-01-01.csv", b"1,2\n" * 100, extra_members={"__MACOSX/._A.csv": b"junk"}
    )
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["A-1m-2020-01-01.csv", "__MACOSX/._A.csv"]
        assert infos[0].compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("A-1m-2020-01-01.csv") == b"1,2\n" * 100


def test_publish_writes_zip_and_checksum(tmp_path: Path) -> None:
    """publish writes the zip with a same-named CSV and a valid CHECKSUM beside it."""
    key = "data/spot/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2021-03-04.zip"
    path = publish(tmp_path, key, "1,2,3\n", newline=True)
    assert path == tmp_path / key
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["ETHUSDT-1h-2021-03-04.csv"]
        assert zf.read("ETHUSDT-1h-2021-03-04.csv") == b"1,2,3\n"
    checksum = path.with_name(path.name + ".CHECKSUM").read_text()
    assert checksum == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".CHECKSUM"]


def test_publish_can_write_a_wrong_checksum(tmp_path: Path) -> None:
    """checksum= replaces the digest so tests can simulate a corrupt publish."""
    path = publish(
        tmp_path, "data/spot/daily/trades/X/X-trades-2020-01-01.zip", b"1\n", checksum="0" * 64
    )
    assert path.with_name(path.name + ".CHECKSUM").read_text() == "0" * 64 + "  " + path.name


def test_publish_rejects_keys_outside_data(tmp_path: Path) -> None:
    """Keys must start with data/ and end with .zip."""
    for bad in ("spot/x.zip", "data/../x.zip", "data/spot/x.csv"):
        with pytest.raises(ValueError):
            publish(tmp_path, bad, "1\n")


def test_republish_changes_mtime_even_when_immediate(tmp_path: Path) -> None:
    """Back-to-back publishes of one key leave a strictly newer mtime."""
    key = "data/spot/daily/trades/X/X-trades-2020-01-01.zip"
    first = publish(tmp_path, key, "1\n").stat().st_mtime_ns
    second = publish(tmp_path, key, "2\n").stat().st_mtime_ns
    assert second > first


def test_copy_fixture_tree_copies_real_files_untouched(tmp_path: Path) -> None:
    """The copy holds every fixture file byte for byte and leaves the originals alone."""
    dst = copy_fixture_tree(tmp_path / "copy")
    keys = fixture_keys("data/")
    assert len(keys) == 10
    for key in keys:
        assert (dst / key).read_bytes() == (FIXTURE_TREE / key).read_bytes()
    publish(dst, ZIP_KEY, "changed\n")
    assert (FIXTURE_TREE / ZIP_KEY).read_bytes() != (dst / ZIP_KEY).read_bytes()


def test_warm_etags_hashes_every_file_up_front(
    server: ArchiveServer, client: httpx.Client, root: Path
) -> None:
    """Warming computes each object's quoted MD5 once; the served ETag is that digest."""
    count = server.warm_etags()
    assert count == sum(1 for p in root.rglob("*") if p.is_file())
    expected = '"' + hashlib.md5((root / ZIP_PATH.lstrip("/")).read_bytes()).hexdigest() + '"'
    assert client.head(server.archive_url + ZIP_PATH).headers["etag"] == expected
