"""Async client for Binance public REST market data: spot `/api/v3`, UM `/fapi`, CM `/dapi`.

Every request passes the market's `WeightLimiter` and the host's `CircuitBreaker`, and is
retried by the one retry policy (`crypto_lakehouse.retry`) only for transient errors (5xx,
transport errors, 429 after its Retry-After). 418 (ban), 451 (region), 404 and other 4xx are
never retried. Each fetch returns the raw
pages (for bronze) and a silver-layout DataFrame built by the pure `rest_frames` functions.
Time ranges are half-open `[start, end)` on the row's own time (open time, trade time, …).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.sources.binance.rest import frames as rest_frames
from crypto_lakehouse.sources.binance.rest.paging import (
    CM_KLINE_WINDOW_MS,
    PERIOD_MS,
    page_agg_trades,
    page_by_time,
)
from crypto_lakehouse.sources.binance.rest.transport import PREFIX, RawPage, RestTransport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from types import TracebackType

    import aiohttp

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.sources.binance._silver import Market
    from crypto_lakehouse.sources.binance.rest.breaker import CircuitBreaker
    from crypto_lakehouse.sources.binance.rest.ratelimit import WeightLimiter

__all__ = ["BinanceRestClient", "DataType", "FetchResult", "RawPage"]

DataType = Literal[
    "klines",
    "markPriceKlines",
    "indexPriceKlines",
    "premiumIndexKlines",
    "aggTrades",
    "fundingRate",
    "metrics",
]
_MAX_KLINE_PAGE: dict[Market, int] = {"spot": 1000, "um": 1500, "cm": 1500}
_AGG_TRADE_PAGE = 1000
_FUNDING_PAGE = 1000
_OI_HIST_PAGE = 500


@dataclass(frozen=True, slots=True, eq=False)
class FetchResult:
    """The raw pages of one fetch (for bronze) and their rows in the silver layout."""

    pages: tuple[RawPage, ...]
    frame: pl.DataFrame = field(repr=False)

    @property
    def row_count(self) -> int:
        """Return the number of silver rows."""
        return self.frame.height


def _futures_only(market: Market, endpoint: str) -> None:
    """Raise ConfigurationError when a futures-only endpoint is asked of spot."""
    if market == "spot":
        raise ConfigurationError(f"{endpoint} exists only for futures markets (um, cm), not spot")


def _closed_only(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Drop the bar still in progress (close_time in the future); it is not data yet."""
    return frame.filter(pl.col("close_time") < now)


class BinanceRestClient:
    """Binance public market-data REST client with paging, weight limits and a breaker."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        limiters: Mapping[Market, WeightLimiter] | None = None,
        breaker: CircuitBreaker | None = None,
        futures_kline_page: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Create a client.

        Args:
            settings: Endpoints, retries, weight override and breaker settings (read by
                the caller, never from the environment here).
            session: An aiohttp session to use; the caller keeps ownership and closes it.
                Without one the client creates its own on first use and closes it in
                `aclose` (or on leaving `async with`).
            limiters: One limiter per market. Without them, limits come from
                `rest_weight_limit_per_minute`, or (when it is 0) from each market's
                `exchangeInfo`, fetched once before that market's first request.
            breaker: Shared per-host breaker; defaults to one built from settings.
            futures_kline_page: Page size for futures klines (max 1500). 1000 is the default
                because it costs weight 5 for 1000 rows, where 1500 costs 10.
            sleep: Async sleep used between retries; injectable for tests.
            now: Current UTC time; bars closing after it are dropped as unfinished.

        Raises:
            ConfigurationError: If `futures_kline_page` is outside 1..1500.
        """
        if not 1 <= futures_kline_page <= _MAX_KLINE_PAGE["um"]:
            raise ConfigurationError("futures_kline_page must be within 1..1500")
        self._transport = RestTransport(
            settings,
            session=session,
            limiters=limiters,
            breaker=breaker,
            sleep=sleep,
            now=now,
        )
        self._kline_page = {**_MAX_KLINE_PAGE, "um": futures_kline_page, "cm": futures_kline_page}
        self._now = now

    async def __aenter__(self) -> BinanceRestClient:
        """Return self; `aclose` runs on exit."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the HTTP session if this client created it."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this client created it."""
        await self._transport.aclose()

    @property
    def breaker(self) -> CircuitBreaker:
        """Return the per-host breaker (its `snapshot()` feeds a status command)."""
        return self._transport.breaker

    def limiter(self, market: Market) -> WeightLimiter:
        """Return the weight limiter of a market."""
        return self._transport.limiter(market)

    async def _request(
        self, market: Market, path: str, params: Mapping[str, Any]
    ) -> tuple[Any, RawPage]:
        """Delegate one request to the transport."""
        return await self._transport.request(market, path, params)

    async def exchange_info(self, market: Market) -> FetchResult:
        """Fetch `exchangeInfo` and adopt its weight limit unless one is configured.

        Args:
            market: "spot", "um" or "cm".

        Returns:
            The raw page and one row per listed symbol (status, assets, contract dates).
        """
        payload, page = await self._request(market, f"{PREFIX[market]}/exchangeInfo", {})
        self._transport.adopt_limit(market, payload)
        return FetchResult((page,), rest_frames.exchange_symbols_frame(payload))

    async def _kline_family(
        self,
        market: Market,
        name: str,
        params: Mapping[str, Any],
        start: datetime,
        end: datetime,
    ) -> tuple[list[Any], list[RawPage]]:
        """Fetch a klines-family endpoint; COIN-M windows are at most 200 days."""
        if name != "klines":
            _futures_only(market, name)
        window = CM_KLINE_WINDOW_MS if market == "cm" else None
        return await page_by_time(
            partial(self._request, market),
            f"{PREFIX[market]}/{name}",
            params,
            start,
            end,
            limit=self._kline_page[market],
            window_ms=window,
            time_of=lambda r: int(r[0]),
        )

    async def klines(
        self, market: Market, symbol: str, interval: str, start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch trade klines with open_time in `[start, end)`; unfinished bars are dropped.

        Args:
            market: "spot" (pages of 1000), "um" or "cm" (COIN-M in windows ≤ 200 days).
            symbol: Exchange symbol, e.g. "BTCUSDT" or "BTCUSD_PERP".
            interval: Binance interval string, e.g. "1m".
            start: Inclusive start (aware datetime; naive means UTC).
            end: Exclusive end.

        Returns:
            Raw pages and the `*_klines` silver rows; empty when upstream has none.

        Raises:
            SourceError: A subclass naming the HTTP failure (see module docstring).
        """
        params = {"symbol": symbol, "interval": interval}
        rows, pages = await self._kline_family(market, "klines", params, start, end)
        frame = rest_frames.klines_frame(market, symbol, interval, rows)
        return FetchResult(tuple(pages), _closed_only(frame, self._now()))

    async def _price_klines(
        self, market: Market, name: str, params: dict[str, str], start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch mark/index/premium-index klines into the price-klines silver layout."""
        rows, pages = await self._kline_family(market, name, params, start, end)
        symbol = params.get("symbol") or params["pair"]
        frame = rest_frames.price_klines_frame(symbol, params["interval"], rows)
        return FetchResult(tuple(pages), _closed_only(frame, self._now()))

    async def mark_price_klines(
        self, market: Market, symbol: str, interval: str, start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch mark-price klines (futures only); arguments as for `klines`."""
        params = {"symbol": symbol, "interval": interval}
        return await self._price_klines(market, "markPriceKlines", params, start, end)

    async def index_price_klines(
        self, market: Market, pair: str, interval: str, start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch index-price klines for a `pair` (e.g. "BTCUSD"); the rows' symbol is the pair."""
        params = {"pair": pair, "interval": interval}
        return await self._price_klines(market, "indexPriceKlines", params, start, end)

    async def premium_index_klines(
        self, market: Market, symbol: str, interval: str, start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch premium-index klines (futures only); arguments as for `klines`."""
        params = {"symbol": symbol, "interval": interval}
        return await self._price_klines(market, "premiumIndexKlines", params, start, end)

    async def funding_rate(
        self, market: Market, symbol: str, start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch funding events with fundingTime in `[start, end)`, pages of 1000.

        `funding_interval_hours` is derived from the gaps between consecutive events (null
        for the first event and after a gap that is not 1, 2, 4 or 8 hours).

        Raises:
            ConfigurationError: For spot, which has no funding.
        """
        _futures_only(market, "fundingRate")
        rows, pages = await page_by_time(
            partial(self._request, market),
            f"{PREFIX[market]}/fundingRate",
            {"symbol": symbol},
            start,
            end,
            limit=_FUNDING_PAGE,
            window_ms=None,
            time_of=lambda r: int(r["fundingTime"]),
        )
        return FetchResult(tuple(pages), rest_frames.funding_rate_frame(symbol, rows))

    async def open_interest_hist(
        self,
        market: Market,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        period: str = "5m",
        contract_type: str = "ALL",
    ) -> FetchResult:
        """Fetch open-interest statistics (last 30 days upstream) into the metrics layout.

        Windows span `period × 500`, so no window can hold more than one page whichever
        end of the window the server starts from.

        Args:
            market: "um" (`symbol`) or "cm" (`symbol` is the pair, plus `contract_type`).
            symbol: Symbol (UM) or pair (CM), e.g. "BTCUSD".
            start: Inclusive start.
            end: Exclusive end.
            period: One of 5m 15m 30m 1h 2h 4h 6h 12h 1d.
            contract_type: COIN-M only: ALL, CURRENT_QUARTER, NEXT_QUARTER or PERPETUAL.

        Returns:
            Raw pages and `*_metrics` rows with only the open-interest columns filled.
        """
        _futures_only(market, "openInterestHist")
        if period not in PERIOD_MS:
            raise ConfigurationError(f"openInterestHist period must be one of {list(PERIOD_MS)}")
        params = (
            {"symbol": symbol}
            if market == "um"
            else {"pair": symbol, "contractType": contract_type}
        )
        rows, pages = await page_by_time(
            partial(self._request, market),
            "/futures/data/openInterestHist",
            {**params, "period": period},
            start,
            end,
            limit=_OI_HIST_PAGE,
            window_ms=PERIOD_MS[period] * _OI_HIST_PAGE,
            time_of=lambda r: int(r["timestamp"]),
        )
        return FetchResult(tuple(pages), rest_frames.open_interest_hist_frame(symbol, rows))

    async def agg_trades(
        self, market: Market, symbol: str, start: datetime, end: datetime
    ) -> FetchResult:
        """Fetch aggregate trades with transact_time in `[start, end)`.

        The first trade is found by time windows shorter than one hour (the futures rule,
        used for spot too); from there pages follow by `fromId` (see `page_agg_trades`).

        Returns:
            Raw pages and `*_agg_trades` rows in id order, without duplicates.
        """
        request = partial(self._request, market)
        rows, pages = await page_agg_trades(
            request, f"{PREFIX[market]}/aggTrades", symbol, start, end, limit=_AGG_TRADE_PAGE
        )
        return FetchResult(tuple(pages), rest_frames.agg_trades_frame(market, symbol, rows))

    async def premium_index(self, market: Market, symbol: str | None = None) -> FetchResult:
        """Fetch the current mark price, index price and funding rate (one or all symbols)."""
        _futures_only(market, "premiumIndex")
        params = {"symbol": symbol} if symbol else {}
        payload, page = await self._request(market, f"{PREFIX[market]}/premiumIndex", params)
        return FetchResult((page,), rest_frames.premium_index_frame(payload))

    async def open_interest(self, market: Market, symbol: str) -> FetchResult:
        """Fetch the current open interest of one futures symbol."""
        _futures_only(market, "openInterest")
        payload, page = await self._request(
            market, f"{PREFIX[market]}/openInterest", {"symbol": symbol}
        )
        return FetchResult((page,), rest_frames.open_interest_frame(payload))

    async def fetch(
        self,
        market: Market,
        data_type: DataType,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        interval: str | None = None,
        period: str = "5m",
    ) -> FetchResult:
        """Fetch `[start, end)` of one archive data type by its archive name (for `update`).

        Args:
            market: "spot", "um" or "cm".
            data_type: Archive data-type name: klines, markPriceKlines, indexPriceKlines,
                premiumIndexKlines, aggTrades, fundingRate or metrics.
            symbol: Symbol (the pair for indexPriceKlines and COIN-M metrics).
            start: Inclusive start.
            end: Exclusive end.
            interval: Required for the kline types.
            period: Sampling period for metrics (openInterestHist).

        Returns:
            The FetchResult of the matching endpoint method.

        Raises:
            ConfigurationError: For an unknown data type or a missing interval.
        """
        if data_type in ("aggTrades", "fundingRate", "metrics"):
            if data_type == "aggTrades":
                return await self.agg_trades(market, symbol, start, end)
            if data_type == "fundingRate":
                return await self.funding_rate(market, symbol, start, end)
            return await self.open_interest_hist(market, symbol, start, end, period=period)
        if interval is None:
            raise ConfigurationError(f"{data_type} needs an interval, e.g. 1m")
        methods = {
            "klines": self.klines,
            "markPriceKlines": self.mark_price_klines,
            "indexPriceKlines": self.index_price_klines,
            "premiumIndexKlines": self.premium_index_klines,
        }
        if data_type not in methods:
            raise ConfigurationError(f"REST has no fetcher for data type {data_type!r}")
        return await methods[data_type](market, symbol, interval, start, end)
