"""Completeness and gap causes on the real 1m days, the real funding month and generated data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.quality.checks.coverage import ListingRange, UpstreamFacts, check_coverage
from crypto_lakehouse.quality.checks.tables import slots_per_day
from tests.quality.conftest import REAL_DAYS, TIME, lineage, read_spot_klines

JAN_2 = date(2020, 1, 2)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Return an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_real_days_are_complete_without_gaps(real_klines: pl.DataFrame) -> None:
    """The three real BTCUSDT 1m days have 1,440 of 1,440 rows and no gap."""
    coverage = check_coverage(real_klines, table="spot_klines")
    assert coverage.gaps.is_empty()
    rows = coverage.completeness.select("day", "expected_rows", "present_rows", "completeness")
    assert rows.rows() == [(day, 1440, 1440, 1.0) for day in REAL_DAYS]


def test_missing_middle_day_is_missing_upstream(real_klines: pl.DataFrame) -> None:
    """With 2020-01-02 absent and recorded missing upstream, one 1,440-minute gap covers it."""
    frame = real_klines.filter(pl.col("open_time").dt.date() != JAN_2)
    facts = UpstreamFacts(missing_upstream=frozenset({("BTCUSDT", JAN_2)}))
    gaps = check_coverage(frame, table="spot_klines", facts=facts).gaps
    assert gaps.height == 1
    gap = gaps.row(0, named=True)
    assert gap["cause"] == "missing_upstream"
    assert gap["missing"] == 1440
    assert gap["day"] == JAN_2
    assert gap["gap_start"] == utc(2020, 1, 2)
    assert gap["gap_end"] == utc(2020, 1, 3)


def test_manifest_from_frame_reads_statuses() -> None:
    """Manifest rows map `verified` to a file and `missing_upstream` to a recorded absence."""
    frame = pl.DataFrame(
        {
            "symbol": ["A", "A", "A"],
            "day": [date(2020, 1, 1), JAN_2, date(2020, 1, 3)],
            "status": ["verified", "missing_upstream", "quarantined"],
        }
    )
    facts = UpstreamFacts.from_frame(frame)
    assert facts.with_file == {("A", date(2020, 1, 1))}
    assert facts.missing_upstream == {("A", JAN_2)}


@pytest.mark.req("R5.3")
def test_day_cut_after_row_700_is_truncated() -> None:
    """A real day keeping only its first 700 rows has a 740-minute truncated gap from 11:40."""
    day = read_spot_klines(date(2020, 1, 1)).head(700)
    coverage = check_coverage(day, table="spot_klines", days=(date(2020, 1, 1), date(2020, 1, 1)))
    gap = coverage.gaps.row(0, named=True)
    assert coverage.gaps.height == 1
    assert (gap["cause"], gap["missing"]) == ("truncated", 740)
    assert gap["gap_start"] == utc(2020, 1, 1, 11, 40)
    assert gap["gap_end"] == utc(2020, 1, 2)
    assert coverage.completeness.row(0, named=True)["present_rows"] == 700


def test_two_rows_removed_in_the_middle_are_in_file() -> None:
    """Dropping rows 600 and 601 of a real day leaves a 2-minute in_file gap at 10:00-10:02."""
    day = read_spot_klines(date(2020, 1, 1))
    holed = day.filter(~pl.int_range(pl.len()).is_in([600, 601]))
    gaps = check_coverage(holed, table="spot_klines").gaps
    assert gaps.select("cause", "missing", "gap_start", "gap_end").rows() == [
        ("in_file", 2, utc(2020, 1, 1, 10, 0), utc(2020, 1, 1, 10, 2))
    ]


def test_verified_file_without_rows_is_truncated(real_klines: pl.DataFrame) -> None:
    """An empty day whose manifest says a verified file exists is `truncated`, not missing."""
    frame = real_klines.filter(pl.col("open_time").dt.date() != JAN_2)
    facts = UpstreamFacts(with_file=frozenset({("BTCUSDT", JAN_2)}))
    gaps = check_coverage(frame, table="spot_klines", facts=facts).gaps
    assert gaps.get_column("cause").to_list() == ["truncated"]


def test_leading_gap_is_in_file() -> None:
    """Rows starting at 00:05 give a 5-minute in_file gap explained as a late start."""
    day = read_spot_klines(date(2020, 1, 1)).slice(5)
    gap = check_coverage(day, table="spot_klines").gaps.row(0, named=True)
    assert (gap["cause"], gap["missing"], gap["gap_start"]) == ("in_file", 5, utc(2020, 1, 1))
    assert "start" in gap["detail"]


def test_listing_range_excuses_days_before_and_after() -> None:
    """Slots before the first and after the last ever row are before_listing / after_delisting."""
    day = read_spot_klines(date(2020, 1, 1)).slice(60, 120)
    listing = {"BTCUSDT": ListingRange(first=utc(2020, 1, 1, 1), last=utc(2020, 1, 1, 2, 59))}
    coverage = check_coverage(day, table="spot_klines", listings=listing)
    causes = coverage.gaps.select("cause", "missing", "gap_start").rows()
    assert causes == [
        ("before_listing", 60, utc(2020, 1, 1)),
        ("after_delisting", 1260, utc(2020, 1, 1, 3)),
    ]
    assert coverage.completeness.row(0, named=True)["excused_rows"] == 1320


def test_days_range_reports_days_without_rows(real_klines: pl.DataFrame) -> None:
    """A requested range beyond the data reports each empty day as a whole-day gap."""
    coverage = check_coverage(
        real_klines, table="spot_klines", days=(date(2019, 12, 31), date(2020, 1, 3))
    )
    gap = coverage.gaps.row(0, named=True)
    assert (gap["day"], gap["missing"], gap["cause"]) == (
        date(2019, 12, 31),
        1440,
        "missing_upstream",
    )
    assert coverage.completeness.height == 4


def test_funding_month_is_complete(um_funding: pl.DataFrame) -> None:
    """The real 8-hourly funding month has 3 of 3 slots on each of its 30 days."""
    completeness = check_coverage(um_funding, table="um_funding_rate").completeness
    assert completeness.height == 30
    assert set(completeness.get_column("expected_rows")) == {3}
    assert completeness.get_column("completeness").min() == 1.0


def test_funding_interval_change_is_not_a_gap() -> None:
    """A day switching from 4h to 8h funding, with calc_time a few ms late, has no gap."""
    times = [utc(2024, 1, 1, h) + timedelta(milliseconds=3) for h in (0, 4, 8, 16)]
    frame = pl.DataFrame(
        {
            "symbol": "X",
            "calc_time": times,
            "funding_interval_hours": [4, 4, 8, 8],
            "funding_rate": 1e-4,
        }
    ).with_columns(pl.col("calc_time").cast(TIME))
    coverage = check_coverage(frame, table="um_funding_rate")
    assert coverage.gaps.is_empty()
    missing_slot = frame.filter(pl.col("funding_interval_hours") == 4).head(1)
    holed = pl.concat([missing_slot, frame.slice(2)])
    gaps = check_coverage(holed, table="um_funding_rate").gaps
    assert gaps.select("missing", "gap_start").rows() == [(1, utc(2024, 1, 1, 4))]


def test_metrics_expect_288_rows() -> None:
    """Metrics rows every 5 minutes expect 288 a day; three missing rows make one gap."""
    times = [
        utc(2024, 3, 1) + timedelta(minutes=5 * i) for i in range(288) if i not in (10, 11, 12)
    ]
    frame = pl.DataFrame({"symbol": "BTCUSDT", "create_time": times, "sum_open_interest": 1.0})
    frame = frame.with_columns(pl.col("create_time").cast(TIME), *lineage("m"))
    coverage = check_coverage(frame, table="um_metrics")
    assert coverage.completeness.select("expected_rows", "present_rows").row(0) == (288, 285)
    assert coverage.gaps.select("missing", "gap_start").row(0) == (3, utc(2024, 3, 1, 0, 50))


@pytest.mark.parametrize(
    ("interval", "expected"), [("1s", 86_400), ("1m", 1440), ("15m", 96), ("4h", 6), ("1d", 1)]
)
def test_slots_per_day(interval: str, expected: int) -> None:
    """Expected rows per day derive from any interval string 1s..1d."""
    assert slots_per_day(interval) == expected


@pytest.mark.parametrize("interval", ["1M", "1mo", "7m", "3d", "x"])
def test_unfixed_intervals_are_rejected(interval: str) -> None:
    """Calendar months and intervals that do not divide a day raise a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        slots_per_day(interval)


def test_trades_have_no_slots(cm_agg_trades: pl.DataFrame) -> None:
    """Asking slot coverage of a trade table points to id completeness instead."""
    with pytest.raises(ConfigurationError, match="id_completeness"):
        check_coverage(cm_agg_trades, table="cm_agg_trades")


def test_multi_day_kline_interval_is_rejected(real_klines: pl.DataFrame) -> None:
    """Weekly klines have no per-day slots; coverage refuses them instead of dividing by zero."""
    with pytest.raises(ConfigurationError, match="1w"):
        check_coverage(real_klines.with_columns(interval=pl.lit("1w")), table="spot_klines")
