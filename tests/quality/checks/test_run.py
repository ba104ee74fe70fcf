"""run_checks dispatch, format fingerprints and the package's public surface."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse import quality
from crypto_lakehouse.quality.checks.run import (
    CheckResults,
    fingerprint,
    is_new_fingerprint,
    run_checks,
)

if TYPE_CHECKING:
    import polars as pl

KLINE_HEADER = [
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
]  # fmt: skip
KLINE_DTYPES = ["int64"] + ["float64"] * 5 + ["int64", "float64", "int64"] + ["float64"] * 3


def test_fingerprint_is_stable_and_sensitive() -> None:
    """Equal formats hash equally; an extra column, a unit switch or a header are new."""
    base = fingerprint(None, 12, "ms", KLINE_DTYPES)
    assert base == fingerprint(None, 12, "ms", list(KLINE_DTYPES))
    assert len(base) == 16
    known = {base}
    assert not is_new_fingerprint(known, fingerprint(None, 12, "ms", KLINE_DTYPES))
    extra = fingerprint(None, 13, "ms", [*KLINE_DTYPES, "float64"])
    assert is_new_fingerprint(known, extra)
    assert is_new_fingerprint(known, fingerprint(None, 12, "us", KLINE_DTYPES))
    assert is_new_fingerprint(known, fingerprint(KLINE_HEADER, 12, "ms", KLINE_DTYPES))


def test_fingerprint_rejects_unknown_unit() -> None:
    """An unknown timestamp unit is a programming error, not a new format."""
    with pytest.raises(ValueError, match="timestamp_unit"):
        fingerprint(None, 12, "minutes", KLINE_DTYPES)


def test_run_checks_on_klines(real_klines: pl.DataFrame) -> None:
    """Klines get coverage, invariants and anomalies; no sequence holes."""
    results = run_checks(real_klines, table="spot_klines")
    assert results.completeness.height == 3
    assert results.gaps.is_empty() and results.holes.is_empty() and results.violations.is_empty()
    assert not results.anomalies.is_empty()


def test_run_checks_on_agg_trades(cm_agg_trades: pl.DataFrame) -> None:
    """Trade tables get id completeness and sequence checks instead of slot coverage."""
    results = run_checks(cm_agg_trades, table="cm_agg_trades")
    assert results.completeness.get_column("completeness").to_list() == [1.0]
    assert results.gaps.is_empty() and results.anomalies.is_empty()


def test_concat_stacks_results(real_klines: pl.DataFrame, cm_agg_trades: pl.DataFrame) -> None:
    """Results of two tables stack frame by frame; nothing stacks to empty frames."""
    both = CheckResults.concat(
        [
            run_checks(real_klines, table="spot_klines"),
            run_checks(cm_agg_trades, table="cm_agg_trades"),
        ]
    )
    assert both.completeness.height == 4
    assert CheckResults.concat([]).gaps.is_empty()


def test_public_names_are_sorted_and_importable() -> None:
    """The package's __all__ is sorted and every name resolves."""
    assert quality.__all__ == sorted(quality.__all__)
    for name in quality.__all__:
        assert getattr(quality, name) is not None
