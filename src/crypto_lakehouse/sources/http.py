"""The HTTP boundary shared by every source: status mapping, error translation, proxies.

Every source speaks HTTP through aiohttp (one client library for archive and REST). The
statuses that mean the same thing at every HTTP source are mapped here, once:

| status | exception | retried |
| --- | --- | --- |
| 2xx, 304 | none | |
| 404 | `NotFoundUpstreamError` (manifest: missing_upstream) | no |
| 408, 425, 5xx | `TransientSourceError` | yes |
| 429 | `RateLimitedError` with Retry-After | yes, after Retry-After |
| any other 3xx/4xx | `RequestRejectedError` (manifest: failed) | no |

A source that knows more statuses (REST: 418 ban, 451 region) maps them first and hands the
rest to `error_for_status`. aiohttp's and the OS's errors become `TransientSourceError`
where the request is made (`transport_error`), so no caller catches a library's exceptions.

aiohttp is the only HTTP client: libcurl (pycurl) for small archive GETs was measured,
paired end to end (`bench/paired.py`, 2026-12-08; figures in `bench/http_clients.py`), at
6 % less time than aiohttp with no latency and 2 % more at 10 ms (pooled medians), short of
the 15 % a second stack must earn, and removed.
"""

from __future__ import annotations

import time
import urllib.request
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from crypto_lakehouse.exceptions import (
    NotFoundUpstreamError,
    RateLimitedError,
    RequestRejectedError,
    SourceError,
    TransientSourceError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "TRANSPORT_ERRORS",
    "ProxyCache",
    "env_proxy",
    "error_for_status",
    "raise_for_status",
    "retry_after_seconds",
    "transport_error",
]

#: What aiohttp and the OS raise for a request that got no (complete) answer.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
_TRANSIENT_STATUSES = frozenset({408, 425})


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Return Retry-After in seconds (a number or an HTTP date), or None when absent or bad.

    Example: `Retry-After: 1` -> 1.0; `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT` -> the
    seconds until then (0 when past). `headers` must match names case-insensitively.
    """
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def error_for_status(
    status: int, url: str, headers: Mapping[str, str], detail: str = ""
) -> SourceError | None:
    """Return the exception an HTTP status means at any source (table above), or None for 2xx.

    Args:
        status: The response status.
        url: The request URL, kept on the exception.
        headers: Response headers (case-insensitive), read for Retry-After.
        detail: Extra words for the message, e.g. the server's error code.
    """
    if 200 <= status < 300 or status == 304:
        return None
    said = f" ({detail})" if detail else ""
    if status == 404:
        return NotFoundUpstreamError(f"not published upstream{said}: {url}", url=url, status=404)
    if status == 429:
        return RateLimitedError(
            f"rate limited (HTTP 429{said}) by {url}; waiting as Retry-After asks",
            url=url,
            retry_after=retry_after_seconds(headers),
        )
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return TransientSourceError(f"HTTP {status}{said} from {url}", url=url, status=status)
    return RequestRejectedError(
        f"HTTP {status}{said} from {url}: the server refuses this request as sent; "
        "check the endpoint URL setting and the symbol",
        url=url,
        status=status,
    )


def raise_for_status(status: int, url: str, headers: Mapping[str, str]) -> None:
    """Raise `error_for_status`'s exception when the status is not a success."""
    error = error_for_status(status, url, headers)
    if error is not None:
        raise error


def transport_error(url: str, exc: BaseException) -> TransientSourceError:
    """Return the retryable error for a request that failed below HTTP (connect, reset, timeout)."""
    return TransientSourceError(f"{type(exc).__name__} on {url}: {exc}", url=url)


def env_proxy(url: str) -> str | None:
    """Return the proxy URL the environment sets for a URL (credentials inside), or None.

    `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` in any case, read as urllib (and aiohttp) read them.
    """
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class ProxyCache:
    """The environment's proxy per host, looked up once per host.

    With `trust_env=True` aiohttp looked up the proxy and `~/.netrc` in a worker thread on
    every request, two thread hops per GET.
    """

    def __init__(self) -> None:
        """Start with no host looked up."""
        self._proxies: dict[str, str | None] = {}

    def __call__(self, url: str) -> str | None:
        """Return the proxy for the URL's host, or None."""
        # "scheme://host/...": urlsplit on every GET cost more than the rest of this method.
        parts = url.split("/", 3)
        host = parts[2] if len(parts) > 2 and parts[0].endswith(":") else urlsplit(url).netloc
        if host not in self._proxies:
            self._proxies[host] = env_proxy(url)
        return self._proxies[host]
