"""Send one Binance REST request through the weight limiter, the breaker and the retry policy.

`RestTransport.request` is the only place the REST source performs I/O, over an aiohttp
session (the one HTTP client library of the sources). Statuses map to the exception tree in
`_error_for` below, on top of the mapping every HTTP source shares (`sources.http`):
418 → BannedError (never retried; the market refuses requests until the ban ends), 451 →
RegionBlockedError, "invalid symbol" (-1121) → NotFoundUpstreamError; then as everywhere
429 → RateLimitedError (retried after Retry-After, and every request of the market pauses),
408/5xx and transport errors → TransientSourceError (retried; 5xx and transport errors count
as breaker failures), 404 → NotFoundUpstreamError, other 4xx → RequestRejectedError.
Retries follow `crypto_lakehouse.retry`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from crypto_lakehouse.exceptions import (
    BannedError,
    NotFoundUpstreamError,
    RegionBlockedError,
    SourceError,
)
from crypto_lakehouse.retry import RetryPolicy
from crypto_lakehouse.sources.binance.rest.breaker import CircuitBreaker
from crypto_lakehouse.sources.binance.rest.ratelimit import (
    DEFAULT_WEIGHT_LIMITS,
    WeightLimiter,
    request_weight,
    weight_limit_from_exchange_info,
)
from crypto_lakehouse.sources.http import (
    TRANSPORT_ERRORS,
    ProxyCache,
    error_for_status,
    retry_after_seconds,
    transport_error,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.sources.binance._silver import Market

log = structlog.get_logger(__name__)

PREFIX: dict[Market, str] = {"spot": "/api/v3", "um": "/fapi/v1", "cm": "/dapi/v1"}
_DEFAULT_BAN_SECONDS = 120.0
_INVALID_SYMBOL = -1121


@dataclass(frozen=True, slots=True)
class RawPage:
    """One REST response as fetched: the full URL with its query, and the JSON body bytes."""

    url: str
    body: bytes
    fetched_at: datetime


@dataclass(frozen=True, slots=True)
class _Answer:
    """One HTTP answer, read whole: status, headers, body and the final URL with its query."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


def _error_detail(body: bytes) -> tuple[int | None, str]:
    """Return (Binance error code, "code -1121: Invalid symbol.") from an error body."""
    try:
        payload = json.loads(body)
        code = int(payload["code"])
        return code, f"code {code}: {payload.get('msg', '')}"
    except (ValueError, KeyError, TypeError):
        return None, body[:200].decode("utf-8", "replace") or "empty body"


def _query(params: Mapping[str, Any]) -> dict[str, str]:
    """Return query parameters as text, as Binance reads them (booleans as true/false)."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}


class RestTransport:
    """Limits, breaker, retries and error mapping for the REST hosts of all three markets."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        limiters: Mapping[Market, WeightLimiter] | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Create a transport; see `BinanceRestClient` for the meaning of each argument."""
        self._settings = settings
        self._bases: dict[Market, str] = {
            "spot": settings.binance_spot_api_url.rstrip("/"),
            "um": settings.binance_um_api_url.rstrip("/"),
            "cm": settings.binance_cm_api_url.rstrip("/"),
        }
        self._owns_session = session is None
        self._session = session
        self._proxy_for = ProxyCache()
        override = settings.tuning.rest_weight_limit_per_minute
        self._auto_limits = limiters is None and override == 0
        self._limiters: dict[Market, WeightLimiter] = dict(
            limiters
            or {
                m: WeightLimiter(limit=override or DEFAULT_WEIGHT_LIMITS[m], name=m)
                for m in ("spot", "um", "cm")
            }
        )
        self._synced: set[Market] = set()
        self._sync_lock = asyncio.Lock()
        self.breaker = breaker or CircuitBreaker.from_settings(settings)
        self._policy = RetryPolicy.from_settings(settings, name="rest", sleep=sleep)
        self._now = now

    def _http(self) -> aiohttp.ClientSession:
        """Return the session, creating the owned one on first use (needs a running loop)."""
        if self._session is None:
            timeout = self._settings.http_timeout_seconds
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP session if this transport created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()

    def limiter(self, market: Market) -> WeightLimiter:
        """Return the weight limiter of a market."""
        return self._limiters[market]

    def host(self, market: Market) -> str:
        """Return "host:port" of a market's base URL, the breaker's key."""
        return urlsplit(self._bases[market]).netloc

    def adopt_limit(self, market: Market, exchange_info: Mapping[str, Any]) -> None:
        """Use exchangeInfo's REQUEST_WEIGHT limit unless a limit is configured."""
        limit = weight_limit_from_exchange_info(exchange_info)
        if limit and self._settings.tuning.rest_weight_limit_per_minute == 0:
            self._limiters[market].set_limit(limit)

    async def request(
        self, market: Market, path: str, params: Mapping[str, Any]
    ) -> tuple[Any, RawPage]:
        """Fetch one JSON document with limits, breaker and retries; the only I/O method.

        Args:
            market: Selects the base URL and the weight limiter.
            path: Path below the base URL, e.g. "/fapi/v1/klines".
            params: Query parameters.

        Returns:
            The decoded JSON and the raw page.

        Raises:
            SourceError: The subclass for the final outcome (see the module docstring).
            CircuitOpenError: While the host's breaker is open.
        """
        if self._auto_limits and market not in self._synced:
            await self._sync_limit(market)
        return await self._policy.run(lambda: self._attempt(market, path, params))

    async def _attempt(
        self, market: Market, path: str, params: Mapping[str, Any]
    ) -> tuple[Any, RawPage]:
        """Send one request and map its outcome to a payload or a specific SourceError."""
        host = self.host(market)
        url = self._bases[market] + path
        limiter = self._limiters[market]
        self.breaker.before_call(host)
        try:
            async with limiter.reserve(request_weight(market, path, params)):
                answer = await self._get(url, params)
                limiter.observe(answer.headers)
        except TRANSPORT_ERRORS as exc:
            self.breaker.record_failure(host)
            raise transport_error(url, exc) from exc
        except BaseException:
            self.breaker.release(host)
            raise
        if answer.status >= 500:
            self.breaker.record_failure(host)
        else:
            self.breaker.record_success(host)
        return self._decode(market, answer)

    async def _get(self, url: str, params: Mapping[str, Any]) -> _Answer:
        """Perform one GET and read its whole body."""
        session = self._http()
        async with session.get(url, params=_query(params), proxy=self._proxy_for(url)) as response:
            body = await response.read()
            return _Answer(response.status, response.headers, body, str(response.url))

    def _decode(self, market: Market, answer: _Answer) -> tuple[Any, RawPage]:
        """Return (JSON, RawPage) for a 200, else raise the exception for the status."""
        if answer.status == 200:
            try:
                payload = json.loads(answer.body)
            except ValueError as exc:
                raise SourceError(
                    f"{answer.url} answered 200 with a body that is not JSON",
                    url=answer.url,
                    status=200,
                ) from exc
            return payload, RawPage(url=answer.url, body=answer.body, fetched_at=self._now())
        raise self._error_for(market, answer)

    def _error_for(self, market: Market, answer: _Answer) -> SourceError:
        """Return the exception of a failed answer: Binance's own statuses, then the shared."""
        status, url = answer.status, answer.url
        retry_after = retry_after_seconds(answer.headers)
        code, detail = _error_detail(answer.body)
        if status == 418:
            seconds = retry_after if retry_after is not None else _DEFAULT_BAN_SECONDS
            until = self._limiters[market].ban(seconds)
            return BannedError(
                f"Binance banned this IP (HTTP 418) for {seconds:.0f} s, until "
                f"{until:%Y-%m-%d %H:%M:%S} UTC, for sending requests after a 429; stop all "
                f"{market} REST requests until then (bans grow from 2 minutes to 3 days)",
                url=url,
                retry_after=seconds,
            )
        if status == 451:
            return RegionBlockedError(
                f"Binance refuses requests from this region (HTTP 451) at {url}; point "
                f"LAKEHOUSE_BINANCE_{market.upper()}_API_URL at a reachable mirror or skip REST",
                url=url,
                status=status,
            )
        if code == _INVALID_SYMBOL:
            return NotFoundUpstreamError(
                f"not found upstream (HTTP {status}, {detail}): {url}", url=url, status=status
            )
        if status == 429:
            self._limiters[market].pause(retry_after or self._settings.tuning.retry_backoff_seconds)
        error = error_for_status(status, url, answer.headers, detail)
        if error is None:  # a 2xx other than 200, or 304: not a JSON page
            error = SourceError(f"unexpected HTTP {status} from {url}", url=url, status=status)
        return error

    async def _sync_limit(self, market: Market) -> None:
        """Read the market's REQUEST_WEIGHT limit from exchangeInfo once."""
        async with self._sync_lock:
            if market in self._synced:
                return
            self._synced.add(market)
            payload, _ = await self.request(market, f"{PREFIX[market]}/exchangeInfo", {})
            self.adopt_limit(market, payload)
