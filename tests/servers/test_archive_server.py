"""Tests for the local data.binance.vision stand-in and its publishing helpers."""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers.archive_files import (
    FIXTURE_TREE,
    KLINES_1M,
    ZIP_KEY,
    ZIP_PATH,
    checksum_text,
    fixture_keys,
    publish,
)
from tests.servers.archive_server import S3_NS, ArchiveServer, Fault, RequestRecord

NS = {"s3": S3_NS}
REPO_ROOT = Path(__file__).resolve().parents[2]


def _parse(xml_bytes: bytes) -> dict[str, Any]:
    """Turn a ListBucketResult document into a plain dict."""
    tree = ET.fromstring(xml_bytes)
    assert tree.tag == f"{{{S3_NS}}}ListBucketResult"

    def text(tag: str) -> str | None:
        node = tree.find(f"s3:{tag}", NS)
        return None if node is None else (node.text or "")

    return {
        "name": text("Name"),
        "prefix": text("Prefix"),
        "marker": text("Marker"),
        "max_keys": text("MaxKeys"),
        "delimiter": text("Delimiter"),
        "truncated": text("IsTruncated"),
        "next_marker": text("NextMarker"),
        "keys": [c.findtext("s3:Key", namespaces=NS) for c in tree.findall("s3:Contents", NS)],
        "contents": tree.findall("s3:Contents", NS),
        "prefixes": [
            p.findtext("s3:Prefix", namespaces=NS) for p in tree.findall("s3:CommonPrefixes", NS)
        ],
    }


def _list(client: httpx.Client, srv: ArchiveServer, **params: str) -> dict[str, Any]:
    """Issue one listing request and parse it."""
    resp = client.get(srv.listing_url, params=params)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/xml"
    return _parse(resp.content)


def _walk(client: httpx.Client, srv: ArchiveServer, **params: str) -> list[dict[str, Any]]:
    """Follow a listing to the end like a v1 client: NextMarker, else the last entry."""
    pages: list[dict[str, Any]] = []
    marker = ""
    while True:
        page = _list(client, srv, marker=marker, **params)
        pages.append(page)
        if page["truncated"] != "true":
            return pages
        marker = page["next_marker"] or max(page["keys"] + page["prefixes"])
        assert len(pages) < 50, "listing does not terminate"


# --- downloads -------------------------------------------------------------------------------


def test_download_serves_exact_bytes_with_s3_headers(
    server: ArchiveServer, client: httpx.Client, root: Path
) -> None:
    """A GET of a zip returns the file bytes with length, type, md5 ETag and Last-Modified."""
    resp = client.get(server.archive_url + ZIP_PATH)
    data = (root / ZIP_KEY).read_bytes()
    assert resp.status_code == 200
    assert resp.content == data == (FIXTURE_TREE / ZIP_KEY).read_bytes()
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["content-type"] == "application/zip"
    assert resp.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert resp.headers["last-modified"] == email.utils.formatdate(
        (root / ZIP_KEY).stat().st_mtime, usegmt=True
    )


def test_checksum_file_is_text_plain_and_matches_zip(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """The CHECKSUM companion is served as text/plain and holds the zip's sha256."""
    zip_bytes = client.get(server.archive_url + ZIP_PATH).content
    resp = client.get(server.archive_url + ZIP_PATH + ".CHECKSUM")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain"
    assert resp.text == checksum_text(zip_bytes, "BTCUSDT-1m-2020-01-01.zip")


def test_head_returns_headers_without_body(server: ArchiveServer, client: httpx.Client) -> None:
    """HEAD reports the same validators and length as GET but sends no body."""
    get = client.get(server.archive_url + ZIP_PATH)
    head = client.head(server.archive_url + ZIP_PATH)
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-length", "etag", "last-modified", "content-type"):
        assert head.headers[name] == get.headers[name]
    assert server.requests[-1] == RequestRecord("HEAD", ZIP_PATH, 200, 0)


def test_if_none_match_with_current_etag_returns_304(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """A matching If-None-Match yields 304 with no body; a stale one yields the object."""
    etag = client.get(server.archive_url + ZIP_PATH).headers["etag"]
    cached = client.get(server.archive_url + ZIP_PATH, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    stale = client.get(server.archive_url + ZIP_PATH, headers={"If-None-Match": '"0000"'})
    assert stale.status_code == 200
    assert len(stale.content) == int(stale.headers["content-length"])


def test_if_modified_since_returns_304_when_unchanged(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """If-Modified-Since equal to Last-Modified yields 304; an older date yields 200."""
    last_modified = client.head(server.archive_url + ZIP_PATH).headers["last-modified"]
    resp = client.get(server.archive_url + ZIP_PATH, headers={"If-Modified-Since": last_modified})
    assert resp.status_code == 304
    old = email.utils.formatdate(0, usegmt=True)
    assert (
        client.get(server.archive_url + ZIP_PATH, headers={"If-Modified-Since": old}).status_code
        == 200
    )


def test_republished_file_gets_new_etag_and_body(
    server: ArchiveServer, client: httpx.Client, root: Path
) -> None:
    """Overwriting a file on disk is visible on the next request, with a fresh ETag."""
    first = client.get(server.archive_url + ZIP_PATH)
    publish(root, ZIP_KEY, "1577836800000,1,2,3,4,5,1577836859999,6,7,8,9,0\n")
    second = client.get(server.archive_url + ZIP_PATH)
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]
    assert second.headers["etag"] == f'"{hashlib.md5(second.content).hexdigest()}"'
    assert (
        client.get(
            server.archive_url + ZIP_PATH, headers={"If-None-Match": first.headers["etag"]}
        ).status_code
        == 200
    )


def test_missing_key_returns_s3_xml_404(server: ArchiveServer, client: httpx.Client) -> None:
    """An unknown key answers 404 with an S3 NoSuchKey XML error."""
    resp = client.get(server.archive_url + "/data/spot/daily/klines/NOPE/1m/NOPE.zip")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/xml"
    error = ET.fromstring(resp.content)
    assert error.tag == "Error"
    assert error.findtext("Code") == "NoSuchKey"
    assert error.findtext("Key") == "data/spot/daily/klines/NOPE/1m/NOPE.zip"


def test_paths_outside_the_archive_are_not_served(server: ArchiveServer) -> None:
    """Traversal attempts and directories get 404 or an empty listing, never outside files."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for raw in (
            "/data/%2e%2e/%2e%2e/archive/data/spot/daily/klines/BTCUSDT/1m/x",
            "/data/../data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip",
            "/data/spot/daily/klines/",
            "/etc/passwd",
        ):
            conn.request("GET", raw)
            resp = conn.getresponse()
            assert resp.status == 404, raw
            assert b"NoSuchKey" in resp.read()
        conn.request("GET", "/data.binance.vision?prefix=data/../../")
        listing = _parse(conn.getresponse().read())
        assert listing["keys"] == [] and listing["prefixes"] == []
    finally:
        conn.close()


def test_large_file_streams_intact_across_chunks(root: Path, client: httpx.Client) -> None:
    """A file bigger than several read chunks arrives byte for byte."""
    big = os.urandom(3 * 1024 * 1024 + 17)
    path = root / "data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2020-01.zip"
    path.parent.mkdir(parents=True)
    path.write_bytes(big)
    with ArchiveServer(root) as srv:
        resp = client.get(
            srv.archive_url + "/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2020-01.zip"
        )
    assert resp.content == big
    assert resp.headers["etag"] == f'"{hashlib.md5(big).hexdigest()}"'


def test_keep_alive_reuses_one_connection(server: ArchiveServer) -> None:
    """Sequential requests, including 404 and 304, share one HTTP/1.1 connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", ZIP_PATH)
        first = conn.getresponse()
        etag = first.getheader("ETag")
        assert first.version == 11
        first.read()
        sock = conn.sock
        assert sock is not None
        for path, headers, status in (
            (ZIP_PATH, {"If-None-Match": etag or ""}, 304),
            ("/data/missing.zip", {}, 404),
            (ZIP_PATH + ".CHECKSUM", {}, 200),
        ):
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == status
            assert not resp.will_close
            assert conn.sock is sock
    finally:
        conn.close()


# --- listing ---------------------------------------------------------------------------------


def test_listing_collapses_subdirectories_into_common_prefixes(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """With delimiter=/ each sub-directory appears once as a CommonPrefix, with no Contents."""
    top = _list(client, server, delimiter="/", prefix="data/")
    assert top["name"] == "data.binance.vision"
    assert top["delimiter"] == "/"
    assert top["truncated"] == "false"
    assert top["prefixes"] == ["data/futures/", "data/spot/"]
    assert top["keys"] == []
    futures = _list(client, server, delimiter="/", prefix="data/futures/")
    assert futures["prefixes"] == ["data/futures/cm/", "data/futures/um/"]
    symbols = _list(client, server, delimiter="/", prefix="data/spot/daily/klines/")
    assert symbols["prefixes"] == ["data/spot/daily/klines/BTCUSDT/"]


def test_listing_contents_carry_s3_object_metadata(
    server: ArchiveServer, client: httpx.Client, root: Path
) -> None:
    """Contents list every object (CHECKSUMs too) with LastModified, quoted md5 ETag and Size."""
    page = _list(client, server, delimiter="/", prefix=KLINES_1M)
    assert page["keys"] == fixture_keys(KLINES_1M)
    assert len(page["keys"]) == 6
    assert page["prefixes"] == []
    assert page["next_marker"] is None
    for node in page["contents"]:
        path = root / node.findtext("s3:Key", namespaces=NS)
        assert node.findtext("s3:Size", namespaces=NS) == str(path.stat().st_size)
        assert node.findtext("s3:ETag", namespaces=NS) == (
            f'"{hashlib.md5(path.read_bytes()).hexdigest()}"'
        )
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z",
            node.findtext("s3:LastModified", namespaces=NS) or "",
        )
        assert node.findtext("s3:StorageClass", namespaces=NS) == "STANDARD"


def test_listing_escapes_etag_quotes_like_s3(server: ArchiveServer, client: httpx.Client) -> None:
    """The raw XML writes ETag quotes as &quot; the way S3 does."""
    body = client.get(server.listing_url, params={"prefix": ZIP_KEY}).text
    assert re.search(r"<ETag>&quot;[0-9a-f]{32}&quot;</ETag>", body)
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>')


def test_listing_paginates_by_next_marker_with_page_size_two(
    root: Path, client: httpx.Client
) -> None:
    """With page_size=2 a client following NextMarker sees every key once, in order."""
    with ArchiveServer(root, page_size=2) as srv:
        pages = _walk(client, srv, delimiter="/", prefix=KLINES_1M)
    assert [len(p["keys"]) for p in pages] == [2, 2, 2]
    assert [p["truncated"] for p in pages] == ["true", "true", "false"]
    assert [p["next_marker"] for p in pages] == [pages[0]["keys"][-1], pages[1]["keys"][-1], None]
    assert [p["marker"] for p in pages] == ["", pages[0]["keys"][-1], pages[1]["keys"][-1]]
    assert [k for p in pages for k in p["keys"]] == fixture_keys(KLINES_1M)


def test_listing_without_next_marker_supports_last_key_fallback(
    root: Path, client: httpx.Client
) -> None:
    """With emit_next_marker=False truncated pages omit NextMarker and the last key still works."""
    with ArchiveServer(root, page_size=2, emit_next_marker=False) as srv:
        pages = _walk(client, srv, delimiter="/", prefix=KLINES_1M)
    assert len(pages) == 3
    assert all(p["next_marker"] is None for p in pages)
    assert pages[0]["truncated"] == "true"
    assert [k for p in pages for k in p["keys"]] == fixture_keys(KLINES_1M)


def test_common_prefix_marker_skips_that_whole_subtree(root: Path, client: httpx.Client) -> None:
    """Paging prefixes one at a time never repeats a prefix, both with and without NextMarker."""
    for emit in (True, False):
        with ArchiveServer(root, page_size=1, emit_next_marker=emit) as srv:
            pages = _walk(client, srv, delimiter="/", prefix="data/futures/")
        assert [p["prefixes"] for p in pages] == [["data/futures/cm/"], ["data/futures/um/"]]
        assert pages[0]["next_marker"] == ("data/futures/cm/" if emit else None)


def test_keys_and_prefixes_share_the_page_budget(root: Path, client: httpx.Client) -> None:
    """Keys and CommonPrefixes count together toward max-keys and interleave in key order."""
    publish(root, "data/spot/daily/klines/AAAUSDT-loose.zip", "1,2\n")
    with ArchiveServer(root) as srv:
        first = _list(
            client, srv, delimiter="/", prefix="data/spot/daily/klines/", **{"max-keys": "2"}
        )
        rest = _list(
            client,
            srv,
            delimiter="/",
            prefix="data/spot/daily/klines/",
            marker=first["next_marker"],
        )
    assert first["max_keys"] == "2"
    assert first["keys"] == [
        "data/spot/daily/klines/AAAUSDT-loose.zip",
        "data/spot/daily/klines/AAAUSDT-loose.zip.CHECKSUM",
    ]
    assert first["prefixes"] == []
    assert first["truncated"] == "true"
    assert rest["keys"] == []
    assert rest["prefixes"] == ["data/spot/daily/klines/BTCUSDT/"]
    assert rest["truncated"] == "false"


def test_listing_without_delimiter_is_recursive_and_has_no_next_marker(
    root: Path, client: httpx.Client
) -> None:
    """Without a delimiter all nested keys are listed and, like S3, NextMarker is never sent."""
    with ArchiveServer(root, page_size=4) as srv:
        pages = _walk(client, srv, prefix="data/")
    assert all(p["next_marker"] is None and p["delimiter"] is None for p in pages)
    assert all(p["prefixes"] == [] for p in pages)
    assert [k for p in pages for k in p["keys"]] == fixture_keys("data/")
    assert len(pages) == 3


def test_listing_prefix_may_end_mid_name(server: ArchiveServer, client: httpx.Client) -> None:
    """A prefix that is not a directory boundary filters by string prefix, as S3 does."""
    page = _list(client, server, delimiter="/", prefix=KLINES_1M + "BTCUSDT-1m-2020-01-02")
    assert page["keys"] == [
        KLINES_1M + "BTCUSDT-1m-2020-01-02.zip",
        KLINES_1M + "BTCUSDT-1m-2020-01-02.zip.CHECKSUM",
    ]
    assert _list(client, server, delimiter="/", prefix="data/sp")["prefixes"] == ["data/spot/"]


def test_unknown_prefix_returns_empty_listing(server: ArchiveServer, client: httpx.Client) -> None:
    """A prefix with no objects returns an empty, non-truncated 200 listing."""
    page = _list(client, server, delimiter="/", prefix="data/futures/um/daily/fundingRate/")
    assert page["keys"] == [] and page["prefixes"] == []
    assert page["truncated"] == "false"


def test_invalid_max_keys_is_rejected(server: ArchiveServer, client: httpx.Client) -> None:
    """A non-integer max-keys answers 400 InvalidArgument."""
    resp = client.get(server.listing_url, params={"max-keys": "lots"})
    assert resp.status_code == 400
    assert ET.fromstring(resp.content).findtext("Code") == "InvalidArgument"


def test_listing_hides_in_flight_publish_temp_files(
    server: ArchiveServer, client: httpx.Client, root: Path
) -> None:
    """Hidden temp files left by an atomic publish never show up as keys."""
    (root / KLINES_1M / ".BTCUSDT-1m-2020-01-04.zip.abc.tmp").write_bytes(b"partial")
    assert _list(client, server, prefix=KLINES_1M)["keys"] == fixture_keys(KLINES_1M)


# --- faults ----------------------------------------------------------------------------------


def test_listing_target_faults_apply_to_listing_requests(
    server: ArchiveServer, client: httpx.Client
) -> None:
    """Faults queued for "listing" hit listing requests, including a truncated XML body."""
    server.faults.add("listing", Fault.status(503))
    server.faults.add("listing", Fault.truncate(20))
    params = {"delimiter": "/", "prefix": "data/"}
    assert client.get(server.listing_url, params=params).status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.listing_url, params=params)
    assert _list(client, server, **params)["prefixes"] == ["data/futures/", "data/spot/"]
    assert client.get(server.archive_url + ZIP_PATH).status_code == 200
