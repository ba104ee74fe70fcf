"""Turn Binance WebSocket market-stream events into silver-layout rows (pure functions).

Handled events: `kline` (closed bars only, `k.x` true), `aggTrade`, `markPriceUpdate`
(single or `!markPrice@arr` arrays) and `forceOrder` (liquidations). Combined-stream frames
`{"stream": ..., "data": ...}` are unwrapped; anything else yields no rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from crypto_lakehouse.sources.binance import _silver

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import polars as pl

    from crypto_lakehouse.sources.binance._silver import Layout, Market

StreamKind = Literal["klines", "agg_trades", "mark_price", "liquidations"]
Row = dict[str, Any]


def layout_of(market: Market, kind: StreamKind) -> Layout:
    """Return the silver layout of a stream kind in a market (COIN-M klines differ)."""
    if kind == "klines":
        return _silver.CM_KLINES if market == "cm" else _silver.KLINES
    if kind == "agg_trades":
        return _silver.SPOT_AGG_TRADES if market == "spot" else _silver.AGG_TRADES
    if kind == "mark_price":
        return _silver.MARK_PRICE
    return _silver.LIQUIDATIONS


def unwrap(message: Any) -> tuple[str | None, Any]:
    """Return (stream name, payload) of a combined-stream frame, or (None, frame) if raw."""
    if isinstance(message, Mapping) and "stream" in message and "data" in message:
        return str(message["stream"]), message["data"]
    return None, message


def _kline_row(market: Market, event: Mapping[str, Any]) -> Row | None:
    """Return the silver row of a closed kline event, or None while the bar is open."""
    k = event["k"]
    if not k.get("x"):
        return None
    volume_7, volume_10 = (
        ("base_volume", "taker_buy_base_volume")
        if market == "cm"
        else ("quote_volume", "taker_buy_quote_volume")
    )
    return {
        "symbol": k["s"],
        "interval": k["i"],
        "open_time": k["t"],
        "open": k["o"],
        "high": k["h"],
        "low": k["l"],
        "close": k["c"],
        "volume": k["v"],
        "close_time": k["T"],
        volume_7: k["q"],
        "trades": k["n"],
        "taker_buy_volume": k["V"],
        volume_10: k["Q"],
    }


def _agg_trade_row(event: Mapping[str, Any]) -> Row:
    """Return the silver row of an aggTrade event (`M` becomes is_best_match when present)."""
    return {
        "symbol": event["s"],
        "agg_trade_id": event["a"],
        "price": event["p"],
        "quantity": event["q"],
        "first_trade_id": event["f"],
        "last_trade_id": event["l"],
        "transact_time": event["T"],
        "is_buyer_maker": event["m"],
        "is_best_match": event.get("M"),
    }


def _mark_price_row(event: Mapping[str, Any]) -> Row:
    """Return the silver row of a markPriceUpdate event (delivery contracts: nulls)."""
    return {
        "symbol": event["s"],
        "event_time": event["E"],
        "mark_price": event["p"],
        "index_price": event.get("i"),
        "estimated_settle_price": event.get("P"),
        "funding_rate": event.get("r"),
        "next_funding_time": event.get("T") or None,
    }


def _liquidation_row(event: Mapping[str, Any]) -> Row:
    """Return the liquidation-snapshot row of a forceOrder event."""
    o = event["o"]
    return {
        "symbol": o["s"],
        "time": o["T"],
        "side": o["S"],
        "order_type": o["o"],
        "time_in_force": o["f"],
        "original_quantity": o["q"],
        "price": o["p"],
        "average_price": o["ap"],
        "order_status": o["X"],
        "last_fill_quantity": o["l"],
        "accumulated_fill_quantity": o["z"],
    }


def event_rows(market: Market, payload: Any) -> list[tuple[StreamKind, Row]]:
    """Return the silver rows of one event payload (arrays are flattened).

    Args:
        market: "spot", "um" or "cm"; decides the kline layout.
        payload: The decoded event (already unwrapped from a combined frame).

    Returns:
        (kind, row) pairs; empty for open klines, subscription replies and unknown events.
    """
    if isinstance(payload, list):
        return [pair for item in payload for pair in event_rows(market, item)]
    if not isinstance(payload, Mapping):
        return []
    kind = payload.get("e")
    if kind == "kline":
        row = _kline_row(market, payload)
        return [("klines", row)] if row is not None else []
    if kind not in _ROW_OF_EVENT:
        return []
    stream_kind, row_of = _ROW_OF_EVENT[kind]
    return [(stream_kind, row_of(payload))]


#: Event type -> (stream kind, row builder), for every event but klines (market-dependent).
_ROW_OF_EVENT: dict[str, tuple[StreamKind, Callable[[Mapping[str, Any]], Row]]] = {
    "aggTrade": ("agg_trades", _agg_trade_row),
    "markPriceUpdate": ("mark_price", _mark_price_row),
    "forceOrder": ("liquidations", _liquidation_row),
}


def parse_frame(market: Market, text: str) -> tuple[str | None, list[tuple[StreamKind, Row]]]:
    """Decode one WebSocket text frame into (stream name, rows).

    Raises:
        ValueError: If the frame is not JSON or an event lacks a required field.
    """
    stream, payload = unwrap(json.loads(text))
    try:
        return stream, event_rows(market, payload)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {stream or 'stream'} event: missing {exc}") from exc


def rows_frame(market: Market, kind: StreamKind, rows: Sequence[Row]) -> pl.DataFrame:
    """Build the silver DataFrame of rows of one kind (missing keys become nulls)."""
    layout = layout_of(market, kind)
    columns = {name: [row.get(name) for row in rows] for name, _ in layout}
    return _silver.build_frame(layout, columns, len(rows))
