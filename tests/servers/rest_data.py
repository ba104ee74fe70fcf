"""Deterministic synthetic market data for the Binance REST stand-in, plus per-symbol edits.

Every series is a pure function of (seed, market, symbol, ...) generated lazily from the
symbol's listing time and cached: klines are a multiplicative random walk per bar, aggregate
trades have contiguous ids and a seeded number of trades per minute (zero inside configured
quiet periods), funding events follow a per-symbol interval schedule. Rows are produced in
the JSON shape Binance returns. Tests can replace a series outright (`set_rows`) or drop and
alter single rows (`drop`, `alter`) to make REST disagree with the archive.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Market = Literal["spot", "um", "cm"]
Row = Any  # a kline array or an object, as in Binance's JSON

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
INTERVAL_MS = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": 7 * DAY_MS,
}
PRICE_KINDS = ("markPriceKlines", "indexPriceKlines", "premiumIndexKlines")


def ms(text: str) -> int:
    """Return epoch ms of an ISO time in UTC, e.g. ms("2024-01-01") → 1704067200000."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _unit(*parts: object) -> float:
    """Return a deterministic number in [0, 1) from the parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _num(value: float) -> str:
    """Format a decimal the way Binance does (a string with 8 decimals)."""
    return f"{value:.8f}"


@dataclass
class SymbolSpec:
    """One listed symbol of the stand-in and the knobs of its synthetic data."""

    symbol: str
    pair: str
    listed_at: int = field(default_factory=lambda: ms("2024-01-01"))
    base_price: float = 40_000.0
    max_trades_per_minute: int = 12
    quiet: list[tuple[int, int]] = field(default_factory=list)
    funding_schedule: list[tuple[int, int]] = field(default_factory=list)

    def funding_hours_at(self, time_ms: int) -> int:
        """Return the funding interval in force at `time_ms` (8 h unless scheduled)."""
        hours = 8
        for since, value in sorted(self.funding_schedule):
            if since <= time_ms:
                hours = value
        return hours


@dataclass
class _Walk:
    """Cached random-walk bars of one series: (close, high_f, low_f, volume, trades, taker_f)."""

    rng: random.Random
    price: float
    bars: list[tuple[float, float, float, float, int, float]] = field(default_factory=list)

    def upto(self, index: int) -> None:
        """Extend the cache to hold bar `index`."""
        rng = self.rng
        while len(self.bars) <= index:
            self.price *= math.exp(rng.gauss(0.0, 0.002))
            self.bars.append(
                (
                    self.price,
                    rng.random() * 0.002,
                    rng.random() * 0.002,
                    rng.uniform(1.0, 50.0),
                    rng.randint(10, 500),
                    rng.random(),
                )
            )


class MarketData:
    """All synthetic series of the stand-in, keyed by (market, kind, symbol[, interval])."""

    def __init__(self, symbols: dict[Market, list[SymbolSpec]], *, seed: int, now_ms: int) -> None:
        """Serve `symbols`; `now_ms` is the stand-in's present (data ends there)."""
        self.symbols = symbols
        self.seed = seed
        self.now_ms = now_ms
        self._walks: dict[tuple[str, ...], _Walk] = {}
        self._trade_cum: dict[tuple[str, str], list[int]] = {}
        self._replaced: dict[tuple[str, str, str, str], list[Row]] = {}
        self._edits: dict[tuple[str, str, str], list[Callable[[Row], Row | None]]] = {}

    def spec(self, market: Market, symbol: str, *, pair: bool = False) -> SymbolSpec | None:
        """Return the spec of a listed symbol (or, with pair=True, of a pair's first symbol)."""
        for spec in self.symbols.get(market, []):
            if (spec.pair if pair else spec.symbol) == symbol:
                return spec
        return None

    # ---- edits -----------------------------------------------------------------------------

    def set_rows(
        self, market: Market, kind: str, symbol: str, rows: list[Row], interval: str = ""
    ) -> None:
        """Serve exactly `rows` (Binance JSON shape, ascending) for this series from now on."""
        self._replaced[(market, kind, symbol, interval)] = list(rows)

    def edit(self, market: Market, kind: str, symbol: str, fn: Callable[[Row], Row | None]) -> None:
        """Pass every served row of the series through `fn`; None drops the row."""
        self._edits.setdefault((market, kind, symbol), []).append(fn)

    def drop(self, market: Market, kind: str, symbol: str, times: set[int]) -> None:
        """Drop the rows whose time (open time, T, fundingTime, timestamp) is in `times`."""
        self.edit(market, kind, symbol, lambda row: None if row_time(kind, row) in times else row)

    def alter(
        self, market: Market, kind: str, symbol: str, time_ms: int, changes: dict[Any, Any]
    ) -> None:
        """Change fields (array positions or object keys) of the row at `time_ms`."""

        def apply(row: Row) -> Row:
            if row_time(kind, row) != time_ms:
                return row
            new = list(row) if isinstance(row, list) else dict(row)
            for key, value in changes.items():
                new[key] = value
            return new

        self.edit(market, kind, symbol, apply)

    def _edited(self, market: Market, kind: str, symbol: str, rows: Iterator[Row]) -> Iterator[Row]:
        """Apply the series' edits lazily."""
        edits = self._edits.get((market, kind, symbol), [])
        for original in rows:
            row: Row | None = original
            for fn in edits:
                row = fn(row)
                if row is None:
                    break
            if row is not None:
                yield row

    def series(
        self,
        market: Market,
        kind: str,
        symbol: str,
        start_ms: int,
        interval: str = "",
        extra: str = "",
    ) -> Iterator[Row]:
        """Yield the (edited) rows of a series with time ≥ start_ms, ascending, up to now."""
        replaced = self._replaced.get((market, kind, symbol, interval))
        if replaced is not None:
            rows: Iterator[Row] = (r for r in replaced if row_time(kind, r) >= start_ms)
        elif kind == "klines" or kind in PRICE_KINDS:
            rows = self._klines(market, kind, symbol, interval, start_ms)
        elif kind == "aggTrades":
            rows = self._agg_trades_from_time(market, symbol, start_ms)
        elif kind == "fundingRate":
            rows = self._funding(market, symbol, start_ms)
        else:
            rows = self._open_interest(market, symbol, interval, start_ms, extra)
        return self._edited(market, kind, symbol, rows)

    # ---- generators --------------------------------------------------------------------------

    def _walk(self, market: Market, kind: str, symbol: str, interval: str, base: float) -> _Walk:
        """Return the cached walk of one series."""
        key = (market, kind, symbol, interval)
        if key not in self._walks:
            self._walks[key] = _Walk(random.Random(f"{self.seed}:{key}"), base)
        return self._walks[key]

    def _klines(
        self, market: Market, kind: str, symbol: str, interval: str, start_ms: int
    ) -> Iterator[Row]:
        """Yield kline arrays from the first bar opening at or after start_ms."""
        spec = self.spec(market, symbol, pair=kind == "indexPriceKlines")
        step = INTERVAL_MS[interval]
        if spec is None:
            return
        origin = -(-spec.listed_at // step) * step
        index = max(0, -(-(start_ms - origin) // step))
        base = 0.0005 if kind == "premiumIndexKlines" else spec.base_price
        walk = self._walk(market, kind, symbol, interval, base)
        while (open_time := origin + index * step) <= self.now_ms:
            walk.upto(index)
            close, hf, lf, volume, trades, taker = walk.bars[index]
            open_ = walk.bars[index - 1][0] if index else base
            high, low = max(open_, close) * (1 + hf), min(open_, close) * (1 - lf)
            if kind in PRICE_KINDS:
                tail = ["0", open_time + step - 1, "0", step // 1000, "0", "0", "0"]
                yield [open_time, _num(open_), _num(high), _num(low), _num(close), *tail]
            else:
                quote = volume * close if market != "cm" else volume * 100 / close
                yield [
                    open_time,
                    _num(open_),
                    _num(high),
                    _num(low),
                    _num(close),
                    _num(volume),
                    open_time + step - 1,
                    _num(quote),
                    trades,
                    _num(volume * taker),
                    _num(quote * taker),
                    "0",
                ]
            index += 1

    def _minute_count(self, market: Market, spec: SymbolSpec, minute: int) -> int:
        """Return the number of aggregate trades in one minute (0 in quiet periods)."""
        start = minute * MINUTE_MS
        if any(lo <= start < hi for lo, hi in spec.quiet):
            return 0
        return int(_unit(self.seed, market, spec.symbol, minute) * (spec.max_trades_per_minute + 1))

    def _cumulative(self, market: Market, spec: SymbolSpec, upto_minute: int) -> list[int]:
        """Return cumulative trade counts per minute since listing (cum[i] = first id of i)."""
        cum = self._trade_cum.setdefault((market, spec.symbol), [0])
        first = spec.listed_at // MINUTE_MS
        while len(cum) <= upto_minute - first + 1:
            cum.append(cum[-1] + self._minute_count(market, spec, first + len(cum) - 1))
        return cum

    def _trades_of_minute(self, market: Market, spec: SymbolSpec, minute: int) -> list[Row]:
        """Return the aggregate-trade objects of one minute."""
        first = spec.listed_at // MINUTE_MS
        cum = self._cumulative(market, spec, minute)
        first_id, count = cum[minute - first], cum[minute - first + 1] - cum[minute - first]
        rng = random.Random(f"{self.seed}:{market}:{spec.symbol}:trades:{minute}")
        offsets = sorted(rng.randrange(MINUTE_MS) for _ in range(count))
        rows: list[Row] = []
        for n, offset in enumerate(offsets):
            agg_id = first_id + n
            row = {
                "a": agg_id,
                "p": _num(spec.base_price * (1 + rng.uniform(-0.01, 0.01))),
                "q": _num(rng.uniform(0.001, 2.0)),
                "f": agg_id * 3,
                "l": agg_id * 3 + 2,
                "T": minute * MINUTE_MS + offset,
                "m": rng.random() < 0.5,
            }
            if market == "spot":
                row["M"] = True
            rows.append(row)
        return rows

    def _agg_trades_from_time(self, market: Market, symbol: str, start_ms: int) -> Iterator[Row]:
        """Yield aggregate trades with T ≥ start_ms, ascending, up to now."""
        spec = self.spec(market, symbol)
        if spec is None:
            return
        minute = max(start_ms, spec.listed_at) // MINUTE_MS
        while minute * MINUTE_MS <= self.now_ms:
            for row in self._trades_of_minute(market, spec, minute):
                if start_ms <= row["T"] <= self.now_ms:
                    yield row
            minute += 1

    def agg_trades_from_id(self, market: Market, symbol: str, from_id: int) -> Iterator[Row]:
        """Yield (edited) aggregate trades with id ≥ from_id, ascending, up to now."""
        spec = self.spec(market, symbol)
        if spec is None:
            return iter(())
        first, last = spec.listed_at // MINUTE_MS, self.now_ms // MINUTE_MS
        cum = self._cumulative(market, spec, first)
        while cum[-1] <= from_id and first + len(cum) - 2 < last:
            cum = self._cumulative(market, spec, first + len(cum) - 1)
        minute = first + max(0, bisect.bisect_right(cum, from_id) - 1)
        start = minute * MINUTE_MS
        rows = (r for r in self._agg_trades_from_time(market, symbol, start) if r["a"] >= from_id)
        return self._edited(market, "aggTrades", symbol, rows)

    def _funding(self, market: Market, symbol: str, start_ms: int) -> Iterator[Row]:
        """Yield funding events (on the symbol's interval schedule) with time ≥ start_ms."""
        spec = self.spec(market, symbol)
        if spec is None:
            return
        time_ms = -(-spec.listed_at // HOUR_MS) * HOUR_MS
        while time_ms <= self.now_ms:
            hours = spec.funding_hours_at(time_ms)
            if time_ms % (hours * HOUR_MS) == 0 and time_ms >= start_ms:
                row = {
                    "symbol": symbol,
                    "fundingTime": time_ms,
                    "fundingRate": _num((_unit(self.seed, symbol, time_ms) - 0.4) * 0.001),
                }
                if market == "um":
                    row["markPrice"] = _num(spec.base_price)
                yield row
            time_ms += HOUR_MS

    def _open_interest(
        self, market: Market, symbol: str, period: str, start_ms: int, contract_type: str
    ) -> Iterator[Row]:
        """Yield openInterestHist objects for the last 30 days, aligned to `period`."""
        step = INTERVAL_MS[period]
        first = max(start_ms, self.now_ms - 30 * DAY_MS)
        time_ms = -(-first // step) * step
        while time_ms <= self.now_ms:
            value = 10_000 + 1_000 * _unit(self.seed, symbol, period, time_ms)
            row: dict[str, Any] = {
                "sumOpenInterest": _num(value),
                "sumOpenInterestValue": _num(value * 40_000),
            }
            if market == "um":
                row.update(symbol=symbol, timestamp=str(time_ms))  # the doc shows a string
            else:
                row.update(pair=symbol, contractType=contract_type, timestamp=time_ms)
            yield row
            time_ms += step


def row_time(kind: str, row: Row) -> int:
    """Return a row's own time: kline open time, trade T, fundingTime or OI timestamp."""
    if isinstance(row, list):
        return int(row[0])
    key = {"aggTrades": "T", "fundingRate": "fundingTime"}.get(kind, "timestamp")
    return int(row[key])
