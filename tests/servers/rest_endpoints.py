"""Endpoint logic of the Binance REST stand-in: parameters, paging rules, limits, weights.

Pure functions of (MarketData, market, endpoint, params) → JSON payload, raising ApiError
with Binance's status and error code when a rule is broken. The HTTP layer is in
rest_server.py. Weights here are written independently of the client's table on purpose.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from tests.servers.rest_data import DAY_MS, HOUR_MS, INTERVAL_MS, PRICE_KINDS, row_time

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.servers.rest_data import Market, MarketData, Row

KLINE_KINDS = ("klines", *PRICE_KINDS)
MAX_KLINE_LIMIT: dict[str, int] = {"spot": 1000, "um": 1500, "cm": 1500}
MAX_LIMIT: dict[str, int] = {"aggTrades": 1000, "fundingRate": 1000, "openInterestHist": 500}
CM_KLINE_SPAN_MS = 200 * DAY_MS
PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")


class ApiError(Exception):
    """A Binance-style error answer: HTTP status plus {"code", "msg"} body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _bad(code: int, msg: str) -> ApiError:
    """Return a 400 ApiError."""
    return ApiError(400, code, msg)


def weight(market: Market, endpoint: str, params: dict[str, str]) -> int:
    """Return the stand-in's weight of one request (Binance's documented table)."""
    if market == "spot":
        return {"klines": 2, "aggTrades": 4, "exchangeInfo": 20}.get(endpoint, 1)
    if endpoint in KLINE_KINDS:
        limit = int(params.get("limit", 500))
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if endpoint == "premiumIndex":
        return 1 if market == "um" and "symbol" in params else 10
    if endpoint == "openInterestHist":
        return 0 if market == "um" else 1
    return {"aggTrades": 20}.get(endpoint, 1)


def _int(params: dict[str, str], key: str) -> int | None:
    """Return an integer parameter or None; malformed values are a -1100 error."""
    if key not in params:
        return None
    try:
        return int(params[key])
    except ValueError:
        raise _bad(-1100, f"Illegal characters found in parameter '{key}'") from None


def _limit(params: dict[str, str], default: int, maximum: int) -> int:
    """Return the `limit` parameter, enforcing the endpoint's maximum."""
    limit = _int(params, "limit") or default
    if not 1 <= limit <= maximum:
        raise _bad(-1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _select(
    kind: str,
    rows_from: Iterator[Row],
    start: int | None,
    end: int | None,
    limit: int,
    newest_from: Iterator[Row],
) -> list[Row]:
    """Apply Binance ordering: from start (capped at end), else the newest up to end."""
    if start is not None:
        within = itertools.takewhile(lambda r: end is None or row_time(kind, r) <= end, rows_from)
        return list(itertools.islice(within, limit))
    newest = [
        r for r in itertools.takewhile(lambda r: row_time(kind, r) <= (end or 2**62), newest_from)
    ]
    return newest[-limit:]


def klines(data: MarketData, market: Market, kind: str, params: dict[str, str]) -> list[Row]:
    """Serve /klines and the mark/index/premium variants (index klines take `pair`)."""
    if market == "spot" and kind != "klines":
        raise ApiError(404, -1, "not found")
    key = "pair" if kind == "indexPriceKlines" else "symbol"
    symbol = params.get(key, "")
    if data.spec(market, symbol, pair=key == "pair") is None:
        raise _bad(-1121, "Invalid symbol.")
    interval = params.get("interval", "")
    if interval not in INTERVAL_MS:
        raise _bad(-1120, "Invalid interval.")
    limit = _limit(params, 500, MAX_KLINE_LIMIT[market])
    start, end = _int(params, "startTime"), _int(params, "endTime")
    if market == "cm":
        if start is not None and end is not None and end - start > CM_KLINE_SPAN_MS:
            raise _bad(-1127, "More than 200 days between startTime and endTime.")
        if start is not None and end is None:
            end = start + CM_KLINE_SPAN_MS
        elif end is not None and start is None:
            start = end - CM_KLINE_SPAN_MS
    step = INTERVAL_MS[interval]
    newest_start = (end or data.now_ms) - (limit + 1) * step
    return _select(
        kind,
        data.series(market, kind, symbol, start or 0, interval),
        start,
        end,
        limit,
        data.series(market, kind, symbol, newest_start, interval),
    )


def agg_trades(data: MarketData, market: Market, params: dict[str, str]) -> list[Row]:
    """Serve /aggTrades: fromId xor times; futures time windows must be under one hour."""
    symbol = params.get("symbol", "")
    if data.spec(market, symbol) is None:
        raise _bad(-1121, "Invalid symbol.")
    limit = _limit(params, 500, MAX_LIMIT["aggTrades"])
    start, end, from_id = _int(params, "startTime"), _int(params, "endTime"), _int(params, "fromId")
    if from_id is not None and (start is not None or end is not None):
        raise _bad(-1128, "Combination of optional parameters invalid.")
    if market != "spot" and start is not None and end is not None and end - start >= HOUR_MS:
        raise _bad(-1127, "More than 1 hours between startTime and endTime.")
    if from_id is not None:
        return list(itertools.islice(data.agg_trades_from_id(market, symbol, from_id), limit))
    newest_start = (end or data.now_ms) - HOUR_MS
    return _select(
        "aggTrades",
        data.series(market, "aggTrades", symbol, start or 0),
        start,
        end,
        limit,
        data.series(market, "aggTrades", symbol, newest_start),
    )


def funding_rate(data: MarketData, market: Market, params: dict[str, str]) -> list[Row]:
    """Serve /fundingRate (symbol mandatory here; COIN-M has no markPrice)."""
    symbol = params.get("symbol", "")
    spec = data.spec(market, symbol)
    if spec is None:
        raise _bad(-1121, "Invalid symbol.")
    limit = _limit(params, 100, MAX_LIMIT["fundingRate"])
    start, end = _int(params, "startTime"), _int(params, "endTime")
    return _select(
        "fundingRate",
        data.series(market, "fundingRate", symbol, start or 0),
        start,
        end,
        limit,
        data.series(market, "fundingRate", symbol, 0),
    )


def open_interest_hist(data: MarketData, market: Market, params: dict[str, str]) -> list[Row]:
    """Serve /futures/data/openInterestHist (UM: symbol; CM: pair + contractType)."""
    if market == "cm":
        symbol, contract = params.get("pair", ""), params.get("contractType", "")
        if contract not in ("ALL", "CURRENT_QUARTER", "NEXT_QUARTER", "PERPETUAL"):
            raise _bad(-1102, "Mandatory parameter 'contractType' was not sent or is invalid.")
        known = data.spec(market, symbol, pair=True)
    else:
        symbol, contract = params.get("symbol", ""), ""
        known = data.spec(market, symbol)
    if known is None:
        raise _bad(-1121, "Invalid symbol.")
    period = params.get("period", "")
    if period not in PERIODS:
        raise _bad(-1102, "Mandatory parameter 'period' was not sent or is invalid.")
    limit = _limit(params, 30, MAX_LIMIT["openInterestHist"])
    start, end = _int(params, "startTime"), _int(params, "endTime")
    series = data.series(market, "openInterestHist", symbol, start or 0, period, contract)
    newest = data.series(market, "openInterestHist", symbol, 0, period, contract)
    return _select("openInterestHist", series, start, end, limit, newest)


def premium_index(data: MarketData, market: Market, params: dict[str, str]) -> Any:
    """Serve /premiumIndex: an object for a UM symbol, otherwise an array."""
    wanted = params.get("symbol") or params.get("pair")
    rows = []
    for spec in data.symbols.get(market, []):
        if wanted and wanted not in (spec.symbol, spec.pair):
            continue
        rows.append(
            {
                "symbol": spec.symbol,
                "pair": spec.pair,
                "markPrice": f"{spec.base_price:.8f}",
                "indexPrice": f"{spec.base_price * 0.9999:.8f}",
                "estimatedSettlePrice": f"{spec.base_price:.8f}",
                "lastFundingRate": "0.00010000",
                "interestRate": "0.00010000",
                "nextFundingTime": (data.now_ms // (8 * HOUR_MS) + 1) * 8 * HOUR_MS,
                "time": data.now_ms,
            }
        )
    if wanted and not rows:
        raise _bad(-1121, "Invalid symbol.")
    return rows[0] if market == "um" and params.get("symbol") else rows


def open_interest(data: MarketData, market: Market, params: dict[str, str]) -> Any:
    """Serve /openInterest for one symbol."""
    symbol = params.get("symbol", "")
    if data.spec(market, symbol) is None:
        raise _bad(-1121, "Invalid symbol.")
    return {"openInterest": "12345.67800000", "symbol": symbol, "time": data.now_ms}


def exchange_info(data: MarketData, market: Market, weight_limit: int) -> Any:
    """Serve /exchangeInfo with the stand-in's REQUEST_WEIGHT limit and its symbols."""
    symbols = []
    for spec in data.symbols.get(market, []):
        entry: dict[str, Any] = {
            "symbol": spec.symbol,
            "status": "TRADING",
            "baseAsset": spec.pair[:3],
            "quoteAsset": spec.pair[3:],
        }
        if market != "spot":
            entry.update(
                pair=spec.pair,
                contractType="PERPETUAL",
                onboardDate=spec.listed_at,
                deliveryDate=4133404800000,
            )
        symbols.append(entry)
    return {
        "timezone": "UTC",
        "serverTime": data.now_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }


def dispatch(
    data: MarketData, market: Market, endpoint: str, params: dict[str, str], weight_limit: int
) -> Any:
    """Route one endpoint name to its handler."""
    if endpoint in KLINE_KINDS:
        return klines(data, market, endpoint, params)
    handlers = {
        "aggTrades": agg_trades,
        "fundingRate": funding_rate,
        "openInterestHist": open_interest_hist,
        "premiumIndex": premium_index,
        "openInterest": open_interest,
    }
    if endpoint == "exchangeInfo":
        return exchange_info(data, market, weight_limit)
    if endpoint not in handlers or (market == "spot" and endpoint != "aggTrades"):
        raise ApiError(404, -1, f"no endpoint {endpoint} for {market}")
    return handlers[endpoint](data, market, params)
