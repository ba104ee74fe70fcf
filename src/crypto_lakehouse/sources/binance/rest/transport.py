"""Send one Binance REST request through the weight limiter, the breaker and tenacity retries.

`RestTransport.request` is the only place the REST source performs I/O. It maps HTTP
outcomes to the exception tree: 429 → RateLimitedError (retried after Retry-After, and every
request of the market pauses), 5xx and transport errors → TransientSourceError (retried with
exponential backoff and jitter; they count as breaker failures), 418 → BannedError (never
retried; the market refuses requests until the ban ends), 451 → RegionBlockedError, 404 and
"invalid symbol" → NotFoundUpstreamError, other 4xx → SourceError.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from crypto_lakehouse.exceptions import (
    BannedError,
    NotFoundUpstreamError,
    RateLimitedError,
    RegionBlockedError,
    SourceError,
    TransientSourceError,
)
from crypto_lakehouse.sources.binance.rest.breaker import CircuitBreaker
from crypto_lakehouse.sources.binance.rest.ratelimit import (
    DEFAULT_WEIGHT_LIMITS,
    WeightLimiter,
    request_weight,
    weight_limit_from_exchange_info,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from tenacity import RetryCallState

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.sources.binance._silver import Market

log = structlog.get_logger(__name__)

PREFIX: dict[Market, str] = {"spot": "/api/v3", "um": "/fapi/v1", "cm": "/dapi/v1"}
_DEFAULT_BAN_SECONDS = 120.0
_RETRYABLE = (TransientSourceError,)


@dataclass(frozen=True, slots=True)
class RawPage:
    """One REST response as fetched: the full URL with its query, and the JSON body bytes."""

    url: str
    body: bytes
    fetched_at: datetime


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Return Retry-After in seconds when it is numeric, else None."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_detail(body: bytes) -> tuple[int | None, str]:
    """Return (Binance error code, "code -1121: Invalid symbol.") from an error body."""
    try:
        payload = json.loads(body)
        code = int(payload["code"])
        return code, f"code {code}: {payload.get('msg', '')}"
    except (ValueError, KeyError, TypeError):
        return None, body[:200].decode("utf-8", "replace") or "empty body"


class _RetryAfterOrBackoff(wait_base):
    """Wait Retry-After seconds after a 429, else exponential backoff with jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._backoff = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(retry_state))


def _log_retry(retry_state: RetryCallState) -> None:
    """Log one retry with the error that caused it."""
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    log.warning("rest_retry", attempt=retry_state.attempt_number, error=str(exc))


class RestTransport:
    """Limits, breaker, retries and error mapping for the REST hosts of all three markets."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
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
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=settings.http_timeout_seconds)
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
        self._sleep = sleep
        self._now = now

    async def aclose(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owns_http:
            await self._http.aclose()

    def limiter(self, market: Market) -> WeightLimiter:
        """Return the weight limiter of a market."""
        return self._limiters[market]

    def host(self, market: Market) -> str:
        """Return "host:port" of a market's base URL, the breaker's key."""
        return httpx.URL(self._bases[market]).netloc.decode("ascii")

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
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_RETRYABLE),
            stop=stop_after_attempt(self._settings.http_retries + 1),
            wait=_RetryAfterOrBackoff(
                self._settings.tuning.retry_backoff_seconds,
                self._settings.tuning.retry_max_wait_seconds,
            ),
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(market, path, params)
        raise AssertionError("unreachable: tenacity returns or re-raises")

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
                response = await self._http.get(url, params=dict(params))
                limiter.observe(response.headers)
        except httpx.TransportError as exc:
            self.breaker.record_failure(host)
            raise TransientSourceError(
                f"{type(exc).__name__} talking to {host}: {exc}", url=url
            ) from exc
        except BaseException:
            self.breaker.release(host)
            raise
        if response.status_code >= 500:
            self.breaker.record_failure(host)
        else:
            self.breaker.record_success(host)
        return self._decode(market, response)

    def _decode(self, market: Market, response: httpx.Response) -> tuple[Any, RawPage]:
        """Return (JSON, RawPage) for a 200, else raise the exception for the status."""
        status, url = response.status_code, str(response.url)
        if status == 200:
            try:
                payload = json.loads(response.content)
            except ValueError as exc:
                raise SourceError(
                    f"{url} answered 200 with a body that is not JSON", url=url, status=status
                ) from exc
            return payload, RawPage(url=url, body=response.content, fetched_at=self._now())
        retry_after = _retry_after_seconds(response.headers)
        code, detail = _error_detail(response.content)
        if status == 429:
            self._limiters[market].pause(retry_after or self._settings.tuning.retry_backoff_seconds)
            raise RateLimitedError(
                f"Binance rate limit hit (HTTP 429, {detail}) at {url}",
                url=url,
                retry_after=retry_after,
            )
        if status == 418:
            seconds = retry_after if retry_after is not None else _DEFAULT_BAN_SECONDS
            until = self._limiters[market].ban(seconds)
            raise BannedError(
                f"Binance banned this IP (HTTP 418) for {seconds:.0f} s, until "
                f"{until:%Y-%m-%d %H:%M:%S} UTC, for sending requests after a 429; stop all "
                f"{market} REST requests until then (bans grow from 2 minutes to 3 days)",
                url=url,
                retry_after=seconds,
            )
        if status == 451:
            raise RegionBlockedError(
                f"Binance refuses requests from this region (HTTP 451) at {url}; point "
                f"LAKEHOUSE_BINANCE_{market.upper()}_API_URL at a reachable mirror or skip REST",
                url=url,
                status=status,
            )
        if status == 404 or code == -1121:
            raise NotFoundUpstreamError(
                f"not found upstream (HTTP {status}, {detail}): {url}", url=url, status=status
            )
        if status >= 500:
            raise TransientSourceError(
                f"Binance server error HTTP {status} ({detail}) at {url}", url=url, status=status
            )
        raise SourceError(
            f"Binance rejected the request (HTTP {status}, {detail}) at {url}",
            url=url,
            status=status,
        )

    async def _sync_limit(self, market: Market) -> None:
        """Read the market's REQUEST_WEIGHT limit from exchangeInfo once."""
        async with self._sync_lock:
            if market in self._synced:
                return
            self._synced.add(market)
            payload, _ = await self.request(market, f"{PREFIX[market]}/exchangeInfo", {})
            self.adopt_limit(market, payload)
