"""Reserve Binance REST request weight so that a client never exceeds the per-minute limit.

Binance counts request *weight* per IP in a one-minute window, separately for spot
(`/api`), USDⓈ-M (`/fapi`) and COIN-M (`/dapi`). `WeightLimiter` keeps a sliding log of the
weight it spent: a request reserves its weight before it is sent and is stamped when its
response arrives (never earlier than the server counted it), so the log can only over-count.
The `X-MBX-USED-WEIGHT-1M` header corrects the count upwards (other processes on the same
IP), a 429 pauses every request for Retry-After, and a 418 ban makes every request fail fast.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from crypto_lakehouse.exceptions import BannedError, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from crypto_lakehouse.sources.binance._silver import Market

log = structlog.get_logger(__name__)

DEFAULT_WEIGHT_LIMITS: dict[Market, int] = {"spot": 6000, "um": 2400, "cm": 2400}
_WEIGHT_HEADER = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$", re.IGNORECASE)
_PRICE_KLINES = frozenset(
    {"klines", "markPriceKlines", "indexPriceKlines", "premiumIndexKlines", "continuousKlines"}
)
_SPOT_WEIGHTS = {
    "klines": 2,
    "uiKlines": 2,
    "aggTrades": 4,
    "exchangeInfo": 20,
    "historicalTrades": 25,
    "ping": 1,
    "time": 1,
}
_FUTURES_WEIGHTS = {
    "aggTrades": 20,
    "fundingRate": 1,
    "openInterest": 1,
    "exchangeInfo": 1,
    "ping": 1,
    "time": 1,
}
_POLL_SECONDS = 0.005


def futures_kline_weight(limit: int) -> int:
    """Return the weight of a futures klines-family request: [1,100)→1 … >1000→10."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def request_weight(market: Market, path: str, params: Mapping[str, Any]) -> int:
    """Return the documented weight of one REST request.

    Args:
        market: "spot", "um" or "cm".
        path: The request path, e.g. "/fapi/v1/klines".
        params: The query parameters (`limit` and `symbol` change some weights).

    Returns:
        The weight; 0 for USDⓈ-M `openInterestHist`, which has a separate request limit.

    Raises:
        ConfigurationError: If the endpoint has no known weight.
    """
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if market == "spot":
        if name in _SPOT_WEIGHTS:
            return _SPOT_WEIGHTS[name]
    elif name in _PRICE_KLINES:
        return futures_kline_weight(int(params.get("limit", 500)))
    elif name == "premiumIndex":
        return 1 if market == "um" and params.get("symbol") else 10
    elif name == "openInterestHist":
        return 0 if market == "um" else 1
    elif name in _FUTURES_WEIGHTS:
        return _FUTURES_WEIGHTS[name]
    raise ConfigurationError(f"no request weight known for {market} {path}; add it to ratelimit.py")


def weight_limit_from_exchange_info(info: Mapping[str, Any]) -> int | None:
    """Return the REQUEST_WEIGHT limit per one minute from an `exchangeInfo` payload, if any."""
    for rule in info.get("rateLimits", []):
        if (
            rule.get("rateLimitType") == "REQUEST_WEIGHT"
            and rule.get("interval") == "MINUTE"
            and int(rule.get("intervalNum", 1)) == 1
        ):
            return int(rule["limit"])
    return None


def used_weight_from_headers(headers: Mapping[str, str]) -> int | None:
    """Return the used weight of the 1-minute window from response headers, if present.

    Accepts `X-MBX-USED-WEIGHT-1M` and the plain `X-MBX-USED-WEIGHT` (added 2019).
    """
    plain: int | None = None
    for key, value in headers.items():
        match = _WEIGHT_HEADER.match(key)
        if match and match.group(1) == "1" and match.group(2).lower() == "m":
            return int(value)
        if key.lower() == "x-mbx-used-weight":
            plain = int(value)
    return plain


class WeightLimiter:
    """Sliding-window weight budget for one Binance API family (one per market)."""

    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float = 60.0,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Create a limiter.

        Args:
            limit: Maximum weight per window.
            window_seconds: Window length; 60 on Binance, shorter in tests.
            name: Label used in logs, e.g. the market.
            clock: Monotonic seconds; injectable for tests.
            sleep: Async sleep matching `clock`; injectable for tests.
        """
        self._limit = limit
        self._window = window_seconds
        self._name = name
        self._clock = clock
        self._sleep = sleep
        self._settled: deque[tuple[float, int]] = deque()
        self._settled_weight = 0
        self._inflight = 0
        self._paused_until = 0.0
        self._banned_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def limit(self) -> int:
        """Return the current weight limit per window."""
        return self._limit

    def set_limit(self, limit: int) -> None:
        """Replace the weight limit, e.g. with the value read from `exchangeInfo`."""
        if limit != self._limit:
            log.info("weight_limit_set", limiter=self._name, limit=limit, previous=self._limit)
        self._limit = limit

    def used(self) -> int:
        """Return the weight counted in the current window, including requests in flight."""
        self._expire(self._clock())
        return self._settled_weight + self._inflight

    def _expire(self, now: float) -> None:
        """Drop settled entries older than one window."""
        while self._settled and self._settled[0][0] + self._window <= now:
            self._settled_weight -= self._settled.popleft()[1]

    def _wait_seconds(self, weight: int, now: float) -> float:
        """Return how long until `weight` fits (a short poll when in-flight requests block)."""
        excess = self._settled_weight + self._inflight + weight - self._limit
        freed = 0
        for stamp, spent in self._settled:
            freed += spent
            if freed >= excess:
                return max(stamp + self._window - now, _POLL_SECONDS)
        return _POLL_SECONDS

    def _check_ban(self, now: float) -> None:
        """Raise BannedError while a 418 ban is in force."""
        if now < self._banned_until:
            remaining = self._banned_until - now
            raise BannedError(
                f"Binance {self._name or 'REST'} banned this IP (HTTP 418); refusing requests for "
                f"another {remaining:.0f} s to avoid a longer ban",
                retry_after=remaining,
            )

    async def acquire(self, weight: int) -> None:
        """Wait until `weight` fits in the window, then count it as in flight.

        Callers must call `settle(weight)` when the response arrives; prefer `reserve`.

        Raises:
            BannedError: While a ban reported by `ban` is in force.
            ConfigurationError: If one request weighs more than the whole limit.
        """
        if weight > self._limit:
            raise ConfigurationError(
                f"a request of weight {weight} can never fit the limit {self._limit}"
            )
        async with self._lock:
            while True:
                now = self._clock()
                self._check_ban(now)
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._expire(now)
                if self._settled_weight + self._inflight + weight <= self._limit:
                    self._inflight += weight
                    return
                await self._sleep(self._wait_seconds(weight, now))

    def settle(self, weight: int) -> None:
        """Stamp an acquired weight with the current time, after its response arrived."""
        self._inflight -= weight
        if weight:
            self._settled.append((self._clock(), weight))
            self._settled_weight += weight

    @asynccontextmanager
    async def reserve(self, weight: int) -> AsyncIterator[None]:
        """Acquire `weight` for the duration of one request and settle it afterwards."""
        await self.acquire(weight)
        try:
            yield
        finally:
            self.settle(weight)

    def observe(self, headers: Mapping[str, str]) -> int | None:
        """Correct the count upwards from the server's used-weight header.

        The count is never lowered: requests still in flight may not be in the server's
        figure yet, so a lower server number is not proof of spare weight.

        Returns:
            The server's used weight, or None when the header is absent.
        """
        server_used = used_weight_from_headers(headers)
        if server_used is None:
            return None
        now = self._clock()
        self._expire(now)
        local = self._settled_weight + self._inflight
        if server_used > local:
            self._settled.append((now, server_used - local))
            self._settled_weight += server_used - local
            log.debug("weight_corrected", limiter=self._name, server=server_used, local=local)
        return server_used

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` (after a 429 with Retry-After)."""
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            log.warning("rate_limited_pause", limiter=self._name, seconds=seconds)

    def ban(self, seconds: float) -> datetime:
        """Refuse every request for `seconds` (after a 418); return the ban's end in UTC."""
        self._banned_until = max(self._banned_until, self._clock() + seconds)
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        log.error("ip_banned", limiter=self._name, seconds=seconds, until=until.isoformat())
        return until
