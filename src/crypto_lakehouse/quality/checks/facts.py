"""Facts from outside the rows that explain gaps: what the manifest knows per (symbol, day).

A monthly archive file stands for every day of its month; a daily file for its day. The
manifest's current status of each file decides the fact:

- `verified` / `loaded`: the day has a file (so empty slots are `truncated`);
- `missing_upstream`: upstream does not publish the file (`missing_upstream`);
- `checksum_mismatch` / `quarantined` / `failed`: a file exists but was not loaded
  (`not_loaded`);
- `superseded`: an older revision; not a fact about the day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

import polars as pl

FILE_STATUSES: Final = frozenset({"verified", "loaded"})
NOT_LOADED_STATUSES: Final = frozenset({"checksum_mismatch", "quarantined", "failed"})
MANIFEST_DAYS_SCHEMA: Final = pl.Schema(
    {"symbol": pl.Utf8(), "day": pl.Date(), "status": pl.Utf8(), "key": pl.Utf8()}
)


@dataclass(slots=True, frozen=True)
class UpstreamFacts:
    """Manifest facts per (symbol, day): which days have a file, which are missing or rejected."""

    with_file: frozenset[tuple[str, date]] = frozenset()
    missing_upstream: frozenset[tuple[str, date]] = frozenset()
    not_loaded: frozenset[tuple[str, date]] = frozenset()

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> UpstreamFacts:
        """Build facts from manifest rows.

        Args:
            frame: Columns `symbol` (Utf8), `day` (Date), `status` (Utf8, the bronze
                manifest status), one row per (file, day) it covers; see the module
                docstring for what each status means. Other statuses are ignored.

        Returns:
            The facts for `check_coverage`.
        """
        with_file: set[tuple[str, date]] = set()
        missing: set[tuple[str, date]] = set()
        rejected: set[tuple[str, date]] = set()
        for symbol, day, status in frame.select("symbol", "day", "status").iter_rows():
            if status in FILE_STATUSES:
                with_file.add((symbol, day))
            elif status == "missing_upstream":
                missing.add((symbol, day))
            elif status in NOT_LOADED_STATUSES:
                rejected.add((symbol, day))
        return cls(
            with_file=frozenset(with_file),
            missing_upstream=frozenset(missing),
            not_loaded=frozenset(rejected),
        )

    def days(self) -> dict[str, set[date]]:
        """Return every (symbol → days) these facts mention."""
        out: dict[str, set[date]] = {}
        for symbol, day in self.with_file | self.missing_upstream | self.not_loaded:
            out.setdefault(symbol, set()).add(day)
        return out


@dataclass(slots=True, frozen=True)
class ListingRange:
    """The first and last ever row time of a symbol; `None` means unknown / still trading."""

    first: datetime | None = None
    last: datetime | None = None


def stamp_days(period: str, stamp: str) -> list[date]:
    """Return the UTC days a file covers.

    Args:
        period: `daily` or `monthly`.
        stamp: The file's date stamp, `2020-01-02` (daily) or `2020-01` (monthly).

    Returns:
        `[2020-01-02]` for a daily stamp, every day of the month for a monthly one.

    Raises:
        ValueError: The stamp does not parse.
    """
    if period == "daily" or stamp.count("-") == 2:
        return [date.fromisoformat(stamp)]
    first = date.fromisoformat(stamp + "-01")
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return [first + timedelta(days=n) for n in range((following - first).days)]


def manifest_days(entries: pl.DataFrame) -> pl.DataFrame:
    """Expand manifest entries into one row per (symbol, day) each file covers.

    Args:
        entries: Current manifest rows with `key`, `symbol`, `period`, `stamp`, `status`.

    Returns:
        `MANIFEST_DAYS_SCHEMA` rows (symbol, day, status, key).
    """
    rows = [
        (symbol, day, status, key)
        for key, symbol, period, stamp, status in entries.select(
            "key", "symbol", "period", "stamp", "status"
        ).iter_rows()
        for day in stamp_days(period, stamp)
    ]
    return pl.DataFrame(rows, schema=MANIFEST_DAYS_SCHEMA, orient="row")
