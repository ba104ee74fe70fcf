"""Bring a table up to now: archive files first, then REST for the days the archive lacks.

The archive part is `ingest` itself (it records days missing upstream in the manifest). The
REST part then fills, per symbol, (a) the days after the last archive file up to now and
(b) the days the manifest records `missing_upstream`, as provisional rows. A 418 ban stops
the run; a 451 region block leaves an archive-only result that says so; 429s are absorbed
by the client's limiter.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import polars as pl
import structlog

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.exceptions import (
    BannedError,
    ConfigurationError,
    LakehouseError,
    RegionBlockedError,
    SourceError,
)
from crypto_lakehouse.ingest.parse.file import period_bounds
from crypto_lakehouse.ingest.progress import NullProgress
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.write.provisional import Span, TableSpec, read_span
from crypto_lakehouse.ingest.write.supersede import supersession_summary
from crypto_lakehouse.recent.rest_days import (
    METRICS_HISTORY_DAYS,
    FetchedDay,
    RestFill,
    fill_days,
    rest_unsupported_reason,
)
from crypto_lakehouse.recent.results import DayFill, UpdateResult
from crypto_lakehouse.storage.bronze import Manifest
from crypto_lakehouse.storage.format_version import check_format
from crypto_lakehouse.storage.partitions import midnight
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from collections.abc import Iterable

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.runtime.executor import ExecutorKind
    from crypto_lakehouse.recent.results import DayOutcome, GapReason
    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient
    from crypto_lakehouse.sources.binance.rest.client import BinanceRestClient
    from crypto_lakehouse.storage.bronze import ManifestEntry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """What `lakehouse update` was asked for; `end` None means today (UTC)."""

    market: str
    data_type: str
    symbols: tuple[str, ...]
    interval: str | None = None
    start: date | None = None
    end: date | None = None
    executor: ExecutorKind = "threads"


class UpdateProgress(Protocol):
    """Receives progress of both parts of an update (archive files, then REST days)."""

    def plan(self, files: int, total_bytes: int) -> None:
        """Announce the archive files and bytes."""

    def downloaded(self, nbytes: int) -> None:
        """Report archive bytes received."""

    def file_done(self, key: str, outcome: str) -> None:
        """Report an archive file finished."""

    def rest_plan(self, days: int) -> None:
        """Announce how many symbol-days REST will fetch."""

    def rest_day(self, symbol: str, day: date, rows: int) -> None:
        """Report one REST day fetched."""


class NullUpdateProgress(NullProgress):
    """An update progress sink that ignores everything."""

    def rest_plan(self, days: int) -> None:
        """Ignore the REST plan."""

    def rest_day(self, symbol: str, day: date, rows: int) -> None:
        """Ignore a REST day."""


@dataclass(frozen=True, slots=True)
class Gap:
    """One symbol-day the archive does not cover, and why."""

    symbol: str
    day: date
    reason: GapReason


@dataclass(slots=True)
class _RestRun:
    """Mutable state of the REST part (its client is passed beside it: who made it closes it)."""

    lake: LakeRoot
    dataset: Dataset
    request: UpdateRequest
    now: datetime
    progress: UpdateProgress
    result: UpdateResult
    fetched: list[FetchedDay] = field(default_factory=list)


def _symbol_entries(
    dataset: Dataset, symbol: str, interval: str | None, entries: Iterable[ManifestEntry]
) -> list[ManifestEntry]:
    """Return the manifest entries of one symbol (and interval) of a dataset."""
    prefixes = tuple(dataset.archive_prefix(p, symbol, interval) for p in dataset.periods)
    return [e for e in entries if e.table == dataset.table and e.key.startswith(prefixes)]


def plan_gaps(
    entries: Iterable[ManifestEntry],
    symbol: str,
    *,
    start: date | None,
    end: date,
    now: datetime,
) -> list[Gap]:
    """Return the days the archive lacks: missing upstream, or after its last loaded file.

    Args:
        entries: Current manifest entries of this symbol (and interval).
        symbol: The symbol.
        start: First day of interest (None: from the first archive file).
        end: Last day of interest, inclusive.
        now: Days starting at or after `now` are not gaps yet.

    Returns:
        Gaps in day order; days inside a loaded archive file are never gaps.
    """
    loaded = [period_bounds(e.period, e.stamp) for e in entries if e.status == "loaded"]
    missing = {
        date.fromisoformat(e.stamp)
        for e in entries
        if e.status == "missing_upstream" and e.period == "daily"
    }
    gaps: dict[date, GapReason] = dict.fromkeys(missing, "missing_upstream")
    first_after = max((hi for _, hi in loaded), default=None)
    day = first_after.date() if first_after is not None else start
    while day is not None and day <= end:
        gaps.setdefault(day, "after_archive")
        day += timedelta(days=1)

    def covered(day: date) -> bool:
        lo, hi = midnight(day), midnight(day + timedelta(days=1))
        return any(a <= lo and hi <= b for a, b in loaded)

    return [
        Gap(symbol, day, reason)
        for day, reason in sorted(gaps.items())
        if (start is None or day >= start) and day <= end and midnight(day) < now
        and not covered(day)
    ]  # fmt: skip


def _validate(request: UpdateRequest, dataset: Dataset) -> None:
    """Reject requests REST and the archive cannot serve, saying what would work."""
    if not request.symbols:
        raise ConfigurationError("update needs --symbols (e.g. BTCUSDT,ETHUSDT)")
    if dataset.has_interval and not request.interval:
        raise ConfigurationError(f"{dataset.table} needs --interval (e.g. 1m)")
    if request.start and request.end and request.start > request.end:
        raise ConfigurationError("--start must not be after --end")


async def update(
    request: UpdateRequest,
    settings: Settings,
    *,
    progress: UpdateProgress | None = None,
    archive_client: ArchiveClient | None = None,
    rest_client: BinanceRestClient | None = None,
    now: datetime | None = None,
    process_tuning: bool = False,
) -> UpdateResult:
    """Load the archive for a request, then fill the days it lacks from REST, provisionally.

    Args:
        request: Dataset, symbols, interval and day range (`end` None: today).
        settings: Lake root, endpoints, limits.
        progress: Where to report progress; nothing is drawn when omitted.
        archive_client: An archive client to use (the caller keeps ownership).
        rest_client: A REST client to use (the caller keeps ownership); one is made otherwise.
        now: The present (tests); REST days end here at the latest.
        process_tuning: let the archive ingest tune the process's heap (the CLI's opt-in;
            see `ingest.run.ingest`).

    Returns:
        The archive outcome, one DayFill per gap, the REST status and breaker states, and
        the supersessions recorded during the run. A ban, a region block and per-day REST
        failures are statuses on the result, not exceptions.

    Raises:
        ConfigurationError: The request cannot be served.
        LakeFormatError: The lake's format is newer, or it needs `lakehouse migrate`.
        StorageError: The lake could not be written.
    """
    dataset = get_dataset(request.market, request.data_type)
    _validate(request, dataset)
    now = now or datetime.now(UTC)
    end = request.end or now.date()
    sink: UpdateProgress = progress or NullUpdateProgress()
    lake = LakeRoot.at(settings.root)
    await asyncio.to_thread(check_format, lake, write=True)
    started = datetime.now(UTC)
    result = UpdateResult(table=dataset.table)
    archive_request = IngestRequest(
        request.market, request.data_type, request.symbols, request.interval,
        request.start, end, "auto", request.executor,
    )  # fmt: skip
    try:
        result.archive = await ingest(archive_request, settings, progress=sink,
                                      client=archive_client,
                                      process_tuning=process_tuning)  # fmt: skip
    except SourceError as exc:
        result.archive_error = f"archive listing failed: {exc}"
        log.warning("update_archive_failed", table=dataset.table, error=str(exc))
    current = Manifest(lake).current(key_prefix=f"data/{dataset.market_path}/")
    gaps = [
        gap
        for symbol in request.symbols
        for gap in plan_gaps(
            _symbol_entries(dataset, symbol, request.interval, current.values()),
            symbol, start=request.start, end=end, now=now,
        )
    ]  # fmt: skip
    run = _RestRun(lake, dataset, request, now, sink, result)
    await _rest_part(run, gaps, settings, rest_client)
    result.supersessions = supersession_summary(lake, dataset.table, since=started)
    log.info("update_done", table=dataset.table, archive_loaded=result.archive_loaded,
             rest_days=len(result.filled), missing=len(result.still_missing),
             rest_status=result.rest_status)  # fmt: skip
    return result


async def _rest_part(
    run: _RestRun, gaps: list[Gap], settings: Settings, rest_client: BinanceRestClient | None
) -> None:
    """Fill the gaps from REST and record the outcome of every gap on the result.

    A client is made from `settings` when none is given, and closed here after use.
    """
    if not gaps:
        return
    result = run.result
    unsupported = rest_unsupported_reason(run.dataset)
    if unsupported is not None:
        result.rest_status, result.rest_message = "unsupported", unsupported
        result.days = [DayFill(g.symbol, g.day, g.reason, "unsupported", reason=unsupported)
                       for g in gaps]  # fmt: skip
        return
    from crypto_lakehouse.sources.binance.rest.client import BinanceRestClient

    rest = rest_client or BinanceRestClient(settings)
    result.rest_status = "ok"
    try:
        await _fill(run, rest, gaps)
    finally:
        result.days.sort(key=lambda d: (d.symbol, d.day))
        result.breakers = rest.breaker.snapshot()
        if rest_client is None:
            await rest.aclose()


async def _fill(run: _RestRun, rest: BinanceRestClient, gaps: list[Gap]) -> None:
    """Fetch symbol by symbol; stop on a ban or a region block, go on after other errors."""
    todo = _drop_complete(run, gaps)
    run.progress.rest_plan(len(todo))
    fill = RestFill(run.lake, rest, run.dataset, run.request.interval, run.now, run.now)
    symbols = [s for s in run.request.symbols if any(g.symbol == s for g in todo)]
    for index, symbol in enumerate(symbols):
        mine = [g for g in todo if g.symbol == symbol]
        before = len(run.fetched)
        failure = await _fill_symbol(run, fill, symbol, mine)
        fetched = run.fetched[before:]
        _record_fetched(run, mine, fetched)
        if failure is None:
            continue
        outcome, reason, fatal = failure
        done = {f.day for f in fetched}
        left = [g for g in mine if g.day not in done]
        if fatal:
            left += [g for g in todo if g.symbol in symbols[index + 1 :]]
        for gap in left:
            run.result.days.append(DayFill(gap.symbol, gap.day, gap.reason, outcome,
                                           reason=reason))  # fmt: skip
        if fatal:
            return


async def _fill_symbol(
    run: _RestRun, fill: RestFill, symbol: str, gaps: list[Gap]
) -> tuple[DayOutcome, str, bool] | None:
    """Fill one symbol's gaps; return (outcome, reason, stop?) for the days left, if any."""
    try:
        await fill_days(fill, symbol, [g.day for g in gaps], on_day=lambda item: _on_day(run, item))
    except BannedError as exc:
        run.result.rest_status, run.result.rest_message = "banned", str(exc)
        log.error("update_banned", table=run.dataset.table, error=str(exc))
        return "failed", str(exc), True
    except RegionBlockedError as exc:
        message = f"REST unavailable from this region: {exc}"
        run.result.rest_status, run.result.rest_message = "region_blocked", message
        log.warning("update_region_blocked", table=run.dataset.table, error=str(exc))
        return "unavailable", message, True
    except (SourceError, ConfigurationError) as exc:
        run.result.rest_status, run.result.rest_message = "errors", str(exc)
        log.warning("update_rest_failed", table=run.dataset.table, symbol=symbol,
                    error=str(exc))  # fmt: skip
        return "failed", str(exc), False
    return None


def _on_day(run: _RestRun, item: FetchedDay) -> None:
    """Remember a fetched day and advance the progress bar."""
    run.fetched.append(item)
    run.progress.rest_day(item.symbol, item.day, item.rows)


def _record_fetched(run: _RestRun, gaps: list[Gap], fetched: list[FetchedDay]) -> None:
    """Turn the fetched days of one symbol into DayFill outcomes."""
    by_day = {(g.symbol, g.day): g for g in gaps}
    for item in fetched:
        gap = by_day.get((item.symbol, item.day))
        if gap is None:
            continue
        reason = "" if item.rows else "REST returned no rows for this day"
        run.result.days.append(DayFill(item.symbol, item.day, gap.reason, item.status,
                                       item.rows, reason, item.bronze_key))  # fmt: skip


def _drop_complete(run: _RestRun, gaps: list[Gap]) -> list[Gap]:
    """Keep days REST must fetch; record days already complete from an earlier run as kept.

    Metrics days older than REST's 30-day history are recorded as beyond its reach.
    """
    todo: list[Gap] = []
    horizon = run.now - timedelta(days=METRICS_HISTORY_DAYS)
    metrics = run.dataset.data_type == "metrics"
    for gap in gaps:
        if metrics and midnight(gap.day + timedelta(days=1)) <= horizon:
            reason = "REST keeps 30 days of open interest"
            run.result.days.append(
                DayFill(gap.symbol, gap.day, gap.reason, "beyond_history", reason=reason)
            )
        else:
            todo.append(gap)
    complete = _complete_days(run, todo)
    for gap in todo:
        rows = complete.get((gap.symbol, gap.day))
        if rows is not None:
            run.result.days.append(DayFill(gap.symbol, gap.day, gap.reason, "filled", rows,
                                           reason="kept from an earlier run"))  # fmt: skip
    return [g for g in todo if (g.symbol, g.day) not in complete]


def _complete_days(run: _RestRun, gaps: list[Gap]) -> dict[tuple[str, date], int]:
    """Return symbol-days whose provisional rows were fetched after the day had ended."""
    if not gaps:
        return {}
    spec = TableSpec.of(run.dataset)
    spans = [Span(g.symbol, run.request.interval, midnight(g.day),
                  midnight(g.day + timedelta(days=1))) for g in gaps]  # fmt: skip
    try:
        rows = read_span(run.lake, spec, spans, provisional=True,
                         columns=["symbol", spec.time_column, "_ingested_at"])  # fmt: skip
    except LakehouseError:
        return {}
    if rows.is_empty():
        return {}
    days = rows.group_by("symbol", pl.col(spec.time_column).dt.date().alias("day")).agg(
        pl.len().alias("rows"), pl.col("_ingested_at").min().alias("fetched")
    )
    return {
        (r["symbol"], r["day"]): int(r["rows"])
        for r in days.iter_rows(named=True)
        if r["fetched"] >= midnight(r["day"] + timedelta(days=1))
    }
