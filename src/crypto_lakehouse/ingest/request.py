"""What an ingest was asked for, checked, sized to the memory budget, and found upstream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog

from crypto_lakehouse.config import with_tuning
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.ingest.plan import PeriodMode, PlannedFile, select_files
from crypto_lakehouse.ingest.runtime.executor import ExecutorKind, worker_count
from crypto_lakehouse.ingest.runtime.memory import plan_memory

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from datetime import date

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient
    from crypto_lakehouse.sources.binance.archive.listing import ArchiveObject

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """What `lakehouse ingest` was asked for."""

    market: str
    data_type: str
    symbols: tuple[str, ...] = ()
    interval: str | None = None
    start: date | None = None
    end: date | None = None
    period: PeriodMode = "auto"
    executor: ExecutorKind = "threads"
    dask_address: str | None = None
    refresh_quality: bool = True


def validate_request(request: IngestRequest, dataset: Dataset) -> None:
    """Reject requests the archive cannot answer, with a message saying what would work."""
    if dataset.has_interval:
        if not request.interval:
            raise ConfigurationError(f"{dataset.table} needs --interval (e.g. 1m)")
        if request.interval not in dataset.intervals:
            raise ConfigurationError(
                f"interval {request.interval} is not archived for {dataset.table}; "
                f"choose one of {', '.join(dataset.intervals)}"
            )
    if request.period != "auto" and request.period not in dataset.periods:
        raise ConfigurationError(
            f"{dataset.table} is published {' and '.join(dataset.periods)} only"
        )
    if request.start and request.end and request.start > request.end:
        raise ConfigurationError("--start must not be after --end")


def within_memory_budget(settings: Settings, request: IngestRequest) -> Settings:
    """Return settings whose chunk size and worker count fit `memory_budget_mb` on this host.

    Workers on a remote Dask cluster are sized by that cluster, not by this budget.
    """
    if request.dask_address:
        return settings
    workers = worker_count(settings.workers)
    plan = plan_memory(settings.memory_budget_mb, settings.tuning.parse_batch_mb, workers,
                       processes=request.executor != "threads")  # fmt: skip
    if not plan.fits:
        log.warning("memory_budget_too_small", budget_mb=settings.memory_budget_mb,
                    expected_peak_mb=plan.expected_peak_mb)  # fmt: skip
    if (plan.parse_batch_mb, plan.workers) == (settings.tuning.parse_batch_mb, workers):
        return settings
    log.info("memory_budget_applied", budget_mb=settings.memory_budget_mb,
             parse_batch_mb=plan.parse_batch_mb, workers=plan.workers,
             expected_peak_mb=plan.expected_peak_mb)  # fmt: skip
    return with_tuning(settings, parse_batch_mb=plan.parse_batch_mb).model_copy(
        update={"workers": plan.workers}
    )


async def discover(
    dataset: Dataset, request: IngestRequest, archive: ArchiveClient
) -> tuple[list[PlannedFile], list[PlannedFile]]:
    """List symbols and files upstream; return the files covering the request, and those missing."""
    symbols = list(request.symbols)
    if not symbols:
        for period in dataset.periods:
            symbols += await archive.list_symbols(dataset.symbols_prefix(period))
        symbols = sorted(set(symbols))
    periods = [p for p in dataset.periods if request.period in ("auto", p)]
    prefixes = [(symbol, period) for symbol in symbols for period in periods]
    # Every listing at once (the client's semaphore bounds them): one after another, a
    # hundred symbols cost a hundred round trips to the archive before the first download.
    listings = await _all_or_none([
        archive.list_all(dataset.archive_prefix(period, symbol, request.interval))
        for symbol, period in prefixes
    ])  # fmt: skip
    by_symbol: dict[str, dict[str, list[ArchiveObject]]] = {symbol: {} for symbol in symbols}
    for (symbol, period), (objects, _) in zip(prefixes, listings, strict=True):
        by_symbol[symbol][period] = objects
    planned: list[PlannedFile] = []
    missing: list[PlannedFile] = []
    for symbol, listed in by_symbol.items():
        chosen, absent = select_files(
            dataset, symbol, listed, start=request.start, end=request.end, mode=request.period
        )
        planned += chosen
        missing += absent
    return planned, missing


async def _all_or_none(calls: list[Coroutine[object, object, _T]]) -> list[_T]:
    """Await calls concurrently; on the first failure cancel the rest and raise it as is."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
