"""The registry covers every archive dataset, and each one parses end to end."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.datasets import REGISTRY, get_dataset, interval_micros
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import publish
from tests.servers.synthetic import sample_csv

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings

EXPECTED = {
    "spot": {"klines", "aggTrades", "trades"},
    "um": {"klines", "aggTrades", "trades", "fundingRate", "bookTicker", "bookDepth", "metrics",
           "liquidationSnapshot", "indexPriceKlines", "markPriceKlines", "premiumIndexKlines"},
    "cm": {"klines", "aggTrades", "trades", "fundingRate", "bookTicker", "bookDepth", "metrics",
           "liquidationSnapshot", "indexPriceKlines", "markPriceKlines", "premiumIndexKlines"},
    "option": {"BVOLIndex", "EOHSummary"},
}  # fmt: skip
SYMBOLS = {"spot": "BTCUSDT", "um": "BTCUSDT", "cm": "BTCUSD_PERP", "option": "BTCBVOLUSDT"}


@pytest.mark.req("R5.2")
def test_registry_has_every_archive_dataset() -> None:
    """Every (market, data type) of the archive has an entry with a key and a time column."""
    found: dict[str, set[str]] = {}
    for market, data_type in REGISTRY:
        found.setdefault(market, set()).add(data_type)
    assert found == EXPECTED
    for dataset in REGISTRY.values():
        assert dataset.time_column in dataset.silver_schema()
        assert set(dataset.primary_key) <= set(dataset.silver_schema())


def test_archive_keys_follow_the_path_template() -> None:
    """Keys match binance-archive.md §1.2 for kline-class and other types."""
    klines = get_dataset("spot", "klines")
    assert klines.archive_key("daily", "BTCUSDT", date(2020, 1, 1), "1m") == (
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip"
    )
    funding = get_dataset("um", "funding_rate")
    assert funding.archive_key("monthly", "BTCUSDT", date(2024, 1, 1)) == (
        "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip"
    )
    assert get_dataset("cm", "liquidationSnapshot").table == "cm_liquidation_snapshot"
    assert get_dataset("option", "BVOLIndex").table == "option_bvol_index"
    assert "1s" not in get_dataset("um", "klines").intervals
    assert interval_micros("1h") == 3_600_000_000


def test_unknown_dataset_lists_the_known_ones() -> None:
    """Asking for a dataset that does not exist names the ones that do."""
    with pytest.raises(KeyError, match="spot klines"):
        get_dataset("spot", "fundingRate")


@pytest.mark.parametrize(("market", "data_type"), sorted(REGISTRY), ids=str)
@pytest.mark.req("R5.2", "R1.1")
def test_every_dataset_ingests_a_sample_file(
    market: str,
    data_type: str,
    tmp_path: Path,
    settings_for: Callable[..., Settings],
    archive_root: Path,
) -> None:
    """A sample file of each dataset loads with its distinct rows and typed silver columns."""
    dataset = get_dataset(market, data_type)
    symbol = SYMBOLS[market] if data_type != "EOHSummary" else "BTCUSDT"
    period = dataset.periods[0]
    day = "2023-06-01"
    interval = "1m" if dataset.has_interval else None
    text, rows = sample_csv(market, data_type, symbol, day)
    key = dataset.archive_key(period, symbol, date.fromisoformat(day), interval)
    publish(archive_root, key, text)
    root = str(tmp_path / "lake")
    request = IngestRequest(market, data_type, (symbol,), interval, date(2023, 6, 1),
                            date(2023, 6, 30 if period == "monthly" else 1))  # fmt: skip
    result = asyncio.run(ingest(request, settings_for(root)))
    assert [f.outcome for f in result.files if f.outcome != "missing_upstream"] == ["loaded"]
    frame = QueryEngine(LakeRoot.at(root)).sql(f"SELECT * FROM silver.{dataset.table}")
    assert frame.height == rows
    assert frame[dataset.time_column].dtype.time_zone == "UTC"  # type: ignore[attr-defined]
    assert frame["symbol"].unique().to_list() == [symbol]
