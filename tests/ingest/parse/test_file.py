"""The period a file may cover, from its period and date stamp."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crypto_lakehouse.ingest.parse.file import period_bounds


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "stamp", "start", "end"),
    [
        (
            "daily",
            "2024-02-29",
            _utc(2024, 2, 29),
            _utc(2024, 3, 1),
        ),
        (
            "daily",
            "2023-12-31",
            _utc(2023, 12, 31),
            _utc(2024, 1, 1),
        ),
        ("monthly", "2024-02", _utc(2024, 2, 1), _utc(2024, 3, 1)),
        ("monthly", "2023-12", _utc(2023, 12, 1), _utc(2024, 1, 1)),
    ],
)
def test_bounds_run_from_the_period_start_to_the_next_one(
    period: str, stamp: str, start: datetime, end: datetime
) -> None:
    """Days end at the next midnight, months at the next month's first day, in UTC."""
    assert period_bounds(period, stamp) == (start, end)


@pytest.mark.parametrize(
    ("period", "stamp"),
    [
        ("daily", "2024-2-29"),  # not zero-padded
        ("daily", "20240229"),  # ISO basic form, not an archive stamp
        ("daily", "2024-02"),  # a month where a day is due
        ("monthly", "2024-02-01"),  # a day where a month is due
        ("daily", "2023-02-29"),  # no such day
        ("monthly", "2024-13"),
    ],
)
def test_a_stamp_of_another_shape_is_refused(period: str, stamp: str) -> None:
    """Only archive stamps (`YYYY-MM-DD` daily, `YYYY-MM` monthly) of real dates parse."""
    with pytest.raises(ValueError):
        period_bounds(period, stamp)
