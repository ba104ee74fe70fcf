"""Gold build through the real pipeline: bars, summaries, funding, basis, OI; incremental."""

from __future__ import annotations

import csv
import dataclasses
import io
import zipfile
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pytest

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.gold.build import build_gold
from crypto_lakehouse.ingest.run import IngestRequest
from crypto_lakehouse.quality.refresh.run import refresh_quality
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage import partitions
from crypto_lakehouse.storage.root import LakeRoot
from tests.quality.lake_support import (
    SPOT_REQUEST,
    real_lines,
    republish,
    run_ingest,
    spot_key,
)
from tests.servers.archive_files import publish
from tests.servers.synthetic import kline_csv

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings

HOUR_MS = 3_600_000
GOLD_TABLES = ("bars_1h", "daily_summary", "_build_state")


def sql(root: str, query: str) -> pl.DataFrame:
    """Run SQL over the lake."""
    return QueryEngine(LakeRoot.at(root)).sql(query)


def hourly_from_csv(archive_root: Path) -> list[tuple[datetime, float, float, float, float, float]]:
    """Compute hourly OHLCV of the three real days from the raw CSV with plain Python."""
    hours: dict[int, list[float]] = {}
    for day in ("2020-01-01", "2020-01-02", "2020-01-03"):
        with zipfile.ZipFile(archive_root / spot_key(day)) as archive:
            text = archive.read(archive.namelist()[0]).decode()
        for row in csv.reader(io.StringIO(text)):
            hour = int(row[0]) // HOUR_MS * HOUR_MS
            o, h, lo, c, v = (float(x) for x in row[1:6])
            bar = hours.setdefault(hour, [o, h, lo, c, 0.0])
            bar[1], bar[2], bar[3] = max(bar[1], h), min(bar[2], lo), c
            bar[4] += v
    return [
        (datetime.fromtimestamp(hour / 1000, UTC), *(round(x, 8) for x in bar))  # type: ignore[misc]
        for hour, bar in sorted(hours.items())
    ]


def versions(root: str) -> dict[str, int | None]:
    """Return the Delta version of each gold table the spot build writes."""
    lake = LakeRoot.at(root)
    return {name: partitions.table_version(lake, "gold", name) for name in GOLD_TABLES}


@pytest.mark.req("R1.1")
def test_hourly_bars_equal_an_independent_computation(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """1m → 1h of the three real days gives 72 complete bars equal to plain Python's."""
    root = str(tmp_path / "lake")
    run_ingest(SPOT_REQUEST, settings_for(root))
    result = build_gold(LakeRoot.at(root), table="spot_klines")
    assert result.days("bars_1h@0m") == 3
    bars = sql(root, "SELECT open_time, open, high, low, close, round(volume, 8) AS v, complete "
               "FROM gold.bars_1h ORDER BY open_time")  # fmt: skip
    assert bars.height == 72
    assert bars["complete"].all()
    assert bars.drop("complete").rows() == hourly_from_csv(archive_root)
    summary = sql(root, "SELECT day, input_rows, complete, quality_score FROM gold.daily_summary "
                  "ORDER BY day")  # fmt: skip
    assert summary.rows() == [(date(2020, 1, d), 1440, True, 100.0) for d in (1, 2, 3)]


def test_unchanged_rebuild_writes_no_new_version(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """Building twice over unchanged silver leaves every gold Delta version where it was."""
    root = str(tmp_path / "lake")
    run_ingest(SPOT_REQUEST, settings_for(root))
    lake = LakeRoot.at(root)
    build_gold(lake, table="spot_klines")
    before = versions(root)
    again = build_gold(lake, table="spot_klines")
    assert not again.written
    assert versions(root) == before


@pytest.mark.req("R1.1")
def test_changed_day_and_new_scores_rebuild_only_what_they_feed(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """A re-published day rebuilds that day; new quality scores rebuild only the summaries."""
    root = str(tmp_path / "lake")
    lake = LakeRoot.at(root)
    settings = settings_for(root)
    without_quality = dataclasses.replace(SPOT_REQUEST, refresh_quality=False)
    run_ingest(without_quality, settings)
    build_gold(lake, table="spot_klines")
    republish(archive_root, "2020-01-03", real_lines(archive_root, "2020-01-03")[:700])
    run_ingest(without_quality, settings)
    result = build_gold(lake, table="spot_klines")
    assert result.rebuilt["bars_1h@0m"] == {"BTCUSDT": [(date(2020, 1, 3), date(2020, 1, 3))]}
    incomplete = sql(root, "SELECT open_time, input_rows FROM gold.bars_1h WHERE NOT complete")
    assert incomplete.rows() == [(datetime(2020, 1, 3, 11, tzinfo=UTC), 40)]
    assert sql(root, "SELECT count(*) FROM gold.bars_1h").item() == 60
    refresh_quality(lake, "spot_klines")
    scored = build_gold(lake, table="spot_klines")
    assert set(scored.rebuilt) == {"daily_summary"}
    scores = sql(root, "SELECT quality_score FROM gold.daily_summary ORDER BY day")
    assert scores["quality_score"].to_list()[:2] == [100.0, 100.0]
    assert scores["quality_score"][2] < 50


def test_offset_bars_span_midnight_and_are_flagged_incomplete(
    tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """1h bars at :30 give 73 bars over three days; the two partial edge bars are flagged."""
    root = str(tmp_path / "lake")
    run_ingest(SPOT_REQUEST, settings_for(root))
    build_gold(LakeRoot.at(root), table="spot_klines", offset="30m")
    bars = sql(root, "SELECT open_time, input_rows, complete FROM gold.bars_1h ORDER BY open_time")
    assert bars.height == 73
    assert bars.row(0) == (datetime(2019, 12, 31, 23, 30, tzinfo=UTC), 30, False)
    assert bars.row(-1) == (datetime(2020, 1, 3, 23, 30, tzinfo=UTC), 30, False)
    assert bars["complete"].sum() == 71


def test_bad_interval_is_refused(tmp_path: Path) -> None:
    """An interval that is not whole minutes, or a non-klines table, is a configuration error."""
    lake = LakeRoot.at(str(tmp_path / "lake"))
    with pytest.raises(ConfigurationError, match="multiple of 1m"):
        build_gold(lake, table="spot_klines", intervals=("90s",))
    with pytest.raises(ConfigurationError, match="klines"):
        build_gold(lake, table="um_funding_rate")


def metrics_csv(day: str) -> str:
    """Return a UM metrics file for a day: 288 five-minute rows with rising open interest."""
    start = datetime.fromisoformat(day)
    lines = ["create_time,symbol,sum_open_interest,sum_open_interest_value,"
             "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
             "count_long_short_ratio,sum_taker_long_short_vol_ratio"]  # fmt: skip
    for n in range(1, 289):
        stamp = (start + timedelta(minutes=5 * n)).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{stamp},BTCUSDT,{1000 + n},{100000 + n},1.5,1.6,1.7,0.9")
    return "\n".join(lines) + "\n"


@pytest.mark.req("R1.1", "R5.2")
def test_perpetual_gets_funding_basis_and_open_interest(
    tmp_path: Path, settings_for: Callable[..., Settings], archive_root: Path
) -> None:
    """UM klines with funding, metrics and a spot twin give all five gold products."""
    day = "2026-04-02"
    um = "data/futures/um/daily/"
    publish(archive_root, f"{um}klines/BTCUSDT/1m/BTCUSDT-1m-{day}.zip", kline_csv(day))
    publish(archive_root, f"{um}metrics/BTCUSDT/BTCUSDT-metrics-{day}.zip", metrics_csv(day))
    spot = kline_csv(day).replace(",10.5,", ",7.5,")
    publish(archive_root, f"data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{day}.zip", spot)
    root = str(tmp_path / "lake")
    settings = settings_for(root)
    when = date.fromisoformat(day)
    for market, data_type, interval in (("um", "klines", "1m"), ("um", "metrics", None),
                                        ("spot", "klines", "1m")):  # fmt: skip
        request = IngestRequest(market, data_type, ("BTCUSDT",), interval, when, when)
        assert run_ingest(request, settings).ok
    funding = IngestRequest("um", "fundingRate", ("BTCUSDT",), start=date(2026, 4, 1),
                            end=date(2026, 4, 30))  # fmt: skip
    assert run_ingest(funding, settings).ok
    result = build_gold(LakeRoot.at(root), table="um_klines")
    assert set(result.rebuilt) == {"bars_1h@0m", "daily_summary", "funding_adjusted_returns",
                                   "basis", "open_interest"}  # fmt: skip
    paid = sql(root, "SELECT sum(funding_rate) FROM silver.um_funding_rate "
               f"WHERE calc_time::DATE = DATE '{day}'").item()  # fmt: skip
    summary = sql(root, "SELECT funding_paid, funding_events FROM gold.daily_summary").row(0)
    assert summary == (pytest.approx(paid), 3)
    adjusted = sql(root, "SELECT daily_return - funding_paid - funding_adjusted_return "
                   "FROM gold.funding_adjusted_returns").item()  # fmt: skip
    assert adjusted == pytest.approx(0.0)
    basis = sql(root, "SELECT count(*) AS n, max(abs(basis)) AS b FROM gold.basis").row(0)
    assert basis == (1440, 0.0)
    oi = sql(root, "SELECT count(*) AS n, count(sum_open_interest) AS m, "
             "min(sum_open_interest) AS first FROM gold.open_interest").row(0)  # fmt: skip
    assert oi == (288, 288, 1001.0)
