"""The notebook API `Lake`: klines, SQL, tables and snapshot refresh, on real ingested files."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pytest

import crypto_lakehouse
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.query.api import Lake, split_name, to_utc

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings


def _ingest_klines(settings: Settings, first: date, last: date) -> None:
    """Ingest the real BTCUSDT 1m spot days in [first, last]."""
    request = IngestRequest("spot", "klines", ("BTCUSDT",), "1m", first, last, period="daily")
    assert asyncio.run(ingest(request, settings)).ok


@pytest.fixture
def klines_root(tmp_path: Path, settings_for: Callable[..., Settings]) -> str:
    """Return a lake holding the three real spot 1m days of 2020-01-01..03."""
    root = str(tmp_path / "lake")
    _ingest_klines(settings_for(root), date(2020, 1, 1), date(2020, 1, 3))
    return root


@pytest.mark.req("R2.2")
def test_klines_returns_one_day_half_open_and_ordered(klines_root: str) -> None:
    """A one-day range gives the day's 1,440 bars, first at midnight, ordered, end excluded."""
    with Lake(klines_root) as lake:
        bars = lake.klines("spot", "BTCUSDT", "1m", "2020-01-02", "2020-01-03")
    assert isinstance(bars, pl.DataFrame)
    assert bars.height == 1440
    assert bars["open_time"][0] == datetime(2020, 1, 2, tzinfo=UTC)
    assert bars["open_time"][-1] == datetime(2020, 1, 2, 23, 59, tzinfo=UTC)
    assert bars["open_time"].is_sorted()
    assert set(bars["symbol"]) == {"BTCUSDT"}
    assert set(bars["interval"]) == {"1m"}
    assert bars.columns[:3] == ["symbol", "interval", "open_time"]


def test_klines_bounds_accept_dates_datetimes_and_other_zones(klines_root: str) -> None:
    """Dates, naive datetimes (UTC) and aware datetimes in other zones select the same bars."""
    plus_two = timezone(timedelta(hours=2))
    with Lake(klines_root) as lake:
        by_date = lake.klines("spot", "btcusdt", "1m", date(2020, 1, 1), date(2020, 1, 2))
        by_naive = lake.klines("spot", "BTCUSDT", "1m", datetime(2020, 1, 1), datetime(2020, 1, 2))
        by_zone = lake.klines(
            "spot", "BTCUSDT", "1m",
            datetime(2020, 1, 1, 2, tzinfo=plus_two), datetime(2020, 1, 2, 2, tzinfo=plus_two),
        )  # fmt: skip
        open_ended = lake.klines("spot", "BTCUSDT", "1m", start="2020-01-03")
        everything = lake.klines("spot", "BTCUSDT", "1m")
    assert by_date.height == 1440
    assert by_date.equals(by_naive)
    assert by_date.equals(by_zone)
    assert open_ended.height == 1440
    assert everything.height == 4320


def test_klines_outside_the_data_or_other_interval_is_empty(klines_root: str) -> None:
    """No bar in range (or no such interval) gives an empty frame with the silver columns."""
    with Lake(klines_root) as lake:
        before = lake.klines("spot", "BTCUSDT", "1m", "2019-01-01", "2019-01-02")
        hourly = lake.klines("spot", "BTCUSDT", "1h")
        full = lake.klines("spot", "BTCUSDT", "1m", "2020-01-01", "2020-01-02")
    assert before.height == 0
    assert hourly.height == 0
    assert before.columns == full.columns


def test_klines_as_arrow_and_pandas(klines_root: str) -> None:
    """as_='arrow' returns an Arrow table; as_='pandas' a pandas frame or a clear error."""
    with Lake(klines_root) as lake:
        table = lake.klines("spot", "BTCUSDT", "1m", "2020-01-01", "2020-01-02", as_="arrow")
        assert isinstance(table, pa.Table)
        assert table.num_rows == 1440
        assert table.schema.field("open_time").type == pa.timestamp("us", tz="UTC")
        try:
            import pandas  # noqa: F401
        except ImportError:
            with pytest.raises(ConfigurationError, match="pandas"):
                lake.klines("spot", "BTCUSDT", "1m", "2020-01-01", "2020-01-02", as_="pandas")
        else:
            frame = lake.klines("spot", "BTCUSDT", "1m", "2020-01-01", "2020-01-02", as_="pandas")
            assert len(frame) == 1440


@pytest.mark.req("R2.2")
def test_sql_matches_klines_and_uses_utc(klines_root: str) -> None:
    """Lake.sql aggregates the same rows klines returns, with times rendered in UTC."""
    with Lake(klines_root) as lake:
        frame = lake.sql(
            "SELECT count(*) AS n, min(open_time) AS first, sum(volume) AS volume "
            "FROM silver.spot_klines WHERE open_time >= '2020-01-02' AND open_time < '2020-01-03'"
        )
        bars = lake.klines("spot", "BTCUSDT", "1m", "2020-01-02", "2020-01-03")
    n, first, volume = frame.row(0)
    assert n == 1440
    assert first == datetime(2020, 1, 2, tzinfo=UTC)
    assert volume == pytest.approx(bars["volume"].sum())


@pytest.mark.req("R1.3", "R3.3")
def test_one_engine_sees_new_commits(tmp_path: Path, settings_for: Callable[..., Settings]) -> None:
    """The shared engine re-reads the snapshot after a new commit, and only then."""
    root = str(tmp_path / "lake")
    settings = settings_for(root)
    _ingest_klines(settings, date(2020, 1, 1), date(2020, 1, 2))
    with Lake(root) as lake:
        engine = lake.engine
        assert lake.sql("SELECT count(*) FROM silver.spot_klines").item() == 2880
        version = engine.version("silver", "spot_klines")
        snapshot = engine.dataset("silver", "spot_klines")
        assert engine.dataset("silver", "spot_klines") is snapshot  # unchanged: cached
        _ingest_klines(settings, date(2020, 1, 3), date(2020, 1, 3))
        assert lake.sql("SELECT count(*) FROM silver.spot_klines").item() == 4320
        assert lake.klines("spot", "BTCUSDT", "1m").height == 4320
        assert lake.engine is engine
        assert engine.version("silver", "spot_klines") > version
        assert engine.dataset("silver", "spot_klines") is not snapshot


def test_tables_and_table_list_and_scan(
    klines_root: str, settings_for: Callable[..., Settings]
) -> None:
    """tables() names every table; table() scans one lazily with filters pushed down."""
    request = IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), start=date(2026, 5, 8),
                            end=date(2026, 5, 8))  # fmt: skip
    assert asyncio.run(ingest(request, settings_for(klines_root))).ok
    with Lake(klines_root) as lake:
        silver = [name for name in lake.tables() if name.startswith("silver.")]
        assert silver == ["silver.cm_agg_trades", "silver.spot_klines"]
        assert "gold.quality" in lake.tables()
        lazy = lake.table("spot_klines")
        assert isinstance(lazy, pl.LazyFrame)
        day = lazy.filter(pl.col("open_time") < datetime(2020, 1, 2, tzinfo=UTC)).collect()
        trades = lake.table("silver.cm_agg_trades").select(pl.len()).collect().item()
    assert day.height == 1440
    assert trades == 105_280


def test_missing_table_and_bad_names_raise_clear_errors(klines_root: str) -> None:
    """Unknown tables, layers and markets fail with errors that name the problem."""
    with Lake(klines_root) as lake:
        with pytest.raises(ConfigurationError, match="um_klines does not exist"):
            lake.klines("um", "BTCUSDT", "1m")
        with pytest.raises(ConfigurationError, match="does not exist"):
            lake.sql("SELECT * FROM silver.nope")
        with pytest.raises(ConfigurationError, match="query failed"):
            lake.sql("SELEC 1")
        with pytest.raises(ConfigurationError, match="must be"):
            lake.table("bronze.spot_klines")
        with pytest.raises(KeyError, match="unknown dataset"):
            lake.klines("option", "BTCUSDT", "1m")


def test_constructor_reads_no_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Lake(root)` opens the given root even when LAKEHOUSE_ROOT names another one."""
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path / "env"))
    lake = Lake(tmp_path / "arg")
    assert lake.uri == str(tmp_path / "arg")
    assert repr(lake) == f"Lake({str(tmp_path / 'arg')!r})"
    with pytest.raises(TypeError):
        Lake()  # type: ignore[call-arg]


def test_from_env_reads_the_root_from_the_argument_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Lake.from_env()` takes LAKEHOUSE_ROOT, an explicit root wins, settings work too."""
    from crypto_lakehouse.config import Settings

    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path / "env"))
    assert Lake.from_env().uri == str(tmp_path / "env")
    assert Lake.from_env(tmp_path / "arg").uri == str(tmp_path / "arg")
    settings = Settings(root=str(tmp_path / "settings"))
    assert Lake.from_settings(settings).uri == str(tmp_path / "settings")


def test_storage_options_override_those_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Explicit S3 options win over the AWS_* variables, which still fill the others."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    lake = Lake("s3://bucket/prefix", storage_options={"AWS_ACCESS_KEY_ID": "given"})
    assert lake.uri == "s3://bucket/prefix"
    options = lake.storage_options
    assert options["AWS_ACCESS_KEY_ID"] == "given"
    assert options["AWS_REGION"] == "eu-west-1"


def test_a_lake_of_a_newer_format_is_refused_on_the_first_query(tmp_path: Path) -> None:
    """Opening reads nothing; the first query raises LakeFormatError and writes nothing."""
    from crypto_lakehouse.exceptions import LakeFormatError
    from crypto_lakehouse.storage.format_version import FORMAT_VERSION, read_format, stamp
    from crypto_lakehouse.storage.root import LakeRoot

    root = LakeRoot.at(str(tmp_path / "lake"))
    stamp(root, FORMAT_VERSION + 1)
    with Lake(tmp_path / "lake") as lake:
        with pytest.raises(LakeFormatError, match="upgrade crypto-lakehouse"):
            lake.sql("SELECT 1")
        with pytest.raises(LakeFormatError):
            lake.tables()
    assert read_format(root).format_version == FORMAT_VERSION + 1


def test_an_unversioned_lake_is_read_and_left_unstamped(tmp_path: Path) -> None:
    """A lake written before versioning answers queries and gets no format file from reads."""
    (tmp_path / "lake" / "silver").mkdir(parents=True)
    with Lake(tmp_path / "lake") as lake:
        assert lake.sql("SELECT 7 AS n").to_dicts() == [{"n": 7}]
        assert lake.tables() == []
    assert not (tmp_path / "lake" / "_lakehouse").exists()


def test_helpers_parse_names_and_bounds() -> None:
    """split_name defaults to silver; to_utc turns dates and strings into UTC instants."""
    assert split_name("spot_klines") == ("silver", "spot_klines")
    assert split_name("GOLD.bars") == ("gold", "bars")
    assert to_utc("2024-01-02") == datetime(2024, 1, 2, tzinfo=UTC)
    assert to_utc("2024-01-02T03:00:00Z") == datetime(2024, 1, 2, 3, tzinfo=UTC)
    assert to_utc(date(2024, 1, 2)) == datetime(2024, 1, 2, tzinfo=UTC)


def test_package_exports_lake_with_a_sorted_all() -> None:
    """`from crypto_lakehouse import Lake` works and __all__ is sorted and complete."""
    assert crypto_lakehouse.Lake is Lake
    assert crypto_lakehouse.__all__ == sorted(crypto_lakehouse.__all__)
    for name in crypto_lakehouse.__all__:
        assert getattr(crypto_lakehouse, name) is not None
