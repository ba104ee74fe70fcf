"""Client for data.binance.vision: S3 listing, verified streaming downloads, change metadata.

Ingest makes hundreds of small GETs (CHECKSUM files, daily zips, listing pages), where the
client's CPU per request dominates. Whole small bodies go through libcurl
(`curl_transport`, the default `http_client="curl"`): its thread does the HTTP in C beside
the event loop. aiohttp streams the large files to disk, and takes the small GETs too with
`http_client="aiohttp"` (about 2.5× the CPU per GET; httpx was ~4× aiohttp's).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import tempfile
import urllib.request
import zipfile
from collections import deque
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
import structlog
from multidict import CIMultiDict
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from crypto_lakehouse.exceptions import (
    ChecksumMismatchError,
    IntegrityError,
    NotAZipError,
    NotFoundUpstreamError,
    RateLimitedError,
    TransientSourceError,
    TruncatedBodyError,
)
from crypto_lakehouse.sources.binance.archive.curl_transport import (
    BulkGets,
    CurlTransport,
    CurlTransportError,
    Outcome,
    WholeResponse,
)
from crypto_lakehouse.sources.binance.archive.listing import (
    ArchiveObject,
    ListingPage,
    listing_url,
    next_marker,
    parse_checksum,
    parse_listing,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from contextlib import AbstractAsyncContextManager

    from tenacity import RetryCallState

    from crypto_lakehouse.config import Settings

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
_ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 20
_TAIL_BYTES = (64 << 10) + 22 + 1024  # largest zip comment + end record, with margin


@dataclass(frozen=True, slots=True)
class Download:
    """A downloaded, verified archive file waiting in a local temp path."""

    key: str
    path: Path
    sha256: str
    size: int
    etag: str
    last_modified: str
    #: The body's first bytes and last `_TAIL_BYTES`, kept so the zip checks read no file.
    head: bytes = b""
    tail: bytes = b""


@dataclass(frozen=True, slots=True)
class FirstGets:
    """The first GETs of a small zip and of its CHECKSUM, made in a bulk (`BulkGets`).

    `ArchiveClient.fetch(..., first=...)` judges them as its own first tries: a good answer is
    used, a transient failure goes on under the retry policy as its attempt 1.
    """

    body: Outcome
    checksum: Outcome


def is_transient(outcome: Outcome) -> bool:
    """Tell whether a GET failed in a way the retry policy retries (5xx, 429, a reset)."""
    if isinstance(outcome, CurlTransportError):
        return True
    status = outcome.status
    return status == 429 or status >= 500 or status in (408, 425)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Return Retry-After in seconds (number or HTTP date), or None (case-insensitive headers)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - _now())
        except (TypeError, ValueError):
            return None


def _now() -> float:
    """Return the wall clock (a seam for tests)."""
    import time

    return time.time()


def _raise_for_status(status: int, headers: Mapping[str, str], url: str) -> None:
    """Map an HTTP status to the exception tree; 2xx and 304 pass."""
    if status < 300 or status == 304:
        return
    if status == 404:
        raise NotFoundUpstreamError(f"not published upstream: {url}", url=url, status=404)
    if status == 429:
        raise RateLimitedError(f"rate limited by {url}", url=url, retry_after=_retry_after(headers))
    if status >= 500 or status in (408, 425):
        raise TransientSourceError(f"HTTP {status} from {url}", url=url, status=status)
    raise NotFoundUpstreamError(f"HTTP {status} from {url}", url=url, status=status)


class ArchiveClient:
    """Lists and downloads archive files with bounded concurrency, retries and verification.

    HTTP goes through an aiohttp.ClientSession (cheaper per request than httpx, see the module
    docstring). The client owns its session unless one is passed in; an owned session is
    created on first use, inside the running loop, as aiohttp requires. Use the client as an
    async context manager so connections are closed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self._settings = settings
        self._owns_session = session is None
        self._session = session
        self._curl: CurlTransport | None = None
        self._semaphore = asyncio.Semaphore(settings.download_concurrency)
        self._made_dirs: set[Path] = set()
        self._proxies: dict[str, str | None] = {}
        self._sleep = sleep or asyncio.sleep

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

    def proxy_for(self, url: str) -> str | None:
        """Return the environment's proxy for the URL's host, looked up once per host.

        With `trust_env=True` aiohttp looked up the proxy and `~/.netrc` in a worker thread on
        every request, two thread hops per GET.
        """
        # "scheme://host/...": urlsplit on every GET cost more than the rest of this method.
        parts = url.split("/", 3)
        host = parts[2] if len(parts) > 2 and parts[0].endswith(":") else urlsplit(url).netloc
        if host not in self._proxies:
            self._proxies[host] = env_proxy(url)
        return self._proxies[host]

    def _get(self, url: str) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """Start an aiohttp GET through the environment's proxy for the URL's host, if any."""
        return self._http().get(url, proxy=self.proxy_for(url))

    def _transport(self) -> CurlTransport:
        """Return the libcurl transport, started on first use."""
        if self._curl is None:
            self._curl = CurlTransport(
                max_connections=self._settings.download_concurrency * 2,
                connect_timeout=self._settings.http_timeout_seconds,
                read_timeout=self._settings.http_timeout_seconds,
            )
        return self._curl

    def request_slots(self) -> asyncio.Semaphore:
        """Return the bound on this client's requests in flight (`download_concurrency`), which
        GETs made on its transport by others (`bulk_fetch`) take too."""
        return self._semaphore

    def bulk_gets(self) -> BulkGets | None:
        """Return a new bulk of GETs on the libcurl transport; None when `http_client` is not
        curl (aiohttp has no bulk: its GETs are made one by one)."""
        if self._settings.tuning.http_client != "curl":
            return None
        return self._transport().bulk()

    async def _get_whole(self, url: str) -> WholeResponse:
        """GET a whole small body, hashed, with the configured client (`http_client`).

        Raises:
            _ShortBodyError: the body ended before its Content-Length.
            TransientSourceError: the request failed below HTTP (connect, reset, timeout).
        """
        if self._settings.tuning.http_client == "curl":
            try:
                return await self._transport().get(url, self.proxy_for(url))
            except CurlTransportError as exc:
                raise _transport_failure(url, exc) from exc
        try:
            async with self._get(url) as response:
                try:
                    data = await response.read()
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                    raise _ShortBodyError(f"{url}: body cut short", url=url) from exc
                return WholeResponse(
                    response.status,
                    CIMultiDict(response.headers),
                    data,
                    hashlib.sha256(data).hexdigest(),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientSourceError(f"{type(exc).__name__} on {url}", url=url) from exc

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the libcurl thread, and close the aiohttp session if this object created it."""
        if self._curl is not None:
            self._curl.close()
        if self._owns_session and self._session is not None:
            await self._session.close()

    def _wait(self, state: RetryCallState) -> float:
        """Return the wait before the next try: Retry-After if given, else backoff with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return min(exc.retry_after, self._settings.tuning.retry_max_wait_seconds)
        base = self._settings.tuning.retry_backoff_seconds * (2 ** (state.attempt_number - 1))
        ceiling = self._settings.tuning.retry_max_wait_seconds
        return float(min(ceiling, random.uniform(0, base) + base / 2))

    def _retrying(self) -> AsyncRetrying:
        """Return the retry policy: transient errors only, never 404s or integrity failures."""
        return AsyncRetrying(
            retry=retry_if_exception_type(TransientSourceError),
            stop=stop_after_attempt(self._settings.http_retries + 1),
            wait=self._wait,
            sleep=self._sleep,  # type: ignore[arg-type]
            reraise=True,
        )

    async def _with_retries(
        self, attempt: Callable[[], Awaitable[_T]], first_try: Callable[[], _T] | None = None
    ) -> _T:
        """Run `attempt` under the retry policy (`_retrying`).

        The first try runs bare: building tenacity's controller for every one of hundreds of
        small requests cost ~10 % of the event loop's time, and nearly all succeed at once.
        A first failure is handed to tenacity as its attempt 1, so waits (Retry-After,
        backoff) and the number of attempts are the policy's, exactly. `first_try`, when
        given, is that first try: it judges an answer already received (a bulk's).
        """
        try:
            return first_try() if first_try is not None else await attempt()
        except TransientSourceError as exc:
            failed: TransientSourceError | None = exc
        async for retry in self._retrying():
            with retry:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                return await attempt()
        raise AssertionError("unreachable: tenacity reraises")

    async def _get_bytes(
        self, url: str, first: Outcome | None = None, gate: asyncio.Semaphore | None = None
    ) -> bytes:
        """GET a small body with retries (listings and CHECKSUM files); `first`: see `fetch`.

        With `gate`, each GET takes one of its slots (the caller holds none).
        """

        def judge(answer: Outcome) -> bytes:
            response = _received(url, answer)
            _raise_for_status(response.status, response.headers, url)
            return response.body

        async def get() -> bytes:
            if gate is None:
                return judge(await self._get_whole(url))
            async with gate:
                return judge(await self._get_whole(url))

        first_try = None if first is None else (lambda: judge(first))
        return await self._with_retries(get, first_try)

    async def list_page(self, prefix: str, marker: str | None = None) -> ListingPage:
        """Fetch and parse one listing page."""
        url = listing_url(self._settings.binance_listing_url, prefix, marker)
        async with self._semaphore:
            body = await self._get_bytes(url)
        return parse_listing(body)

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

    async def fetch_checksum(self, key: str, first: Outcome | None = None) -> str:
        """Download `{key}.CHECKSUM` and return its SHA-256 (`first`: see `fetch`)."""
        url = self.download_url(key + ".CHECKSUM")
        body = await self._get_bytes(url, first, gate=self._semaphore)
        try:
            return parse_checksum(body.decode("utf-8", "replace"))
        except ValueError as exc:
            raise NotAZipError(f"{key}.CHECKSUM: {exc}", key=key) from exc

    def download_url(self, key: str) -> str:
        """Build a download URL, e.g. `https://data.binance.vision/data/spot/...zip`."""
        return f"{self._settings.binance_archive_url.rstrip('/')}/{key}"

    async def fetch(self, key: str, spill_dir: Path, first: FirstGets | None = None) -> Body:
        """Fetch a small zip and its CHECKSUM at once, into memory, and verify it.

        Hundreds of daily files paid more for their temp files and for two round trips in a
        row than for their bytes: a body of a few hundred KB is held in memory (and written
        once, where it belongs), and its CHECKSUM is requested beside it. With `first`, the
        two GETs were already made (`bulk_fetch`): their answers are this call's first tries.

        Raises:
            ChecksumMismatchError, TruncatedBodyError, NotAZipError: the bad bytes are written
                to a file in `spill_dir`, named by `exc.path`, for quarantine.
            NotFoundUpstreamError: 404.
            TransientSourceError: 5xx or 429 still failing after every retry.
        """
        checksum = asyncio.ensure_future(
            self.fetch_checksum(key, first.checksum if first is not None else None)
        )
        try:
            body = await self._fetch_with_retries(
                key, spill_dir, first.body if first is not None else None
            )
            expected_sha256 = await checksum
        finally:
            if not checksum.done():  # the body failed first: its error is the one to report
                checksum.cancel()
            elif not checksum.cancelled():
                checksum.exception()  # retrieved, so a second failure is not logged as lost
        for try_number in (1, 2):
            if try_number == 2:
                body = await self._fetch_with_retries(key, spill_dir)
            try:
                _check_zip(key, body.data[:4], body.data)
            except IntegrityError as exc:
                exc.path = _spill(spill_dir, body.data)
                raise
            if body.sha256 == expected_sha256:
                return body
            if try_number == 2:
                raise ChecksumMismatchError(
                    f"sha256 {body.sha256} differs from CHECKSUM {expected_sha256} "
                    "(downloaded twice)",
                    key=key,
                    path=_spill(spill_dir, body.data),
                )
        raise AssertionError("unreachable")

    async def _fetch_with_retries(
        self, key: str, spill_dir: Path, first: Outcome | None = None
    ) -> Body:
        """GET a small zip under the retry policy; a body still short at the end is truncated.

        `first`: the answer of a first GET already made (see `fetch`).
        """
        url = self.download_url(key)

        async def fetch_once() -> Body:
            async with self._semaphore:
                return _small_body(key, url, await self._get_whole(url), spill_dir)

        first_try = None if first is None else (lambda: _small_body(key, url, first, spill_dir))
        try:
            return await self._with_retries(fetch_once, first_try)
        except _ShortBodyError as exc:
            raise TruncatedBodyError(f"truncated download: {exc}", key=key) from exc

    async def download(
        self,
        key: str,
        dest_dir: Path,
        expected_sha256: str,
        *,
        on_body: Callable[[Path], None] | None = None,
    ) -> Download:
        """Stream one zip to a temp file in `dest_dir`, verify it, and return it.

        The body is hashed while streaming. Short bodies and broken connections are retried;
        a checksum mismatch is downloaded once more (a CDN may serve a stale copy).
        `on_body(path)` is called when a body starts arriving at `path` (once per try), so a
        reader may follow the file as it grows; only the returned file is verified.

        Raises:
            ChecksumMismatchError, TruncatedBodyError, NotAZipError: `exc.path` holds the bad
                bytes for quarantine when there are any.
            NotFoundUpstreamError: 404.
            TransientSourceError: 5xx or 429 still failing after every retry.
        """
        for try_number in (1, 2):
            result = await self._download_with_retries(key, dest_dir, on_body)
            _check_zip(key, result.head, result.tail, result.path)
            if result.sha256 == expected_sha256:
                return result
            if try_number == 1:
                result.path.unlink(missing_ok=True)
                continue
            raise ChecksumMismatchError(
                f"sha256 {result.sha256} differs from CHECKSUM {expected_sha256} "
                "(downloaded twice)",
                key=key,
                path=result.path,
            )
        raise AssertionError("unreachable")

    async def _download_with_retries(
        self, key: str, dest_dir: Path, on_body: Callable[[Path], None] | None
    ) -> Download:
        """Run `_stream_once` under the retry policy; a body still short at the end is truncated."""

        async def stream_once() -> Download:
            async with self._semaphore:
                return await self._stream_once(key, dest_dir, on_body)

        try:
            return await self._with_retries(stream_once)
        except _ShortBodyError as exc:
            raise TruncatedBodyError(f"truncated download: {exc}", key=key) from exc

    async def _stream_once(
        self, key: str, dest_dir: Path, on_body: Callable[[Path], None] | None = None
    ) -> Download:
        """Perform one streaming GET into a temp file, hashing as bytes arrive."""
        url = self.download_url(key)
        if dest_dir not in self._made_dirs:
            dest_dir.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(dest_dir)
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".part-", suffix=".zip")
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        received = 0
        last: deque[bytes] = deque()
        kept = 0
        head = b""
        try:
            with os.fdopen(fd, "wb") as out:
                async with self._get(url) as response:
                    _raise_for_status(response.status, response.headers, url)
                    expected = int(response.headers.get("Content-Length", "-1"))
                    content_type = response.headers.get("Content-Type", "")
                    if on_body is not None and "html" not in content_type.lower():
                        on_body(tmp)
                    try:
                        async for block in response.content.iter_chunked(_CHUNK):
                            digest.update(block)
                            out.write(block)
                            if not received:
                                head = block[:4]
                            received += len(block)
                            last.append(block)
                            kept += len(block)
                            while kept - len(last[0]) >= _TAIL_BYTES:
                                kept -= len(last.popleft())
                    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                        raise _ShortBodyError(
                            f"body of {key} cut after {received} of {expected} bytes", url=url
                        ) from exc
                    etag = response.headers.get("ETag", "").strip('"')
                    modified = response.headers.get("Last-Modified", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            raise TransientSourceError(f"{type(exc).__name__} downloading {url}", url=url) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if 0 <= expected != received:
            tmp.unlink(missing_ok=True)
            raise _ShortBodyError(f"{key}: got {received} of {expected} bytes", url=url)
        if "html" in content_type.lower():
            raise NotAZipError(f"{key}: server sent {content_type}, not a zip", key=key, path=tmp)
        tail = b"".join(last)[-_TAIL_BYTES:]
        return Download(key, tmp, digest.hexdigest(), received, etag, modified, head, tail)


@dataclass(frozen=True, slots=True)
class Body:
    """A small archive file fetched into memory and verified (no temp file on the way)."""

    key: str
    #: Left out of the repr: a log line or a traceback must not print the whole zip.
    data: bytes = field(repr=False)
    sha256: str
    etag: str
    last_modified: str

    @property
    def size(self) -> int:
        """Return the body's length in bytes."""
        return len(self.data)


class _ShortBodyError(TransientSourceError):
    """The body ended before Content-Length: retried, then reported as truncated."""


def _transport_failure(url: str, exc: CurlTransportError) -> TransientSourceError:
    """Return the retryable error of a GET that failed below HTTP (cut short, or no answer)."""
    if exc.short:
        return _ShortBodyError(f"{url}: body cut short ({exc})", url=url)
    return TransientSourceError(f"{exc} on {url}", url=url)


def _received(url: str, answer: Outcome) -> WholeResponse:
    """Return a GET's response, or raise its failure as `_get_whole` does."""
    if isinstance(answer, CurlTransportError):
        raise _transport_failure(url, answer) from answer
    return answer


def _small_body(key: str, url: str, answer: Outcome, spill_dir: Path) -> Body:
    """Judge one GET of a small zip: its status, length and type; a bad body is spilled."""
    response = _received(url, answer)
    headers = response.headers
    _raise_for_status(response.status, headers, url)
    data = response.body
    expected = int(headers.get("Content-Length", "-1"))
    content_type = headers.get("Content-Type", "")
    if 0 <= expected != len(data):
        raise _ShortBodyError(f"{key}: got {len(data)} of {expected} bytes", url=url)
    if "html" in content_type.lower():
        raise NotAZipError(
            f"{key}: server sent {content_type}, not a zip", key=key, path=_spill(spill_dir, data)
        )
    etag = headers.get("ETag", "").strip('"')
    return Body(key, data, response.sha256, etag, headers.get("Last-Modified", ""))


def clean_body(key: str, first: FirstGets) -> Body | None:
    """Return the verified body when both first GETs answered well and agree, else None.

    None sends the file to `ArchiveClient.fetch(..., first=...)`, which gives it exactly the
    outcome (retries, errors, quarantine) a fetch of its own would have.
    """
    body, checksum = first.body, first.checksum
    if isinstance(body, CurlTransportError) or isinstance(checksum, CurlTransportError):
        return None
    if body.status != 200 or checksum.status != 200:
        return None
    headers, data = body.headers, body.body
    try:
        if int(headers.get("Content-Length", "-1")) not in (-1, len(data)):
            return None
        if "html" in headers.get("Content-Type", "").lower():
            return None
        if parse_checksum(checksum.body.decode("utf-8", "replace")) != body.sha256:
            return None
        _check_zip(key, data[:4], data)
    except (IntegrityError, ValueError):
        return None
    etag = headers.get("ETag", "").strip('"')
    return Body(key, data, body.sha256, etag, headers.get("Last-Modified", ""))


def env_proxy(url: str) -> str | None:
    """Return the proxy URL the environment sets for a URL (credentials inside), or None.

    `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` in any case, read as urllib (and aiohttp) read them.
    """
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _check_zip(key: str, head: bytes, tail: bytes, path: Path | None = None) -> None:
    """Raise NotAZipError or TruncatedBodyError when a body is not a complete zip.

    Looks only at the body's first bytes and its last `_TAIL_BYTES` (kept while streaming):
    the end-of-central-directory record sits in the last 64 KiB + 22 bytes of any zip,
    which is all `zipfile.is_zipfile` reads. A body held in memory is passed whole as `tail`:
    `BytesIO` shares a `bytes` object, where slicing its tail copied ~66 KB of every file.
    """
    if head != _ZIP_MAGIC:
        raise NotAZipError(f"{key}: body starts with {head!r}, not a zip", key=key, path=path)
    if not zipfile.is_zipfile(io.BytesIO(tail)):
        raise TruncatedBodyError(
            f"{key}: zip has no central directory (truncated)", key=key, path=path
        )


def _spill(folder: Path, data: bytes) -> Path:
    """Write a bad in-memory body to a file so it can be quarantined like a download."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".bad-", suffix=".zip")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Path(name)
