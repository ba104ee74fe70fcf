"""Synthetic archive CSVs for quirks the real fixtures do not show (µs epochs, headers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def kline_rows(
    day: str, *, unit: str = "ms", minutes: int = 1440, price: float = 100.0
) -> list[str]:
    """Return 1m kline CSV lines for a day with epochs in `unit` (ms or us)."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    scale = 1000 if unit == "ms" else 1_000_000
    lines = []
    for minute in range(minutes):
        opened = start + timedelta(minutes=minute)
        open_epoch = int(opened.timestamp()) * scale
        close_epoch = open_epoch + 60 * scale - 1
        p = price + minute * 0.01
        lines.append(
            f"{open_epoch},{p:.2f},{p + 1:.2f},{p - 1:.2f},{p + 0.5:.2f},10.5,{close_epoch},"
            f"{10.5 * p:.4f},42,5.25,{5.25 * p:.4f},0"
        )
    return lines


def kline_csv(day: str, *, unit: str = "ms", header: bool = False, minutes: int = 1440) -> str:
    """Return a whole daily 1m kline CSV, optionally with the UM header row."""
    lines = kline_rows(day, unit=unit, minutes=minutes)
    if header:
        lines.insert(0, KLINE_HEADER)
    return "\n".join(lines) + "\n"
