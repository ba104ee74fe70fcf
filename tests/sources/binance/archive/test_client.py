"""ArchiveClient over real HTTP against the data.binance.vision stand-in, faults included."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from crypto_lakehouse.exceptions import (
    ChecksumMismatchError,
    NotAZipError,
    NotFoundUpstreamError,
    RateLimitedError,
    RequestRejectedError,
    TransientSourceError,
    TruncatedBodyError,
)
from crypto_lakehouse.sources.binance.archive.client import ArchiveClient, Download, env_proxy
from tests.servers.archive_files import FIXTURE_TREE, publish
from tests.servers.archive_server import Fault
from tests.servers.synthetic import kline_csv
from tests.sources.binance._support import SleepRecorder, gets

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from tests.servers.archive_server import ArchiveServer

SPOT_1M = "data/spot/daily/klines/BTCUSDT/1m/"
KEY = SPOT_1M + "BTCUSDT-1m-2020-01-01.zip"


def with_client(
    settings: Settings,
    body: Callable[[ArchiveClient], Awaitable[Any]],
    sleep: SleepRecorder | None = None,
) -> Any:
    """Run body with a fresh ArchiveClient, built and closed inside one event loop."""

    async def main() -> Any:
        async with ArchiveClient(settings, sleep=sleep) as client:
            return await body(client)

    return asyncio.run(main())


@pytest.fixture
def settings(settings_for: Callable[..., Settings], tmp_path: Path) -> Settings:
    """Settings aimed at the stand-in, with three retries and short backoff."""
    return settings_for(str(tmp_path / "lake"))


def test_list_all_follows_pagination_across_pages(
    settings: Settings, archive: ArchiveServer
) -> None:
    """With 2-entry pages and no NextMarker, list_all walks three pages and misses nothing."""
    archive.page_size = 2
    archive.emit_next_marker = False
    objects, prefixes = with_client(settings, lambda c: c.list_all(SPOT_1M))
    expected = sorted(p.name for p in (FIXTURE_TREE / SPOT_1M).iterdir())
    assert [o.name for o in objects] == expected
    assert len(expected) == 6
    assert prefixes == []
    listings = [r for r in archive.requests if "prefix=" in r.path]
    assert len(listings) == 3
    zip_obj = next(o for o in objects if o.key == KEY)
    assert zip_obj.size == (FIXTURE_TREE / KEY).stat().st_size
    assert zip_obj.etag == hashlib.md5((FIXTURE_TREE / KEY).read_bytes()).hexdigest()


def test_list_symbols_returns_directory_names(settings: Settings, archive: ArchiveServer) -> None:
    """Common prefixes become symbol names, across pages."""
    archive.page_size = 1
    symbols = with_client(
        settings, lambda c: c.list_symbols("data/futures/um/monthly/fundingRate/")
    )
    assert symbols == ["BTCUSDT"]


@pytest.mark.req("R5.1")
def test_verified_download_matches_checksum(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """The CHECKSUM is parsed, the zip streams to a temp file, and its sha256 matches."""
    source = (FIXTURE_TREE / KEY).read_bytes()

    async def body(client: ArchiveClient) -> tuple[str, Download]:
        sha = await client.fetch_checksum(KEY)
        return sha, await client.download(KEY, tmp_path / "dl", sha)

    sha, got = with_client(settings, body)
    assert sha == hashlib.sha256(source).hexdigest()
    assert got.sha256 == sha
    assert got.key == KEY
    assert got.size == len(source)
    assert got.path.parent == tmp_path / "dl"
    assert got.path.read_bytes() == source
    assert got.etag == hashlib.md5(source).hexdigest()
    assert email.utils.parsedate_to_datetime(got.last_modified).year >= 2020


def test_missing_key_is_not_found_and_not_retried(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """A 404 raises NotFoundUpstreamError after one request, for CHECKSUM and zip alike."""
    key = SPOT_1M + "BTCUSDT-1m-1999-01-01.zip"
    with pytest.raises(NotFoundUpstreamError) as checksum_err:
        with_client(settings, lambda c: c.fetch_checksum(key))
    with pytest.raises(NotFoundUpstreamError) as zip_err:
        with_client(settings, lambda c: c.download(key, tmp_path, "0" * 64))
    assert checksum_err.value.status == zip_err.value.status == 404
    assert gets(archive, key + ".CHECKSUM") == [404]
    assert gets(archive, key) == [404]
    assert list(tmp_path.glob(".part-*")) == []


@pytest.mark.req("R3.2")
def test_503_then_success_is_retried(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """Two 503s on the zip and one on the listing are retried with backoff, then succeed."""
    archive.faults.add("/" + KEY, Fault.status(503), times=2)
    archive.faults.add("listing", Fault.status(503))
    sleep = SleepRecorder()
    sha = hashlib.sha256((FIXTURE_TREE / KEY).read_bytes()).hexdigest()

    async def body(client: ArchiveClient) -> tuple[list[str], Download]:
        objects, _ = await client.list_all(SPOT_1M)
        return [o.key for o in objects], await client.download(KEY, tmp_path, sha)

    keys, got = with_client(settings, body, sleep)
    assert KEY in keys
    assert got.sha256 == sha
    assert gets(archive, KEY) == [503, 503, 200]
    assert len(sleep.waits) == 3
    assert all(0 < w <= settings.tuning.retry_max_wait_seconds for w in sleep.waits)


def test_persistent_5xx_gives_up_as_transient(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """A 500 on every try raises TransientSourceError after http_retries + 1 requests."""
    archive.faults.add("/" + KEY, Fault.status(500), times=10)
    with pytest.raises(TransientSourceError) as err:
        with_client(settings, lambda c: c.download(KEY, tmp_path, "0" * 64), SleepRecorder())
    assert err.value.status == 500
    assert gets(archive, KEY) == [500] * (settings.http_retries + 1)


@pytest.mark.req("R3.2")
def test_429_retry_after_is_waited_for(
    settings_for: Callable[..., Settings], archive: ArchiveServer, tmp_path: Path
) -> None:
    """A 429 with Retry-After: 7 makes the client wait exactly 7 s before the next try."""
    settings = settings_for(str(tmp_path / "lake"), retry_max_wait_seconds=60.0)
    archive.faults.add("/" + KEY + ".CHECKSUM", Fault.status(429, retry_after=7))
    sleep = SleepRecorder()
    sha = with_client(settings, lambda c: c.fetch_checksum(KEY), sleep)
    assert sha == hashlib.sha256((FIXTURE_TREE / KEY).read_bytes()).hexdigest()
    assert sleep.waits == [7.0]
    assert gets(archive, KEY + ".CHECKSUM") == [429, 200]


def test_429_that_persists_raises_rate_limited_with_retry_after(
    settings: Settings, archive: ArchiveServer
) -> None:
    """When every try is a 429, RateLimitedError surfaces carrying the parsed Retry-After."""
    archive.faults.add("/" + KEY + ".CHECKSUM", Fault.status(429, retry_after=1), times=10)
    sleep = SleepRecorder()
    with pytest.raises(RateLimitedError) as err:
        with_client(settings, lambda c: c.fetch_checksum(KEY), sleep)
    assert err.value.retry_after == 1.0
    assert sleep.waits == [1.0] * settings.http_retries


@pytest.mark.parametrize("status", [400, 403])
def test_other_4xx_is_rejected_not_missing_and_not_retried(
    settings: Settings, archive: ArchiveServer, tmp_path: Path, status: int
) -> None:
    """A 400 or 403 is a RequestRejectedError (a failed file, not missing_upstream), asked once."""
    archive.faults.add("/" + KEY, Fault.status(status), times=10)
    with pytest.raises(RequestRejectedError) as err:
        with_client(settings, lambda c: c.download(KEY, tmp_path, "0" * 64), SleepRecorder())
    assert not isinstance(err.value, NotFoundUpstreamError)
    assert err.value.status == status
    assert gets(archive, KEY) == [status]


@pytest.mark.req("R3.2")
def test_truncated_body_is_retried_then_reported(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """A body cut short on every try ends as TruncatedBodyError; only the last cut is kept."""
    archive.faults.add("/" + KEY, Fault.truncate(500), times=10)
    sleep = SleepRecorder()
    with pytest.raises(TruncatedBodyError, match="cut after 500 of") as err:
        with_client(settings, lambda c: c.download(KEY, tmp_path, "0" * 64), sleep)
    assert err.value.key == KEY
    assert gets(archive, KEY) == [200] * (settings.http_retries + 1)
    assert len(sleep.waits) == settings.http_retries
    assert err.value.path is not None and err.value.path.stat().st_size == 500
    assert list(tmp_path.glob(".part-*")) == [err.value.path]


def test_truncated_body_once_then_full_succeeds(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """One cut body is retried and the second, complete body verifies."""
    archive.faults.add("/" + KEY, Fault.truncate(1000))
    sha = hashlib.sha256((FIXTURE_TREE / KEY).read_bytes()).hexdigest()
    got = with_client(settings, lambda c: c.download(KEY, tmp_path, sha), SleepRecorder())
    assert got.sha256 == sha
    sent = [r.bytes_sent for r in archive.requests if r.path == "/" + KEY]
    assert sent == [1000, (FIXTURE_TREE / KEY).stat().st_size]
    assert list(tmp_path.glob(".part-*")) == [got.path]


@pytest.mark.req("R3.2")
def test_html_body_once_is_fetched_again(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """A 200 text/html page is a passing fault: the next try's zip verifies, no file is left."""
    archive.faults.add("/" + KEY, Fault.html())
    sha = hashlib.sha256((FIXTURE_TREE / KEY).read_bytes()).hexdigest()
    got = with_client(settings, lambda c: c.download(KEY, tmp_path, sha), SleepRecorder())
    assert got.sha256 == sha
    assert gets(archive, KEY) == [200, 200]
    assert list(tmp_path.glob(".part-*")) == [got.path]


@pytest.mark.req("R3.2")
def test_html_body_every_time_is_not_a_zip_and_kept_for_quarantine(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """HTML on every try raises NotAZipError after the retries, the last page at exc.path."""
    archive.faults.add("/" + KEY, Fault.html(), times=10)
    with pytest.raises(NotAZipError) as err:
        with_client(settings, lambda c: c.download(KEY, tmp_path, "0" * 64), SleepRecorder())
    assert err.value.path is not None
    assert err.value.path.read_bytes().startswith(b"<!DOCTYPE html>")
    assert "text/html" in str(err.value)
    assert gets(archive, KEY) == [200] * (settings.http_retries + 1)
    assert list(tmp_path.glob(".part-*")) == [err.value.path]


def test_zip_without_its_end_record_is_retried_then_truncated(
    settings: Settings, archive: ArchiveServer, archive_root: Path, tmp_path: Path
) -> None:
    """A complete answer holding a zip cut before its central directory: retried, then truncated."""
    source = (archive_root / KEY).read_bytes()
    (archive_root / KEY).write_bytes(source[: len(source) // 2])
    with pytest.raises(TruncatedBodyError, match="end of central directory") as err:
        with_client(settings, lambda c: c.fetch(KEY, tmp_path / "spill"), SleepRecorder())
    assert gets(archive, KEY) == [200] * (settings.http_retries + 1)
    assert err.value.path is not None
    assert err.value.path.read_bytes() == source[: len(source) // 2]


def test_html_checksum_once_is_fetched_again(settings: Settings, archive: ArchiveServer) -> None:
    """A CHECKSUM answered once with an HTML page is asked again, and the next one is read."""
    archive.faults.add("/" + KEY + ".CHECKSUM", Fault.html())
    sha = with_client(settings, lambda c: c.fetch_checksum(KEY), SleepRecorder())
    assert sha == hashlib.sha256((FIXTURE_TREE / KEY).read_bytes()).hexdigest()
    assert gets(archive, KEY + ".CHECKSUM") == [200, 200]


def test_checksum_mismatch_is_downloaded_twice_then_raised(
    settings: Settings, archive: ArchiveServer, archive_root: Path, tmp_path: Path
) -> None:
    """A CHECKSUM that disagrees with the zip: two downloads, then ChecksumMismatchError."""
    key = SPOT_1M + "BTCUSDT-1m-2020-01-04.zip"
    zip_path = publish(archive_root, key, kline_csv("2020-01-04"), checksum="0" * 64)

    async def body(client: ArchiveClient) -> Download:
        return await client.download(key, tmp_path, await client.fetch_checksum(key))

    with pytest.raises(ChecksumMismatchError, match="downloaded twice") as err:
        with_client(settings, body)
    assert gets(archive, key) == [200, 200]
    assert err.value.path is not None
    assert err.value.path.read_bytes() == zip_path.read_bytes()
    assert list(tmp_path.glob(".part-*")) == [err.value.path]


def test_unreachable_host_is_transient(
    settings_for: Callable[..., Settings], archive: ArchiveServer, tmp_path: Path
) -> None:
    """A refused connection maps to TransientSourceError after the retries."""
    url = archive.archive_url
    archive.stop()
    settings = settings_for(str(tmp_path / "lake"), binance_archive_url=url, http_retries=1)
    with pytest.raises(TransientSourceError, match="ClientConnectorError"):
        with_client(settings, lambda c: c.fetch_checksum(KEY), SleepRecorder())


def test_client_is_built_outside_a_loop_and_closes_its_session(settings: Settings) -> None:
    """Construction needs no loop; the lazy session keeps raw bytes, trusts proxy env, closes."""
    client = ArchiveClient(settings)

    async def main() -> aiohttp.ClientSession:
        async with client:
            await client.fetch_checksum(KEY)
            session = client._http()
            assert not session.closed
        return session

    session = asyncio.run(main())
    assert session.closed
    assert session.auto_decompress is False
    assert session.trust_env is False  # proxies are looked up once per host instead
    assert session.timeout.total is None
    assert session.timeout.sock_read == settings.http_timeout_seconds


def test_env_proxy_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY applies to the archive's host; NO_PROXY excludes a host; none → None."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = "https://data.binance.vision/data/spot/daily/klines/BTCUSDT/1m/x.zip"
    assert env_proxy(url) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    assert env_proxy(url) == "http://user:pw@proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "data.binance.vision")
    assert env_proxy(url) is None


def test_requests_go_through_the_environment_proxy(
    settings_for: Callable[..., Settings], archive: ArchiveServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """With HTTP_PROXY set, an unreachable archive host is reached through the proxy.

    The stand-in answers absolute-form request lines, so it serves as the proxy here; the
    request log shows the absolute URLs a client sends only to a proxy.
    """
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", archive.archive_url)
    settings = settings_for(str(tmp_path / "lake"), binance_archive_url="http://archive.invalid")
    body = with_client(settings, lambda c: c.fetch(KEY, tmp_path / "spill"))
    assert body.sha256 == hashlib.sha256((FIXTURE_TREE / KEY).read_bytes()).hexdigest()
    proxied = [r.path for r in archive.requests if r.method == "GET"]
    assert proxied and all(p.startswith("http://archive.invalid/data/") for p in proxied)


def test_fetch_holds_the_verified_body_with_its_metadata(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """fetch() returns the zip's bytes with their SHA-256, ETag and Last-Modified."""
    source = (FIXTURE_TREE / KEY).read_bytes()
    got = with_client(settings, lambda c: c.fetch(KEY, tmp_path / "spill"))
    assert got.data == source
    assert got.sha256 == hashlib.sha256(source).hexdigest()
    assert got.etag == hashlib.md5(source).hexdigest()
    assert email.utils.parsedate_to_datetime(got.last_modified).year >= 2020
    assert sorted(gets(archive, KEY) + gets(archive, KEY + ".CHECKSUM")) == [200, 200]


def test_fetch_retries_a_503_and_a_cut_body(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """A 503 and then a body cut short of Content-Length are retried; the third try verifies."""
    archive.faults.add("/" + KEY, Fault.status(503))
    archive.faults.add("/" + KEY, Fault.truncate(1000))
    sleep = SleepRecorder()
    got = with_client(settings, lambda c: c.fetch(KEY, tmp_path / "spill"), sleep)
    source = (FIXTURE_TREE / KEY).read_bytes()
    assert got.data == source
    assert gets(archive, KEY) == [503, 200, 200]
    sent = [r.bytes_sent for r in archive.requests if r.path == "/" + KEY]
    assert sent[1:] == [1000, len(source)]
    assert len(sleep.waits) == 2


def test_fetch_of_a_body_cut_every_time_is_truncated(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """A body cut on every try ends as TruncatedBodyError after the retries, with its reason."""
    archive.faults.add("/" + KEY, Fault.truncate(700), times=10)
    with pytest.raises(TruncatedBodyError, match="cut short") as err:
        with_client(settings, lambda c: c.fetch(KEY, tmp_path / "spill"), SleepRecorder())
    assert err.value.key == KEY
    assert gets(archive, KEY) == [200] * (settings.http_retries + 1)
    assert "received 700 of" in str(err.value) and "the last of 4 attempts" in str(err.value)


def test_fetch_of_an_html_page_every_time_spills_it_for_quarantine(
    settings: Settings, archive: ArchiveServer, tmp_path: Path
) -> None:
    """HTML on every try of fetch() is NotAZipError, the last page written to the spill folder."""
    archive.faults.add("/" + KEY, Fault.html(), times=10)
    with pytest.raises(NotAZipError, match="text/html") as err:
        with_client(settings, lambda c: c.fetch(KEY, tmp_path / "spill"), SleepRecorder())
    assert err.value.path is not None
    assert err.value.path.parent == tmp_path / "spill"
    assert err.value.path.read_bytes().startswith(b"<!DOCTYPE html>")
