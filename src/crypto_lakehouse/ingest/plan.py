"""Decide which archive files a run needs and what to do with each: pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal

from crypto_lakehouse.sources.binance.archive.listing import file_stamp

if TYPE_CHECKING:
    from collections.abc import Iterable

    from crypto_lakehouse.datasets import Dataset, Period
    from crypto_lakehouse.sources.binance.archive.listing import ArchiveObject
    from crypto_lakehouse.storage.bronze import ManifestEntry

Action = Literal["download", "load_bronze", "skip"]
PeriodMode = Literal["auto", "daily", "monthly"]


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One archive file the run covers."""

    key: str
    symbol: str
    period: Period
    stamp: str
    listed: ArchiveObject | None


def _days(start: date, end: date) -> list[date]:
    """Return every day from start to end inclusive."""
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def _months(start: date, end: date) -> list[str]:
    """Return every month stamp touched by [start, end]."""
    months = {day.strftime("%Y-%m") for day in _days(start, end)}
    return sorted(months)


def _month_inside(month: str, start: date, end: date) -> bool:
    """Tell whether a whole month lies within [start, end]."""
    first = date.fromisoformat(month + "-01")
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return start <= first and last <= end


def select_files(
    dataset: Dataset,
    symbol: str,
    listed: dict[str, list[ArchiveObject]],
    *,
    start: date | None,
    end: date | None,
    mode: PeriodMode,
) -> tuple[list[PlannedFile], list[PlannedFile]]:
    """Pick the files covering [start, end] and the expected ones missing upstream.

    `auto` takes a monthly file for every whole month that has one and daily files for the
    rest. Only daily gaps are reported missing: monthly files lag by design.

    Returns:
        (files to process, expected files that the listing does not have)
    """
    by_stamp = {
        period: {file_stamp(o.name): o for o in objects if o.key.endswith(".zip")}
        for period, objects in listed.items()
    }
    daily = by_stamp.get("daily", {})
    monthly = by_stamp.get("monthly", {})
    stamps = sorted({*daily, *monthly})
    if not stamps:
        return [], []
    lo = start or date.fromisoformat(_first_day(stamps[0]))
    hi = end or date.fromisoformat(_last_day(stamps[-1]))
    chosen: list[PlannedFile] = []
    missing: list[PlannedFile] = []
    covered_months: set[str] = set()
    use_monthly = mode == "monthly" or (mode == "auto" and "daily" not in dataset.periods)
    for month in _months(lo, hi):
        if month in monthly and (use_monthly or (mode == "auto" and _month_inside(month, lo, hi))):
            chosen.append(PlannedFile(monthly[month].key, symbol, "monthly", month, monthly[month]))
            covered_months.add(month)
    if use_monthly or "daily" not in dataset.periods:
        return chosen, missing
    for day in _days(lo, hi):
        stamp = day.isoformat()
        if stamp[:7] in covered_months:
            continue
        if stamp in daily:
            chosen.append(PlannedFile(daily[stamp].key, symbol, "daily", stamp, daily[stamp]))
        else:
            key = dataset.archive_key("daily", symbol, day, _interval_of(listed))
            missing.append(PlannedFile(key, symbol, "daily", stamp, None))
    return chosen, missing


def _interval_of(listed: dict[str, list[ArchiveObject]]) -> str | None:
    """Return the interval directory of listed kline files, if any."""
    for objects in listed.values():
        for obj in objects:
            parts = obj.key.split("/")
            if "klines" in obj.key.lower() and len(parts) >= 7:
                return parts[-2]
    return None


def _first_day(stamp: str) -> str:
    """Return the first day of a stamp (`2020-01` → `2020-01-01`)."""
    return stamp if stamp.count("-") == 2 else stamp + "-01"


def _last_day(stamp: str) -> str:
    """Return the last day of a stamp (`2020-02` → `2020-02-29`)."""
    if stamp.count("-") == 2:
        return stamp
    first = date.fromisoformat(stamp + "-01")
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (following - timedelta(days=1)).isoformat()


def unchanged(entry: ManifestEntry, listed: ArchiveObject) -> bool:
    """Tell whether the listing still describes the object the manifest recorded."""
    if entry.etag and listed.etag:
        return entry.etag == listed.etag and entry.size == listed.size
    return entry.last_modified == listed.last_modified and entry.size == listed.size


def decide(planned: PlannedFile, entry: ManifestEntry | None) -> Action:
    """Return what to do with a planned file given its manifest state."""
    if entry is None or planned.listed is None or not unchanged(entry, planned.listed):
        return "download"
    if entry.status == "loaded":
        return "skip"
    if entry.status in ("verified", "quarantined") and entry.bronze_path:
        return "load_bronze"
    return "download"


def count_actions(actions: Iterable[Action]) -> dict[str, int]:
    """Return how many files take each action (for logs)."""
    counts: dict[str, int] = {}
    for action in actions:
        counts[action] = counts.get(action, 0) + 1
    return counts
