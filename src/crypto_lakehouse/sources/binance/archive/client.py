"""Client for data.binance.vision: S3 listing, verified downloads, change metadata.

Every GET goes through one aiohttp session and one retry policy (`crypto_lakehouse.retry`);
statuses map to the exception tree in `sources.http` (404 is missing upstream; a 403 is a
refused request, not a missing file: the archive answers 404 for keys it does not publish).
Small files (daily zips, CHECKSUMs) are read into memory, large ones streamed to a temp file
(`download.stream_once`).

A body that is not the object (HTML with 200, cut short, no zip end record) is fetched again
within the retry budget, then quarantined (`bodies.BadBodyError`). A complete zip whose
SHA-256 differs from its CHECKSUM is fetched once more, not more: a CDN may serve a stale
copy once, but a second mismatch is what upstream publishes, and is quarantined as such.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Self, TypeVar

import aiohttp

from crypto_lakehouse.exceptions import (
    ChecksumMismatchError,
    IntegrityError,
    NotAZipError,
    TransientSourceError,
    TruncatedBodyError,
)
from crypto_lakehouse.retry import RetryPolicy
from crypto_lakehouse.sources.binance.archive.bodies import (
    BadBodyError,
    Body,
    Download,
    body_problem,
    check_zip,
    spill,
)
from crypto_lakehouse.sources.binance.archive.download import stream_once
from crypto_lakehouse.sources.binance.archive.listing import (
    ArchiveObject,
    ListingPage,
    listing_url,
    next_marker,
    parse_checksum,
    parse_listing,
)
from crypto_lakehouse.sources.http import (
    TRANSPORT_ERRORS,
    ProxyCache,
    env_proxy,
    raise_for_status,
    transport_error,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from crypto_lakehouse.config import Settings

__all__ = ["ArchiveClient", "Body", "Download", "env_proxy"]

_T = TypeVar("_T")
_Answer = tuple[int, "Mapping[str, str]", bytes]


class ArchiveClient:
    """Lists and downloads archive files with bounded concurrency, retries and verification.

    The client owns its aiohttp session unless one is passed in (the caller then closes
    it); an owned session is created on first use, inside the running loop, as aiohttp
    requires, and closed by `aclose` (or on leaving `async with`). At most
    `download_concurrency` requests are in flight; a retry's wait holds no slot.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """Create a client; `sleep` replaces `asyncio.sleep` between retries (tests)."""
        self._settings = settings
        self._owns_session = session is None
        self._session = session
        self._semaphore = asyncio.Semaphore(settings.download_concurrency)
        self._made_dirs: set[Path] = set()
        self.proxy_for = ProxyCache()
        self._policy = RetryPolicy.from_settings(settings, name="archive", sleep=sleep)

    def _http(self) -> aiohttp.ClientSession:
        """Return the session, creating the owned one on first use (needs a running loop).

        Raw bytes are kept (no decompression) so they hash as sent; there is no total timeout,
        so a large file is bounded only per connect and per read; proxies: see `_get`.
        """
        if self._session is None:
            timeout = self._settings.http_timeout_seconds
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.download_concurrency * 2),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
                auto_decompress=False,
            )
        return self._session

    def _get(self, url: str) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """Start a GET through the environment's proxy for the URL's host, if any."""
        return self._http().get(url, proxy=self.proxy_for(url))

    async def _get_whole(self, url: str, key: str) -> _Answer:
        """GET a whole small body: (status, headers, bytes); the one in-memory request.

        Raises:
            BadBodyError: the body ended before its Content-Length.
            TransientSourceError: the request failed below HTTP (connect, reset, timeout).
        """
        async with self._semaphore:
            try:
                async with self._get(url) as response:
                    try:
                        data = await response.read()
                    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                        reason = f"truncated download of {key}: body cut short ({exc})"
                        cut = TruncatedBodyError(reason, key=key)
                        raise BadBodyError(cut, url=url) from exc
                    return response.status, response.headers, data
            except TRANSPORT_ERRORS as exc:
                raise transport_error(url, exc) from exc

    async def __aenter__(self) -> Self:
        """Return self; the session is closed on exit."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the session if this client created it."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the aiohttp session if this object created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def _retried(self, attempt: Callable[[], Awaitable[_T]], spill_dir: Path | None) -> _T:
        """Run `attempt` under the retry policy; a body still bad at the end is terminal.

        Only the last bad body is kept (for quarantine, in `spill_dir` when it was in
        memory); earlier attempts' temp files are deleted.
        """
        bad: list[BadBodyError] = []

        async def tracked() -> _T:
            try:
                return await attempt()
            except BadBodyError as exc:
                for old in bad:
                    old.discard()
                bad[:] = [exc]
                raise

        try:
            return await self._policy.run(tracked)
        except BadBodyError as exc:
            bad.clear()
            raise exc.final(spill_dir, self._policy.attempts) from exc
        finally:
            for old in bad:
                old.discard()

    async def list_page(self, prefix: str, marker: str | None = None) -> ListingPage:
        """Fetch and parse one listing page (a body that is not a listing is retried).

        Raises:
            TransientSourceError: still no listing after every retry.
            SourceError: the status says the listing cannot be read (`sources.http`).
        """
        url = listing_url(self._settings.binance_listing_url, prefix, marker)

        async def once() -> ListingPage:
            try:
                status, headers, body = await self._get_whole(url, "listing")
            except BadBodyError as exc:
                raise TransientSourceError(f"listing {url}: {exc}", url=url) from exc
            raise_for_status(status, url, headers)
            return parse_listing(body)

        return await self._policy.run(once)

    async def list_all(self, prefix: str) -> tuple[list[ArchiveObject], list[str]]:
        """List every object and sub-directory under a prefix, following pagination.

        Returns:
            Objects and common prefixes, in listing order. An unknown prefix gives two empty
            lists: S3 answers it with an empty listing, not an error.
        """
        objects: list[ArchiveObject] = []
        prefixes: list[str] = []
        marker: str | None = None
        while True:
            page = await self.list_page(prefix, marker)
            objects.extend(page.objects)
            prefixes.extend(page.prefixes)
            following = next_marker(page)
            if following is None or following == marker:
                return objects, prefixes
            marker = following

    async def list_symbols(self, symbols_prefix: str) -> list[str]:
        """Return every symbol directory under a data type, delisted ones included."""
        _, prefixes = await self.list_all(symbols_prefix)
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes)

    def download_url(self, key: str) -> str:
        """Build a download URL, e.g. `https://data.binance.vision/data/spot/...zip`."""
        return f"{self._settings.binance_archive_url.rstrip('/')}/{key}"

    async def fetch_checksum(self, key: str, spill_dir: Path | None = None) -> str:
        """Download `{key}.CHECKSUM` and return its SHA-256.

        Raises:
            NotAZipError: every answer was a body that is not a CHECKSUM (e.g. HTML); the
                last one is spilled to `spill_dir` when given.
            TruncatedBodyError: every answer was cut short.
            NotFoundUpstreamError, RequestRejectedError, TransientSourceError: as `fetch`.
        """
        name = key + ".CHECKSUM"
        url = self.download_url(name)

        async def once() -> str:
            status, headers, body = await self._get_whole(url, name)
            raise_for_status(status, url, headers)
            problem = body_problem(name, headers, len(body))
            if problem is not None:
                raise BadBodyError(problem, url=url, data=body)
            try:
                return parse_checksum(body.decode("utf-8", "replace"))
            except ValueError as exc:
                wrong = NotAZipError(f"{name}: {exc}", key=key)
                raise BadBodyError(wrong, url=url, data=body) from exc

        return await self._retried(once, spill_dir)

    async def fetch(self, key: str, spill_dir: Path) -> Body:
        """Fetch a small zip and its CHECKSUM at once, into memory, and verify it.

        Hundreds of daily files paid more for their temp files and for two round trips in a
        row than for their bytes: a body of a few hundred KB is held in memory (and written
        once, where it belongs), and its CHECKSUM is requested beside it.

        Raises:
            ChecksumMismatchError, TruncatedBodyError, NotAZipError: the bad bytes are written
                to a file in `spill_dir`, named by `exc.path`, for quarantine.
            NotFoundUpstreamError: 404.
            RequestRejectedError: another 4xx.
            TransientSourceError: 5xx or 429 still failing after every retry.
        """
        checksum = asyncio.ensure_future(self.fetch_checksum(key, spill_dir))
        try:
            body = await self._fetch_small(key, spill_dir)
            expected = await checksum
        finally:
            if not checksum.done():  # the body failed first: its error is the one to report
                checksum.cancel()
            elif not checksum.cancelled():
                checksum.exception()  # retrieved, so a second failure is not logged as lost
        if body.sha256 != expected:  # once more: a CDN may serve a stale copy once
            body = await self._fetch_small(key, spill_dir)
        if body.sha256 != expected:
            raise ChecksumMismatchError(
                f"sha256 {body.sha256} differs from CHECKSUM {expected} (downloaded twice)",
                key=key,
                path=spill(spill_dir, body.data),
            )
        return body

    async def _fetch_small(self, key: str, spill_dir: Path) -> Body:
        """GET a small zip under the retry policy and check it is a whole zip."""
        url = self.download_url(key)

        async def once() -> Body:
            status, headers, data = await self._get_whole(url, key)
            raise_for_status(status, url, headers)
            problem = body_problem(key, headers, len(data))
            if problem is None:
                try:
                    check_zip(key, data[:4], data)
                except IntegrityError as exc:
                    problem = exc
            if problem is not None:
                raise BadBodyError(problem, url=url, data=data)
            etag = headers.get("ETag", "").strip('"')
            sha256 = hashlib.sha256(data).hexdigest()
            return Body(key, data, sha256, etag, headers.get("Last-Modified", ""))

        return await self._retried(once, spill_dir)

    async def download(
        self,
        key: str,
        dest_dir: Path,
        expected_sha256: str,
        *,
        on_body: Callable[[Path], None] | None = None,
    ) -> Download:
        """Stream one zip to a temp file in `dest_dir`, verify it, and return it.

        The body is hashed while streaming. Bad bodies and broken connections are retried;
        a checksum mismatch is downloaded once more (see the module docstring).
        `on_body(path)` is called when a body starts arriving at `path` (once per try), so a
        reader may follow the file as it grows; only the returned file is verified.

        Raises:
            ChecksumMismatchError, TruncatedBodyError, NotAZipError: `exc.path` holds the bad
                bytes for quarantine.
            NotFoundUpstreamError: 404.
            RequestRejectedError: another 4xx.
            TransientSourceError: 5xx or 429 still failing after every retry.
        """
        url = self.download_url(key)
        if dest_dir not in self._made_dirs:
            dest_dir.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(dest_dir)

        async def once() -> Download:
            async with self._semaphore:
                return await stream_once(self._get, url, key, dest_dir, on_body)

        result = await self._retried(once, dest_dir)
        if result.sha256 != expected_sha256:  # once more: a CDN may serve a stale copy once
            result.path.unlink(missing_ok=True)
            result = await self._retried(once, dest_dir)
        if result.sha256 != expected_sha256:
            raise ChecksumMismatchError(
                f"sha256 {result.sha256} differs from CHECKSUM {expected_sha256} "
                "(downloaded twice)",
                key=key,
                path=result.path,
            )
        return result
