"""Archive → bronze → silver for one dataset: list, decide, download, verify, parse, commit.

A file flows one way through the stages: plan (`request`, `plan`) → fetch (`fetch`) → store
in bronze (`file_steps.store`, or the batch worker) → parse (`parse`) → write (`write`) →
commit (`commit.Committer`) → refresh (`finish`). Small bar files wait in their own stage
(`small_files.SmallFileBatches`) to be parsed in batches. Downloads run concurrently
(asyncio + aiohttp), parsing runs on an executor (threads, spawned processes or Dask), and
the committer writes silver in batches. Per-file failures become outcomes (`failures`); the
run always continues with the other files.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.datasets import get_dataset
from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.ingest.commit import Committer
from crypto_lakehouse.ingest.failures import record_fetch_failure, record_parse_failure
from crypto_lakehouse.ingest.fetch import (
    bronze_copy,
    can_stream,
    download,
    is_small,
    verified_entry,
)
from crypto_lakehouse.ingest.file_steps import parse_file, store, task_for
from crypto_lakehouse.ingest.finish import clear_staging, compact, refresh_quality
from crypto_lakehouse.ingest.overlap import StreamedParse
from crypto_lakehouse.ingest.plan import decide
from crypto_lakehouse.ingest.progress import NullProgress, ProgressSink
from crypto_lakehouse.ingest.request import (
    IngestRequest,
    discover,
    validate_request,
    within_memory_budget,
)
from crypto_lakehouse.ingest.results import FileOutcome, IngestResult
from crypto_lakehouse.ingest.run_state import HeldFile, IngestRun
from crypto_lakehouse.ingest.runtime.executor import close_owner, make_executor, worker_count
from crypto_lakehouse.ingest.runtime.heap import frozen_heap
from crypto_lakehouse.ingest.small_files import SmallFileBatches, batched, parse_batch
from crypto_lakehouse.ingest.write import staged as silver
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.sources.binance.archive.bulk_fetch import fetch_many
from crypto_lakehouse.sources.binance.archive.client import ArchiveClient, Body, Download
from crypto_lakehouse.storage.bronze import Manifest, ManifestEntry
from crypto_lakehouse.storage.format_version import check_format
from crypto_lakehouse.storage.root import LakeRoot

if TYPE_CHECKING:
    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.ingest.plan import PlannedFile

__all__ = ["IngestRequest", "ingest"]

log = structlog.get_logger(__name__)


async def ingest(
    request: IngestRequest,
    settings: Settings,
    *,
    progress: ProgressSink | None = None,
    client: ArchiveClient | None = None,
    process_tuning: bool = False,
) -> IngestResult:
    """Bring the archive files of a request into bronze and silver.

    The run owns its executor, its threads and its temp folder, and closes them before it
    returns; it changes nothing process-wide unless `process_tuning` asks it to.

    Args:
        request: dataset, symbols, date range and period mode.
        settings: lake root, endpoints, concurrency.
        progress: where to report progress; nothing is drawn when omitted.
        client: an archive client to use (the caller keeps ownership); one is made otherwise.
        process_tuning: freeze the garbage collector's view of the heap for the run and hand
            freed memory back to the system after large files (`runtime.heap`). Process-wide
            changes: for a process that is only this run (the CLI), never for a library call.

    Returns:
        The per-file outcomes. Failures are outcomes, not exceptions: the run goes on.

    Raises:
        ConfigurationError: the request cannot be served.
        SourceError: the listing itself could not be read.
    """
    dataset = get_dataset(request.market, request.data_type)
    validate_request(request, dataset)
    settings = within_memory_budget(settings, request)
    lake = LakeRoot.at(settings.root)
    await asyncio.to_thread(check_format, lake, write=True)  # stamp, or refuse a newer lake
    executor, owner = make_executor(
        request.executor, settings.workers, dask_address=request.dask_address
    )
    workdir = Path(tempfile.mkdtemp(prefix="lakehouse-ingest-"))
    started = datetime.now(UTC)
    remote = request.dask_address is not None
    manifest, sink = Manifest(lake), progress or NullProgress()
    run = IngestRun(
        lake=lake,
        dataset=dataset,
        settings=settings,
        manifest=manifest,
        executor=executor,
        workers=worker_count(settings.workers),
        download_slots=asyncio.Semaphore(settings.download_concurrency),
        progress=sink,
        workdir=workdir,
        started=started,
        commits=Committer(lake, dataset, settings, manifest, sink, IngestResult(dataset.table)),
        stream_capable=request.executor != "dask",
        remote_workers=remote,
        stage_prefix=staging.new_run_prefix(started) if remote else "",
        process_tuning=process_tuning,
    )
    run.batches = SmallFileBatches(
        run.workers, settings, run.pace, partial(parse_batch, run), run.commits
    )
    own_client = client is None
    archive = client or ArchiveClient(settings)
    try:
        with frozen_heap() if process_tuning else contextlib.nullcontext():
            await _run(run, request, archive)
        if settings.tuning.auto_compact and run.result.loaded:
            await compact(run)
        if request.refresh_quality:
            await refresh_quality(run)
    finally:
        if own_client:
            await archive.aclose()
        executor.shutdown(wait=True, cancel_futures=True)
        close_owner(owner)
        shutil.rmtree(workdir, ignore_errors=True)
        if remote:
            await asyncio.to_thread(clear_staging, run)
    return run.result


async def _run(run: IngestRun, request: IngestRequest, archive: ArchiveClient) -> None:
    """List, plan, process every file, then flush the last commit and manifest events."""
    run.commits.prepare_tables()
    try:
        await _run_files(run, request, archive)
    finally:
        await run.commits.tables_prepared()  # never leave the thread behind


async def _run_files(run: IngestRun, request: IngestRequest, archive: ArchiveClient) -> None:
    """Discover the files, process each, then commit what is left."""
    # The manifest is read beside the listing: read after it, on the loop, it held back the
    # first download by 1-9 ms (a fresh process's first Delta read).
    reading = asyncio.ensure_future(asyncio.to_thread(
        run.manifest.current, key_prefix=f"data/{run.dataset.market_path}/"
    ))  # fmt: skip
    try:
        planned, missing = await discover(run.dataset, request, archive)
    except BaseException:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        raise
    current = await reading
    run.plans = {p.key: p for p in (*planned, *missing)}
    for miss in missing:
        run.commits.record(
            FileOutcome(miss.key, "missing_upstream"),
            ManifestEntry(miss.key, run.dataset.table, miss.symbol, miss.period, miss.stamp,
                          "missing_upstream", reason="not in the archive listing"),
        )  # fmt: skip
    actions = [(p, decide(p, current.get(p.key))) for p in planned]
    todo = [(p, a) for p, a in actions if a != "skip"]
    download_bytes = sum(p.listed.size for p, a in todo if p.listed and a == "download")
    run.progress.plan(len(planned), download_bytes)
    for plan, action in actions:
        if action == "skip":
            revision = current[plan.key].revision
            run.commits.record(FileOutcome(plan.key, "skipped_unchanged", revision=revision))
    log.info("ingest_planned", table=run.dataset.table, files=len(planned), todo=len(todo),
             missing=len(missing))  # fmt: skip
    run.batches.downloads_begin(len(todo))
    in_bulk: list[tuple[PlannedFile, ManifestEntry | None]] = []
    tasks: list[asyncio.Task[None]] = []
    for plan, action in todo:
        if action == "download" and is_small(run, plan):
            in_bulk.append((plan, current.get(plan.key)))
        else:
            tasks.append(asyncio.create_task(
                _process(run, archive, plan, action, current.get(plan.key))
            ))  # fmt: skip
    if in_bulk:
        tasks.append(asyncio.create_task(_fetch_small_files(run, archive, in_bulk)))
    try:
        await asyncio.gather(*tasks)
        run.pace.end()
        run.batches.schedule()
        await run.batches.drain()
    finally:
        for task in tasks:
            task.cancel()
        run.batches.cancel()
        await _disarm_flush_timer(run)
    await run.commits.commit(force=True)


def _arm_flush_timer(run: IngestRun) -> None:
    """Make sure what waits for a batch is committed within `commit_interval_seconds`.

    Batches fill by count or size; a file still downloading (a slow mirror, a huge month)
    must not hold back the rows of the files that are done.
    """
    waiting = run.batches.held or run.commits.waiting
    if waiting and (run.flush_timer is None or run.flush_timer.done()):
        run.flush_timer = asyncio.create_task(_flush_later(run))


async def _flush_later(run: IngestRun) -> None:
    """Parse and commit whatever waits once the interval has passed."""
    await asyncio.sleep(run.settings.tuning.commit_interval_seconds)
    log.info("interval_commit", waiting_parse=len(run.batches.held),
             waiting_commit=run.commits.waiting)  # fmt: skip
    run.batches.start(run.settings.tuning.parse_batch_files)
    await run.batches.drain()
    await run.commits.commit(force=True)


async def _disarm_flush_timer(run: IngestRun) -> None:
    """Stop the flush timer; re-raise what a timed flush failed with."""
    timer, run.flush_timer = run.flush_timer, None
    if timer is None:
        return
    if not timer.done():
        timer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await timer


async def _process(
    run: IngestRun,
    archive: ArchiveClient,
    plan: PlannedFile,
    action: str,
    previous: ManifestEntry | None,
) -> None:
    """Fetch (or reuse) one file, parse it on the executor, and queue it for commit."""
    try:
        if action == "download" and can_stream(run, plan, previous):
            await _process_streamed(run, archive, plan, previous)
        else:
            await _fetch_and_parse(run, archive, plan, action, previous)
    finally:
        if run.pace.done(plan.key):
            run.batches.schedule()  # nothing more will arrive: share out what waits
    _arm_flush_timer(run)


async def _fetch_small_files(
    run: IngestRun, archive: ArchiveClient, plans: list[tuple[PlannedFile, ManifestEntry | None]]
) -> None:
    """Fetch the run's small files together (`bulk_fetch`), holding each for its batch parse.

    Each file's outcome is the one `_fetch_and_parse` would give it; only the GETs are made
    together, `download_concurrency` of them at most in flight as on the per-file path. The
    rare body larger than listed is stored and parsed on its own.
    """
    by_key = {plan.key: (plan, previous) for plan, previous in plans}
    landing: set[asyncio.Task[None]] = set()
    fetched = fetch_many(archive, list(by_key), run.download_dir)
    try:
        async for key, got in fetched:
            plan, previous = by_key[key]
            try:
                if isinstance(got, Body):
                    entry = verified_entry(run, plan, previous, got)
                    if batched(run, entry):
                        run.batches.hold(HeldFile(plan, entry, previous, body=got.data))
                    else:
                        landing.add(asyncio.create_task(_land(run, plan, entry, got, previous)))
                elif isinstance(got, LakehouseError):
                    await record_fetch_failure(run, plan, got)
                else:
                    raise got
            finally:
                if run.pace.done(key):
                    run.batches.schedule()  # nothing more will arrive: share out what waits
            _arm_flush_timer(run)
        await asyncio.gather(*landing)
    finally:
        await fetched.aclose()
        for task in landing:
            task.cancel()


async def _fetch_and_parse(
    run: IngestRun,
    archive: ArchiveClient,
    plan: PlannedFile,
    action: str,
    previous: ManifestEntry | None,
) -> None:
    """Fetch (or reuse) one file, then hold it for a batch or parse it on the executor."""
    try:
        if action == "download":
            async with run.download_slots:
                entry, got = await download(run, archive, plan, previous)
        else:
            assert previous is not None
            entry = previous.with_status("verified")
            local = await bronze_copy(run, plan, entry)
    except LakehouseError as exc:
        await record_fetch_failure(run, plan, exc)
        return
    if action == "download":
        await _land(run, plan, entry, got, previous)
    else:
        await _parse_stored(run, plan, entry, local, previous)


async def _land(
    run: IngestRun,
    plan: PlannedFile,
    entry: ManifestEntry,
    got: Download | Body,
    previous: ManifestEntry | None,
) -> None:
    """Hold a verified small body for its batch, or store the file in bronze and parse it."""
    if isinstance(got, Body) and batched(run, entry):
        # Stored in bronze by the batch's worker, just before it parses.
        run.batches.hold(HeldFile(plan, entry, previous, body=got.data))
        return
    try:
        local = await store(run, got, entry.bronze_path)
    except LakehouseError as exc:
        await record_fetch_failure(run, plan, exc)
        return
    await _parse_stored(run, plan, entry, local, previous)


async def _parse_stored(
    run: IngestRun,
    plan: PlannedFile,
    entry: ManifestEntry,
    local: Path,
    previous: ManifestEntry | None,
) -> None:
    """Parse a file that is in bronze: small bar files wait for a batch, others parse now."""
    if batched(run, entry):
        run.batches.hold(HeldFile(plan, entry, previous, local=local))
        return
    run.pace.done(plan.key)
    await parse_file(run, plan, entry, local, previous)


async def _process_streamed(
    run: IngestRun, archive: ArchiveClient, plan: PlannedFile, previous: ManifestEntry | None
) -> None:
    """Download one large tick file while a worker parses it; commit only a verified body."""
    stream = StreamedParse(
        run.executor,
        lambda path, growing: task_for(run, plan, 1, path, growing),
        run.lake.table_uri(silver.SILVER, run.dataset.table),
        run.lake.storage_options,
        stall_seconds=run.settings.http_timeout_seconds * 2,
    )
    try:
        async with run.download_slots:
            entry, got = await download(run, archive, plan, previous, on_body=stream.start)
        local = await store(run, got, entry.bronze_path)
    except LakehouseError as exc:
        await stream.abandon()
        await record_fetch_failure(run, plan, exc)
        return
    except BaseException:
        await asyncio.shield(stream.abandon())
        raise
    try:
        written = await stream.finish(local)
    except LakehouseError as exc:
        record_parse_failure(run, plan, entry, previous, exc)
        return
    if written is None:
        await parse_file(run, plan, entry, local, previous)
        return
    await run.commits.queue([(written.parsed, entry, previous, written)])
