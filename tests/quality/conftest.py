"""Read the real archive fixtures into silver-shaped frames, and generate synthetic ones."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "binance-vision" / "data"
SPOT_1M = DATA / "spot" / "daily" / "klines" / "BTCUSDT" / "1m"
CM_AGG = DATA / "futures" / "cm" / "daily" / "aggTrades" / "BTCUSD_PERP"
UM_FUNDING = DATA / "futures" / "um" / "monthly" / "fundingRate" / "BTCUSDT"
REAL_DAYS = (date(2020, 1, 1), date(2020, 1, 2), date(2020, 1, 3))
TIME = pl.Datetime("us", "UTC")

KLINE_CSV = {
    "open_time": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "close_time": pl.Int64,
    "quote_volume": pl.Float64,
    "trades": pl.Int64,
    "taker_buy_volume": pl.Float64,
    "taker_buy_quote_volume": pl.Float64,
    "ignore": pl.Utf8,
}
AGG_CSV = {
    "agg_trade_id": pl.Int64,
    "price": pl.Float64,
    "quantity": pl.Float64,
    "first_trade_id": pl.Int64,
    "last_trade_id": pl.Int64,
    "transact_time": pl.Int64,
    "is_buyer_maker": pl.Utf8,
}
FUNDING_CSV = {
    "calc_time": pl.Int64,
    "funding_interval_hours": pl.Int64,
    "funding_rate": pl.Float64,
}


def read_zip_csv(path: Path, schema: dict[str, pl.DataType], *, has_header: bool) -> pl.DataFrame:
    """Read the CSV member of an archive zip with an explicit schema, mapped by position.

    A header row, when the file has one, is skipped rather than trusted: the archive's header
    names are not reliable (COIN-M), so columns are named by position from `schema`.
    """
    with zipfile.ZipFile(path) as archive:
        (member,) = [name for name in archive.namelist() if name.endswith(".csv")]
        body = archive.read(member)
    skip = 1 if has_header else 0
    return pl.read_csv(io.BytesIO(body), has_header=False, skip_rows=skip, schema=schema)


def ms_to_time(column: str) -> pl.Expr:
    """Return an epoch-ms Int64 column as silver's µs UTC timestamp."""
    return (pl.col(column) * 1_000).cast(TIME)


def lineage(key: str) -> list[pl.Expr]:
    """Return the lineage columns of archive rows loaded from `key`."""
    return [
        pl.lit("archive").alias("_source"),
        pl.lit(key).alias("_bronze_key"),
        pl.lit(1, dtype=pl.Int64).alias("_revision"),
        pl.lit(datetime(2026, 1, 1, tzinfo=UTC)).cast(TIME).alias("_ingested_at"),
        pl.lit(False).alias("_provisional"),
    ]


def spot_kline_path(day: date) -> Path:
    """Return the fixture zip of BTCUSDT 1m klines for a day."""
    return SPOT_1M / f"BTCUSDT-1m-{day.isoformat()}.zip"


def read_spot_klines(day: date) -> pl.DataFrame:
    """Return one real day of BTCUSDT 1m klines in the silver schema (no header, ms)."""
    path = spot_kline_path(day)
    raw = read_zip_csv(path, KLINE_CSV, has_header=False)
    return raw.select(
        pl.lit("BTCUSDT").alias("symbol"),
        pl.lit("1m").alias("interval"),
        ms_to_time("open_time"),
        "open",
        "high",
        "low",
        "close",
        "volume",
        ms_to_time("close_time"),
        "quote_volume",
        "trades",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        *lineage(path.name),
    )


def read_cm_agg_trades() -> pl.DataFrame:
    """Return the real COIN-M BTCUSD_PERP aggTrades day in the silver schema (header row)."""
    path = CM_AGG / "BTCUSD_PERP-aggTrades-2026-05-08.zip"
    raw = read_zip_csv(path, AGG_CSV, has_header=True)
    return raw.select(
        pl.lit("BTCUSD_PERP").alias("symbol"),
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        ms_to_time("transact_time"),
        (pl.col("is_buyer_maker").str.to_lowercase() == "true").alias("is_buyer_maker"),
        *lineage(path.name),
    )


def read_um_funding() -> pl.DataFrame:
    """Return the real USD-M BTCUSDT funding month 2026-04 in the silver schema (header row)."""
    path = UM_FUNDING / "BTCUSDT-fundingRate-2026-04.zip"
    raw = read_zip_csv(path, FUNDING_CSV, has_header=True)
    return raw.select(
        pl.lit("BTCUSDT").alias("symbol"),
        ms_to_time("calc_time"),
        "funding_interval_hours",
        "funding_rate",
        *lineage(path.name),
    )


def make_klines(
    start: datetime, prices: list[float], *, symbol: str = "TESTUSDT", volume: float = 1.0
) -> pl.DataFrame:
    """Generate consistent 1m klines: bar i opens at prices[i] and closes at prices[i+1]."""
    rows = []
    for i in range(len(prices) - 1):
        open_, close = prices[i], prices[i + 1]
        open_time = start + timedelta(minutes=i)
        rows.append(
            {
                "symbol": symbol,
                "interval": "1m",
                "open_time": open_time,
                "open": open_,
                "high": max(open_, close) + 0.5,
                "low": min(open_, close) - 0.5,
                "close": close,
                "volume": volume,
                "close_time": open_time + timedelta(seconds=59.999),
                "quote_volume": volume * close,
                "trades": 3,
                "taker_buy_volume": volume / 2,
                "taker_buy_quote_volume": volume / 2 * close,
            }
        )
    frame = pl.DataFrame(rows).with_columns(pl.col("open_time", "close_time").cast(TIME))
    return frame.with_columns(*lineage("generated"))


@pytest.fixture(scope="session")
def real_klines() -> pl.DataFrame:
    """Return the three real BTCUSDT 1m days 2020-01-01..03 concatenated."""
    return pl.concat([read_spot_klines(day) for day in REAL_DAYS])


@pytest.fixture(scope="session")
def cm_agg_trades() -> pl.DataFrame:
    """Return the real COIN-M aggTrades day 2026-05-08."""
    return read_cm_agg_trades()


@pytest.fixture(scope="session")
def um_funding() -> pl.DataFrame:
    """Return the real USD-M funding month 2026-04."""
    return read_um_funding()
