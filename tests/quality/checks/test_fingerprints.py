"""Format fingerprints: loaded from the manifest, sniffed from bytes, new ones flagged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.quality.checks.fingerprints import (
    fingerprint_files,
    loaded_format,
    sniff_format,
)
from tests.servers.synthetic import KLINE_HEADER, kline_csv

SPOT = get_dataset("spot", "klines")
UM = get_dataset("um", "klines")


def files(*keys: str) -> pl.DataFrame:
    """Return manifest-like rows for keys seen one minute apart, in order."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "key": list(keys),
            "revision": [1] * len(keys),
            "symbol": ["BTCUSDT"] * len(keys),
            "stamp": [f"2020-01-0{i + 1}" for i in range(len(keys))],
            "status": ["loaded"] * len(keys),
            "seen_at": [start + timedelta(minutes=i) for i in range(len(keys))],
        }
    )


def test_sniffed_layout_matches_the_loaded_one_unless_a_column_is_added() -> None:
    """A known layout sniffs to the loaded fingerprint; an extra column does not."""
    plain = kline_csv("2020-01-01", minutes=3).encode()
    extra = "".join(line + ",0\n" for line in kline_csv("2020-01-01", minutes=3).splitlines())
    assert sniff_format(SPOT, plain).fingerprint == loaded_format(SPOT, "", "ms").fingerprint
    wider = sniff_format(SPOT, extra.encode())
    assert wider.column_count == 13
    assert wider.dtypes[-1] == "unknown"
    assert wider.fingerprint != loaded_format(SPOT, "", "ms").fingerprint


def test_header_and_unit_are_part_of_the_format() -> None:
    """A header row, or µs instead of ms epochs, changes the fingerprint; sniffing agrees."""
    headed = kline_csv("2022-05-02", header=True, minutes=2).encode()
    assert sniff_format(UM, headed).header == KLINE_HEADER.split(",")
    assert sniff_format(UM, headed).fingerprint == loaded_format(UM, KLINE_HEADER, "ms").fingerprint
    assert (
        loaded_format(UM, "", "ms").fingerprint != loaded_format(UM, KLINE_HEADER, "ms").fingerprint
    )
    micros = kline_csv("2025-01-01", unit="us", minutes=2).encode()
    assert sniff_format(SPOT, micros).time_unit == "us"


def test_only_the_first_file_of_a_new_format_is_flagged() -> None:
    """The baseline is the first file; a new format is flagged once, at its first file."""
    formats = {
        "a": loaded_format(UM, "", "ms"),
        "b": loaded_format(UM, KLINE_HEADER, "ms"),
        "c": loaded_format(UM, KLINE_HEADER, "ms"),
        "d": loaded_format(UM, "", "ms"),
    }
    found = fingerprint_files("um_klines", files("a", "b", "c", "d"), formats)
    assert found.get_column("is_new").to_list() == [False, True, False, False]
    assert found.get_column("first_seen")[2] == found.get_column("seen_at")[1]
