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


# One or two representative rows per archive data type, as Binance writes them
# (binance-archive.md §2). `{t}` is an epoch in ms inside the file's day, `{dt}` its text form.
SAMPLE_ROWS: dict[str, tuple[str | None, list[str]]] = {
    "spot/klines": (None, [
        "{t},7195.24,7196.25,7183.14,7186.68,51.64,{t2},371233.51,493,19.59,140888.41,0"]),
    "spot/aggTrades": (None, ["1,0.2,50.0,10,12,{t},False,True",
                              "2,0.3,5.0,13,13,{t2},True,True"]),
    "spot/trades": (None, ["1,0.2,50.0,10.0,{t},False,True", "2,0.3,5.0,1.5,{t2},True,True"]),
    "um/klines": ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                  "taker_buy_volume,taker_buy_quote_volume,ignore",
                  ["{t},1,2,0.5,1.5,10,{t2},15,3,5,7.5,0"]),
    "aggTrades": ("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
                  "is_buyer_maker",
                  ["1,79972.8,542.0,10,14,{t},false", "2,79973,1.0,15,15,{t2},true"]),
    "trades": ("id,price,qty,quote_qty,time,is_buyer_maker",
               ["1,79972.8,542.0,0.68,{t},false", "2,79973,1.0,0.001,{t2},true"]),
    "fundingRate": ("calc_time,funding_interval_hours,last_funding_rate",
                    ["{t},8,-0.00003449", "{t2},8,0.0001"]),
    "bookTicker": ("update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,"
                   "transaction_time,event_time",
                   ["1,100.1,2,100.2,3,{t},{t}", "2,100.1,1,100.3,3,{t2},{t2}"]),
    "bookDepth": ("timestamp,percentage,depth,notional",
                  ["{dt},-5,100.5,1000.25", "{dt},5,90.5,900.25", "{dt2},-5,101.5,1010.25"]),
    "metrics": ("create_time,symbol,sum_open_interest,sum_open_interest_value,"
                "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
                "count_long_short_ratio,sum_taker_long_short_vol_ratio",
                ["{dt},{symbol},100.5,1000.5,1.1,1.2,1.3,1.4", "{dt2},{symbol},101.5,1010.5,,,,"]),
    "liquidationSnapshot": ("time,side,order_type,time_in_force,original_quantity,price,"
                            "average_price,order_status,last_fill_quantity,"
                            "accumulated_fill_quantity",
                            ["{t},SELL,LIMIT,IOC,1,100,101,FILLED,1,1",
                             "{t},SELL,LIMIT,IOC,1,100,101,FILLED,1,1",
                             "{t2},BUY,LIMIT,IOC,2,99,98,FILLED,2,2",
                             "{t2},BUY,LIMIT,IOC,2,99,98,FILLED,2,2"]),
    "priceKlines": ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                    "taker_buy_volume,taker_buy_quote_volume,ignore",
                    ["{t},1,2,0.5,1.5,0,{t2},0,60,0,0,0"]),
    "BVOLIndex": ("calc_time,symbol,base_asset,quote_asset,index_value",
                  ["{t},{symbol},BTC,USDT,48.5", "{t2},{symbol},BTC,USDT,48.7"]),
    "EOHSummary": ("date,hour,symbol,underlying,type,strike,open,high,low,close,volume_contracts,"
                   "volume_usdt,best_bid_price,best_ask_price,best_bid_qty,best_ask_qty,best_buy_iv,"
                   "best_sell_iv,mark_price,mark_iv,delta,gamma,vega,theta,openinterest_contracts,"
                   "openinterest_usdt",
                   ["{d},0,BTC-231229-30000-C,BTCUSDT,C,231229-30000,1,2,0.5,1.5,3,4,1,2,1,1,"
                    ",0E-8,1.5,0.5,0.4,0.01,0.2,-0.1,10,100",
                    "{d},1,BTC-231229-30000-C,BTCUSDT,C,231229-30000,1,2,0.5,1.5,3,4,"
                    "\"\",\"\",1,1,,,1.5,0.5,0.4,0.01,0.2,-0.1,10,100"]),
}  # fmt: skip


def sample_csv(market: str, data_type: str, symbol: str, day: str) -> tuple[str, int]:
    """Return a sample CSV for a dataset and the number of distinct rows it holds."""
    key = f"{market}/{data_type}"
    if key not in SAMPLE_ROWS:
        price_klines = data_type.endswith("Klines") and data_type != "klines"
        key = "priceKlines" if price_klines else data_type
    if market == "cm" and data_type == "klines":
        key = "um/klines"
    header, rows = SAMPLE_ROWS[key]
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    t = int(start.timestamp() * 1000)
    values = {
        "t": t, "t2": t + 59_999, "dt": start.strftime("%Y-%m-%d %H:%M:%S"),
        "dt2": (start + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S"),
        "d": start.strftime("%Y-%m-%d"), "symbol": symbol,
    }  # fmt: skip
    lines = [row.format(**values) for row in rows]
    if header and market != "spot":
        lines.insert(0, header)
    distinct = len(set(rows))
    return "\n".join(lines) + "\n", distinct
