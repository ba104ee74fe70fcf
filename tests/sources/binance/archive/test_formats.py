"""CSV parsing by position: headers, epoch units, booleans, text times, located errors."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.exceptions import FormatError
from crypto_lakehouse.sources.binance.archive.formats import parse_chunk, split_header
from tests.servers.synthetic import kline_csv


def test_split_header_detects_futures_header_and_spot_none() -> None:
    """A first field that is not a number is a header; spot rows start with digits."""
    header, rest = split_header(b"open_time,open\n1,2\n")
    assert header == "open_time,open"
    assert rest == b"1,2\n"
    assert split_header(b"1577836800000,7195.24\n") == (None, b"1577836800000,7195.24\n")


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_kline_epochs_land_on_the_same_instant_in_either_unit(unit: str) -> None:
    """ms (before 2025) and µs (spot from 2025) epochs both become the right UTC instant."""
    body = kline_csv("2025-01-01", unit=unit, minutes=3).encode()
    frame, detected = parse_chunk(body, get_dataset("spot", "klines"), time_unit=None,
                                  first_line=1)  # fmt: skip
    assert detected == unit
    assert frame["open_time"][0] == datetime(2025, 1, 1, tzinfo=UTC)
    assert frame["close_time"][0].second == 59
    assert frame.schema["open_time"] == pl.Datetime("us", "UTC")


def test_booleans_accept_python_and_json_spelling() -> None:
    """Spot `True`/`False` and futures `true`/`false` both parse."""
    dataset = get_dataset("spot", "aggTrades")
    body = b"1,0.5,2,1,1,1577836800000,True,False\n2,0.5,2,2,2,1577836800001,false,true\n"
    frame, _ = parse_chunk(body, dataset, time_unit=None, first_line=1)
    assert frame["is_buyer_maker"].to_list() == [True, False]
    assert frame["is_best_match"].to_list() == [False, True]


def test_cm_klines_name_base_volume_by_position() -> None:
    """COIN-M column 7 is base volume whatever the header claims."""
    dataset = get_dataset("cm", "klines")
    names = [c.name for c in dataset.csv_columns]
    assert names[7] == "base_volume"
    assert names[10] == "taker_buy_base_volume"
    assert "quote_volume" not in dataset.silver_schema()


def test_text_datetimes_parse_as_utc() -> None:
    """bookDepth's text timestamp becomes a UTC instant."""
    body = b"2024-01-01 00:00:08,-5,100.5,1000.25\n"
    frame, _ = parse_chunk(body, get_dataset("um", "bookDepth"), time_unit=None, first_line=2)
    assert frame["timestamp"][0] == datetime(2024, 1, 1, 0, 0, 8, tzinfo=UTC)


@pytest.mark.req("R5.3")
def test_malformed_number_names_line_column_and_value() -> None:
    """A bad cell is reported with its line number, column name and value."""
    lines = kline_csv("2020-01-01", minutes=5).splitlines()
    cells = lines[3].split(",")
    cells[2] = "12x.5"
    lines[3] = ",".join(cells)
    with pytest.raises(FormatError) as caught:
        parse_chunk(("\n".join(lines) + "\n").encode(), get_dataset("spot", "klines"),
                    time_unit=None, first_line=1)  # fmt: skip
    assert caught.value.line == 4
    assert caught.value.column == "high"
    assert caught.value.value == "12x.5"


def test_short_line_is_reported() -> None:
    """A line with too few fields is a format error naming the line."""
    body = kline_csv("2020-01-01", minutes=2) + "1577836920000,1,2\n"
    with pytest.raises(FormatError) as caught:
        parse_chunk(body.encode(), get_dataset("spot", "klines"), time_unit=None, first_line=1)
    assert caught.value.line == 3


def test_bad_boolean_is_reported() -> None:
    """A boolean column holding something else names the value."""
    body = b"1,0.5,2,1,1,1577836800000,maybe\n"
    with pytest.raises(FormatError) as caught:
        parse_chunk(body, get_dataset("um", "aggTrades"), time_unit=None, first_line=7)
    assert caught.value.line == 7
    assert caught.value.value == "maybe"
