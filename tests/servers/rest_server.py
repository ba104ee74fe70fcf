"""Local stand-in for the Binance REST APIs (spot, USDⓈ-M, COIN-M) over real HTTP.

It serves klines (and mark/index/premium variants), aggTrades, fundingRate, premiumIndex,
openInterest, openInterestHist and exchangeInfo from deterministic synthetic data (see
rest_data.py), with Binance's paging rules and limits (rest_endpoints.py). It counts weight
per market in a rolling window (configurable, so tests can use a fast "minute"), answers
`X-MBX-USED-WEIGHT-1M`, 429 with Retry-After past the limit, and 418 (a ban) to a client
that sends again inside a 429's Retry-After. Scripted faults answer the next N requests to
an endpoint with 429/418/451/5xx. Markets are told apart by path: `/api/v3` is spot,
`/fapi` UM, `/dapi` COIN-M; `{url}/spot`, `{url}/um` and `{url}/cm` are base URLs that
also route `/futures/data/...` to the right market.

    with RestServer(weight_window_seconds=1.0, weight_limits={"spot": 60}) as server:
        settings = Settings(**server.settings_overrides())
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from tests.servers import rest_endpoints
from tests.servers.lifecycle import StartStop
from tests.servers.rest_data import MarketData, SymbolSpec, ms

if TYPE_CHECKING:
    from tests.servers.rest_data import Market

_FAMILY: dict[str, Market] = {"/api/v3/": "spot", "/fapi/v1/": "um", "/dapi/v1/": "cm"}
_PREFIXES: dict[str, Market] = {"/spot": "spot", "/um": "um", "/cm": "cm"}
DEFAULT_NOW = ms("2024-06-01")


def default_symbols() -> dict[Market, list[SymbolSpec]]:
    """Return the stand-in's default listings: spot BTCUSDT/ETHUSDT, UM BTCUSDT, CM BTCUSD_PERP."""
    return {
        "spot": [
            SymbolSpec("BTCUSDT", "BTCUSDT"),
            SymbolSpec("ETHUSDT", "ETHUSDT", base_price=2_500.0),
        ],
        "um": [SymbolSpec("BTCUSDT", "BTCUSDT", funding_schedule=[(ms("2024-03-01"), 4)])],
        "cm": [SymbolSpec("BTCUSD_PERP", "BTCUSD", listed_at=ms("2022-06-01"))],
    }


@dataclass(frozen=True)
class Fault:
    """One scripted answer: a status, an optional Retry-After and a delay before answering."""

    status: int
    retry_after: float | None = None
    delay: float = 0.0


class RequestRecord(NamedTuple):
    """One request as the stand-in saw it."""

    market: str
    endpoint: str
    params: dict[str, str]
    status: int
    weight: int
    used_weight: int
    at: float


class _Budget:
    """Rolling-window weight count, 429 penalty window and 418 ban of one market."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.log: deque[tuple[float, int]] = deque()
        self.used = 0
        self.max_used = 0
        self.penalty_until = 0.0
        self.banned_until = 0.0

    def expire(self, now: float, window: float) -> None:
        """Forget weight older than one window."""
        while self.log and self.log[0][0] <= now - window:
            self.used -= self.log.popleft()[1]


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that ignores clients hanging up mid-request."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet about connection resets; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class RestServer(StartStop):
    """Threaded HTTP stand-in for api.binance.com, fapi.binance.com and dapi.binance.com."""

    def __init__(
        self,
        *,
        seed: int = 7,
        now_ms: int = DEFAULT_NOW,
        symbols: dict[Market, list[SymbolSpec]] | None = None,
        weight_limits: dict[Market, int] | None = None,
        weight_window_seconds: float = 60.0,
        ban_seconds: float = 120.0,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure the stand-in; `start` (or `with`) binds a free port."""
        self.data = MarketData(symbols or default_symbols(), seed=seed, now_ms=now_ms)
        limits = {"spot": 6000, "um": 2400, "cm": 2400, **(weight_limits or {})}
        self.window = weight_window_seconds
        self.ban_seconds = ban_seconds
        self.host = host
        self._budgets: dict[str, _Budget] = {m: _Budget(limit) for m, limit in limits.items()}
        self._faults: dict[str, deque[Fault]] = {}
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the root URL, e.g. http://127.0.0.1:PORT."""
        if self._httpd is None:
            raise RuntimeError("RestServer is not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def base_url(self, market: Market) -> str:
        """Return the base URL a client uses for a market, e.g. http://127.0.0.1:PORT/um."""
        return f"{self.url}/{market}"

    def settings_overrides(self) -> dict[str, str]:
        """Return Settings fields pointing the three REST markets at this stand-in."""
        return {f"binance_{m}_api_url": self.base_url(m) for m in ("spot", "um", "cm")}

    def add_fault(
        self,
        endpoint: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` requests to `endpoint` with `status`.

        `endpoint` is a path ("/fapi/v1/klines", any market prefix removed), an endpoint
        name for every market ("klines") or "*" for any request; the most specific wins.
        """
        with self._lock:
            self._faults.setdefault(endpoint, deque()).extend(
                [Fault(status, retry_after, delay)] * times
            )

    @property
    def requests(self) -> list[RequestRecord]:
        """Return a snapshot of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def statuses(self) -> list[int]:
        """Return the status of every request so far."""
        return [r.status for r in self.requests]

    def max_used_weight(self, market: Market) -> int:
        """Return the highest weight ever counted in one window for `market`."""
        with self._lock:
            return self._budgets[market].max_used

    def start(self) -> RestServer:
        """Bind a free port and serve in a daemon thread."""
        self._httpd = _HTTPServer((self.host, 0), _Handler)
        self._httpd.app = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
        self._httpd = self._thread = None

    # ---- request handling ------------------------------------------------------------------

    def _retry_after(self, seconds: float) -> str:
        """Format Retry-After: whole seconds for a real minute, ms precision for a fast one."""
        if self.window >= 60:
            return str(max(1, math.ceil(seconds)))
        return f"{math.ceil(max(seconds, 0.001) * 1000) / 1000:.3f}"

    def handle(self, path: str, query: str) -> tuple[int, dict[str, str], Any]:
        """Answer one GET: (status, extra headers, JSON payload)."""
        market, endpoint, bare_path = _route(path)
        params = dict(parse_qsl(query))
        if market is None:
            return 404, {}, {"code": -1, "msg": f"no route for {path}"}
        weight = rest_endpoints.weight(market, endpoint, params)
        now = time.monotonic()
        with self._lock:
            budget = self._budgets[market]
            budget.expire(now, self.window)
            status, headers, payload, fault = self._gate(
                (bare_path, endpoint, "*"), budget, weight, now
            )
            if status == 200:
                budget.log.append((now, weight))
                budget.used += weight
                budget.max_used = max(budget.max_used, budget.used)
            used = budget.used
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if status == 200:
            try:
                payload = rest_endpoints.dispatch(self.data, market, endpoint, params, budget.limit)
            except rest_endpoints.ApiError as exc:
                status, payload = exc.status, {"code": exc.code, "msg": exc.msg}
        headers.update({"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)})
        with self._lock:
            self._log.append(RequestRecord(market, endpoint, params, status, weight, used, now))
        return status, headers, payload

    def _gate(
        self, fault_keys: tuple[str, ...], budget: _Budget, weight: int, now: float
    ) -> tuple[int, dict[str, str], Any, Fault | None]:
        """Decide ban, penalty, scripted fault or weight limit before serving (lock held)."""
        if now < budget.banned_until:
            return (
                418,
                {"Retry-After": self._retry_after(budget.banned_until - now)},
                {"code": -1003, "msg": "Way too many requests; IP banned."},
                None,
            )
        if now < budget.penalty_until:
            budget.banned_until = now + self.ban_seconds
            return (
                418,
                {"Retry-After": self._retry_after(self.ban_seconds)},
                {"code": -1003, "msg": "Way too many requests; IP banned."},
                None,
            )
        queue = next((self._faults[k] for k in fault_keys if self._faults.get(k)), None)
        if queue:
            fault = queue.popleft()
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = self._retry_after(fault.retry_after)
                if fault.status == 429:
                    budget.penalty_until = now + fault.retry_after
                if fault.status == 418:
                    budget.banned_until = now + fault.retry_after
            if fault.status == 200:
                return 200, headers, None, fault
            return (
                fault.status,
                headers,
                {"code": -1000 - fault.status % 100, "msg": f"scripted {fault.status}"},
                fault,
            )
        if budget.used + weight > budget.limit:
            freed, wait = 0, self.window
            for stamp, spent in budget.log:
                freed += spent
                if budget.used + weight - freed <= budget.limit:
                    wait = stamp + self.window - now
                    break
            budget.penalty_until = now + wait
            return (
                429,
                {"Retry-After": self._retry_after(wait)},
                {"code": -1003, "msg": "Too many requests; current limit is exceeded."},
                None,
            )
        return 200, {}, None, None


def _route(path: str) -> tuple[Market | None, str, str]:
    """Return (market, endpoint name, path without market prefix); market None if unknown."""
    forced: Market | None = None
    for prefix, market in _PREFIXES.items():
        if path.startswith(prefix + "/"):
            forced, path = market, path[len(prefix) :]
            break
    endpoint = path.rstrip("/").rsplit("/", 1)[-1]
    if path.startswith("/futures/data/"):
        return forced or "um", endpoint, path
    for family, market in _FAMILY.items():
        if path.startswith(family) and forced in (None, market):
            return market, endpoint, path
    return None, "", path


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler that delegates to RestServer.handle."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet."""

    def do_GET(self) -> None:
        """Serve one request."""
        parts = urlsplit(self.path)
        app: RestServer = self.server.app  # type: ignore[attr-defined]
        status, headers, payload = app.handle(parts.path, parts.query)
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
