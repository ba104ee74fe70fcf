"""Reconciliation over the lake: klines vs aggTrades, daily vs monthly, archive vs REST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pytest

from crypto_lakehouse.ingest.run import IngestRequest
from crypto_lakehouse.quality.reconcile.lake import (
    ARCHIVE_VS_REST,
    DAILY_VS_MONTHLY,
    KLINES_VS_AGG,
    reconcile_tables,
)
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.delta import read_frame
from crypto_lakehouse.storage.root import LakeRoot
from tests.quality.lake_support import SPOT_REQUEST, real_lines, run_ingest
from tests.servers.archive_files import publish

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings

DAY = date(2021, 3, 1)
AGG_KEY = "data/spot/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2021-03-01.zip"
KLINE_KEY = "data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2021-03-01.zip"
TRADE_MINUTES = 30


def trades_and_klines() -> tuple[list[list[object]], list[str]]:
    """Return agreeing aggTrades rows and 1m kline CSV lines for one day (trades in 30 min)."""
    start = datetime(2021, 3, 1, tzinfo=UTC)
    trades: list[list[object]] = []
    klines: list[str] = []
    agg_id, trade_id = 1000, 5000
    close = 100.0
    for minute in range(1440):
        opened = start + timedelta(minutes=minute)
        ms = int(opened.timestamp() * 1000)
        bar = []
        if minute < TRADE_MINUTES:
            for k in range(3):
                price = 100.0 + (minute % 7) * 0.5 + k * 0.25
                count = k + 1
                bar.append([agg_id, price, 0.5 + k, trade_id, trade_id + count - 1,
                            ms + k * 1000, k == 1, True])  # fmt: skip
                agg_id += 1
                trade_id += count
        trades += bar
        if bar:
            prices = [float(t[1]) for t in bar]  # type: ignore[arg-type]
            volume = sum(float(t[2]) for t in bar)  # type: ignore[arg-type]
            quote = sum(float(t[1]) * float(t[2]) for t in bar)  # type: ignore[arg-type]
            taker = [t for t in bar if not t[6]]
            taker_volume = sum(float(t[2]) for t in taker)  # type: ignore[arg-type]
            taker_quote = sum(float(t[1]) * float(t[2]) for t in taker)  # type: ignore[arg-type]
            count = sum(int(t[4]) - int(t[3]) + 1 for t in bar)  # type: ignore[call-overload]
            o, h, lo, c = prices[0], max(prices), min(prices), prices[-1]
            close = c
        else:
            o = h = lo = c = close
            volume = quote = taker_volume = taker_quote = 0.0
            count = 0
        klines.append(f"{ms},{o!r},{h!r},{lo!r},{c!r},{volume!r},{ms + 59_999},{quote!r},"
                      f"{count},{taker_volume!r},{taker_quote!r},0")  # fmt: skip
    return trades, klines


def trade_csv(trades: list[list[object]]) -> str:
    """Return aggTrades rows as archive CSV text (spot spelling of booleans)."""
    return "".join(",".join(repr(v) if isinstance(v, float) else str(v) for v in row) + "\n"
                   for row in trades)  # fmt: skip


def ingest_pair(root: str, settings: Settings, trades: list[list[object]], klines: list[str],
                archive_root: Path) -> None:  # fmt: skip
    """Publish and ingest one day of ETHUSDT aggTrades and 1m klines."""
    publish(archive_root, AGG_KEY, trade_csv(trades))
    publish(archive_root, KLINE_KEY, "\n".join(klines) + "\n")
    for data_type, interval in (("aggTrades", None), ("klines", "1m")):
        request = IngestRequest("spot", data_type, ("ETHUSDT",), interval, DAY, DAY)
        assert run_ingest(request, settings).ok


def test_agreeing_klines_and_trades_reconcile_with_zero_mismatches(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A generated pair that agrees gives no mismatch and records 1,440 compared bars."""
    root = str(tmp_path / "lake")
    trades, klines = trades_and_klines()
    ingest_pair(root, settings_for(root), trades, klines, archive_root)
    result = reconcile_tables(LakeRoot.at(root), klines_table="spot_klines",
                              agg_table="spot_agg_trades", symbols=["ETHUSDT"], start=DAY,
                              end=DAY)  # fmt: skip
    assert result.count(KLINES_VS_AGG) == 0
    runs = result.runs.filter(pl.col("check") == KLINES_VS_AGG)
    assert runs.select("compared_rows", "mismatches").row(0) == (1440, 0)
    stored = QueryEngine(LakeRoot.at(root)).sql("SELECT count(*) FROM gold.reconciliation_runs")
    assert stored.item() >= 1


def test_one_altered_trade_is_reported_with_both_values(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """Raising one trade's price shows the published and the rebuilt high of its minute."""
    root = str(tmp_path / "lake")
    trades, klines = trades_and_klines()
    trades[10][1] = 250.0
    ingest_pair(root, settings_for(root), trades, klines, archive_root)
    lake = LakeRoot.at(root)
    for _ in range(2):
        result = reconcile_tables(lake, klines_table="spot_klines", agg_table="spot_agg_trades",
                                  symbols=["ETHUSDT"], start=DAY, end=DAY)  # fmt: skip
    found = result.mismatches.filter(pl.col("check") == KLINES_VS_AGG)
    high = found.filter(pl.col("column") == "high").row(0, named=True)
    assert high["key"] == "interval=1m open_time=2021-03-01T00:03:00.000000Z"
    assert high["right_value"] == 250.0
    assert high["left_value"] == 102.0
    assert set(found.get_column("column")) == {"high", "quote_volume"}
    stored = QueryEngine(lake).sql(
        "SELECT count(*) FROM gold.reconciliation WHERE \"check\" = 'klines_vs_agg_trades'"
    )
    assert stored.item() == found.height


@pytest.mark.req("R5.3", "R1.1")
def test_daily_and_monthly_files_are_compared_from_bronze(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A monthly file differing from the daily one in one close is reported once."""
    lines = [line for day in ("2020-01-01", "2020-01-02", "2020-01-03")
             for line in real_lines(archive_root, day)]  # fmt: skip
    fields = lines[2000].split(",")
    fields[4] = "9999.0"
    lines[2000] = ",".join(fields)
    monthly = "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01.zip"
    publish(archive_root, monthly, "\n".join(lines) + "\n")
    root = str(tmp_path / "lake")
    settings = settings_for(root)
    assert run_ingest(SPOT_REQUEST, settings).ok
    monthly_request = IngestRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1),
                                    date(2020, 1, 3), period="monthly")  # fmt: skip
    assert run_ingest(monthly_request, settings).ok
    result = reconcile_tables(LakeRoot.at(root), klines_table="spot_klines", agg_table=None,
                              symbols=["BTCUSDT"], start=date(2020, 1, 1),
                              end=date(2020, 1, 3))  # fmt: skip
    found = result.mismatches.filter(pl.col("check") == DAILY_VS_MONTHLY)
    assert found.height == 1
    row = found.row(0, named=True)
    assert (row["column"], row["right_value"], row["day"]) == ("close", 9999.0, date(2020, 1, 2))
    assert row["left_value"] == float(real_lines(archive_root, "2020-01-02")[560].split(",")[4])
    compared = result.runs.filter(pl.col("check") == DAILY_VS_MONTHLY)
    assert compared.get_column("compared_rows").sum() == 4320


@pytest.mark.req("R5.3", "R3.3")
def test_archive_rows_are_compared_with_rest_rows(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """REST rows for the same minutes that differ in one volume are reported with both values."""
    root = str(tmp_path / "lake")
    assert run_ingest(SPOT_REQUEST, settings_for(root)).ok
    lake = LakeRoot.at(root)
    archive = read_frame(lake, "silver", "spot_klines").filter(
        pl.col("open_time").dt.date() == date(2020, 1, 2)
    )
    bumped = pl.when(pl.col("index") == 7).then(pl.col("volume") + 1).otherwise(pl.col("volume"))
    rest = archive.sort("open_time").with_row_index().with_columns(volume=bumped).drop("index")
    result = reconcile_tables(lake, klines_table="spot_klines", agg_table=None,
                              symbols=["BTCUSDT"], start=date(2020, 1, 1), end=date(2020, 1, 3),
                              rest=rest)  # fmt: skip
    found = result.mismatches.filter(pl.col("check") == ARCHIVE_VS_REST)
    assert found.select("column", "key").rows() == [
        ("volume", "interval=1m open_time=2020-01-02T00:07:00.000000Z")
    ]
    row = found.row(0, named=True)
    assert row["right_value"] == row["left_value"] + 1
    compared = result.runs.filter(pl.col("check") == ARCHIVE_VS_REST)
    assert compared.get_column("compared_rows").sum() == 1440
